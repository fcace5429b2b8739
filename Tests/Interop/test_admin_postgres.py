"""`postie admin who` and `kick` with `--store postgres` (one node): the session registry is the
server's, whatever the store; a kicked session's DELEs are not applied in the database either.
(Sessions on other nodes are not reached yet: docs/admin.md, Limits.)"""

from __future__ import annotations

import json
import poplib

from kits.launcher import admin
from kits.mail import ALICE
from test_protocol_postgres import env  # noqa: F401  (the PostgreSQL `env` fixture)


def test_who_and_kick_with_the_postgres_store(env, postie_bin):  # noqa: F811
    box = env.maildir("alice")
    for i in range(2):
        box.deliver(f"Subject: pg {i + 1}\r\n\r\nbody\r\n".encode())
    client = poplib.POP3(env.host, env.port, timeout=15)
    client.user(ALICE[0])
    client.pass_(ALICE[1])
    client.dele(1)

    [session] = json.loads(admin(postie_bin, env.server, "who", "--json").stdout)["sessions"]
    assert (session["user"], session["address"], session["state"]) == ("alice", "127.0.0.1", "TRANSACTION")

    kicked = admin(postie_bin, env.server, "kick", "alice")
    assert kicked.returncode == 0 and "kicked 1 session" in kicked.stdout, kicked
    assert client.file.readline().startswith(b"-ERR [SYS/TEMP]")
    client.close()
    env.server.wait_log(r"Kicked by the administrator")

    # The maildrop lock was released and nothing was deleted.
    again = poplib.POP3(env.host, env.port, timeout=15)
    again.user(ALICE[0])
    again.pass_(ALICE[1])
    assert again.stat()[0] == 2
    again.quit()
