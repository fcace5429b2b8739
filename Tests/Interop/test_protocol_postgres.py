"""Issue 9, (4): the server-core protocol tests of test_protocol.py and
test_server_lifecycle.py, unchanged, against `postie serve --store postgres`. Only the `env` fixture differs: users are added with
`postie user add --store postgres` and mail arrives through `postie db import` (the store's
MailDelivery). Tests about Maildir or passwd-file internals stay in test_maildir.py and
test_passwd_file.py."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import PgDatabase
from kits.launcher import PostieServer, ServedBy, ServerFactory
from kits.mail import ALICE, BOB

# The protocol tests, imported so that pytest runs them here with this module's `env`.
from test_protocol import (  # noqa: F401
    test_bad_message_numbers,
    test_capa,
    test_commands_are_case_insensitive,
    test_dele_then_retr_is_err,
    test_dropped_connection_after_dele_deletes_nothing,
    test_greeting_and_quit_in_authorization_state,
    test_long_lines,
    test_no_final_newline_gets_exactly_one_crlf_appended,
    test_pipelined_commands_are_answered_in_order,
    test_rset_unmarks,
    test_too_many_bad_commands_end_the_session,
    test_top_arguments,
    test_top_on_corpus_edge_messages,
    test_unknown_user_and_wrong_password_look_identical,
    test_unsupported_commands_do_not_break_the_session,
    test_wrong_state_commands,
)
from test_server_lifecycle import (  # noqa: F401
    test_log_lines_and_no_secrets,
    test_restart_on_the_same_port,
    test_sigterm_with_open_sessions_exits_promptly,
)

_names = itertools.count(1)


class PgMailbox:
    """What the protocol tests need of a mailbox: deliver(bytes), through MailDelivery."""

    def __init__(self, db: PgDatabase, user: str, spool: Path):
        self.db, self.user, self.spool = db, user, spool

    def deliver(self, data: bytes, name: str | None = None) -> str:
        name = name or f"msg{next(_names)}.eml"
        path = self.spool / name
        path.write_bytes(data)
        self.db.import_message(path, self.user)
        return name


@dataclass
class PgEnv(ServedBy):
    db: PgDatabase
    server: PostieServer
    factory: ServerFactory
    spool: Path
    users: dict[str, str] = field(default_factory=dict)

    def maildir(self, user: str) -> PgMailbox:
        return PgMailbox(self.db, user, self.spool)


@pytest.fixture
def env(pgdb, postie, tmp_path) -> PgEnv:
    pgdb.add_user(*ALICE, scheme="SHA512-CRYPT")
    pgdb.add_user(*BOB, scheme="PLAIN")
    spool = tmp_path / "spool"
    spool.mkdir()
    server = pgdb.serve(postie)
    return PgEnv(pgdb, server, postie, spool, users={ALICE[0]: ALICE[1], BOB[0]: BOB[1]})
