"""Fixtures for the Postie interop suite.

The suite does not build anything: it runs `$POSTIE_BIN` (default
`<repo>/.build/debug/postie`) and fails, never skips, when it is missing.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kits import pg  # noqa: E402
from kits.dovecot import remove, start_dovecot  # noqa: E402
from kits.launcher import PostieServer, ServedBy, ServerFactory, free_port  # noqa: E402
from kits.report import NOTES, note  # noqa: E402
from kits.tls import make_pki  # noqa: E402
from kits.mail import ALICE, BOB, Maildir, PasswdFile, make_passwd, write_big_message  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[2]

def pytest_terminal_summary(terminalreporter):
    if NOTES:
        terminalreporter.section("postie interop notes")
        for n in NOTES:
            terminalreporter.write_line(n)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for s in getattr(item, "_postie_servers", []):
            rep.sections.append((f"postie log ({s.name}, {s.log_path})", s.log_tail(60) or "<empty>"))
        for d in getattr(item, "_dovecot_servers", []):
            rep.sections.append((f"dovecot log ({d.log_path})", d.output_tail(60) or "<empty>"))


@pytest.fixture(scope="session")
def postie_bin() -> Path:
    p = Path(os.environ.get("POSTIE_BIN", REPO / ".build" / "debug" / "postie"))
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"postie binary not found at {p}: run `swift build` first or set POSTIE_BIN", pytrace=False)
    return p


@pytest.fixture(scope="session", autouse=True)
def required_tools():
    missing = [t for t in ("curl", "fetchmail", "openssl") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"required tools missing: {', '.join(missing)} (scripts/test installs them)", pytrace=False)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The test CA and its server certificates (see kits.tls.make_pki), made once per run."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def doveadm() -> str:
    """The path of `doveadm` (Debian's dovecot-core)."""
    path = shutil.which("doveadm")
    if path is None:
        pytest.fail("doveadm is missing (Debian package dovecot-core; scripts/test must install it)", pytrace=False)
    return path


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def postie(postie_bin, tmp_path, request):
    f = ServerFactory(postie_bin, tmp_path, request.node, note=note)
    yield f
    f.stop_all()


@dataclass
class Env(ServedBy):
    """A running server with users alice (SHA512-CRYPT) and bob (PLAIN)."""

    tmp: Path
    passwd: PasswdFile
    template: str
    server: PostieServer
    factory: ServerFactory
    users: dict[str, str] = field(default_factory=dict)

    def maildir(self, user: str) -> Maildir:
        return Maildir(Path(self.template.replace("%u", user)))


@pytest.fixture
def env_factory(postie, tmp_path):
    """Makes an Env; call it with extra server args (e.g. ['--idle-timeout', '2'])."""

    def make(extra: list[str] | None = None, start: bool = True, prefill=None) -> Env:
        pw = make_passwd(tmp_path)
        template = str(tmp_path / "mail" / "%u")
        e = Env(tmp_path, pw, template, None, postie, users={ALICE[0]: ALICE[1], BOB[0]: BOB[1]})
        if prefill:
            prefill(e)
        s = postie.make(passwd=pw.path, maildir=template, extra=extra or [])
        e.server = s
        if start:
            s.start()
        return e

    return make


@pytest.fixture
def env(env_factory) -> Env:
    return env_factory()


@pytest.fixture
def dovecot(tmp_path, request):
    """Starts Dovecot (see kits.dovecot.start_dovecot); every instance is stopped and removed at teardown."""

    started = []
    request.node._dovecot_servers = started

    def make(users: dict[str, str], **kw):
        d = start_dovecot(tmp_path, users, **kw)
        started.append(d)
        return d

    yield make
    for d in started:
        remove(d)


@pytest.fixture(scope="session")
def big_message(tmp_path_factory):
    """A >100 MB message file, written once per run, shared through hard links."""
    d = tmp_path_factory.mktemp("big")
    return write_big_message(d / "big.eml")


# --------------------------------------------------------------------------
# PostgreSQL (test_postgres.py): one server per run, one database per test
# --------------------------------------------------------------------------


_pg_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL (Debian's package) on 127.0.0.1 and a free port, for the whole run."""
    try:
        server = pg.start()
    except FileNotFoundError as e:
        pytest.fail(f"{e}", pytrace=False)
    yield server
    server.stop()


@dataclass
class PgDatabase:
    """A fresh, migrated database with its URL in a 0600 file, and `postie` helpers."""

    server: pg.PostgresServer
    name: str
    url: str
    url_file: Path
    binary: Path

    def psql(self, sql: str, check: bool = True) -> str:
        return self.server.psql(sql, database=self.name, check=check)

    def postie(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.binary), *args, "--database-url-file", str(self.url_file)],
                           input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"postie {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def add_user(self, name: str, password: str, scheme: str = "SHA512-CRYPT", extra: list[str] | None = None) -> None:
        self.postie("user", "add", name, "--store", "postgres", "--scheme", scheme, *(extra or []), input=password + "\n")

    def import_message(self, path: Path, *users: str, check: bool = True) -> subprocess.CompletedProcess:
        args = ["db", "import"]
        for u in users:
            args += ["--user", u]
        return self.postie(*args, str(path), check=check)

    def server_args(self) -> list[str]:
        return ["--store", "postgres", "--database-url-file", str(self.url_file)]

    def serve(self, factory: ServerFactory, *extra: str, name: str = "pg") -> PostieServer:
        """`postie serve --store postgres` on this database (no passwd-file, no Maildir)."""
        return factory.start(passwd=None, maildir=None, extra=self.server_args() + list(extra), name=name)


@pytest.fixture
def pgdb(pg_server, postie_bin, tmp_path):
    name = f"t{next(_pg_counter)}_{os.getpid()}"
    url = pg_server.create_database(name)
    url_file = tmp_path / "database-url"
    url_file.write_text("# test database\n" + url + "\n")
    os.chmod(url_file, 0o600)
    db = PgDatabase(pg_server, name, url, url_file, postie_bin)
    db.postie("db", "migrate")
    yield db
    pg_server.drop_database(name)
