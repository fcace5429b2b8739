"""`postie admin who` and `kick` with `--store postgres`: on one node the session registry is the
server's, whatever the store; a kicked session's DELEs are not applied in the database either.
With two nodes on one database, `who` and `kick` on node A reach a session on node B through the
tables `nodes`, `sessions` and `kick_requests` (docs/admin.md, Several nodes)."""

from __future__ import annotations

import json
import poplib
import socket
import time

from conftest import note
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


def wait_for(what: str, probe, timeout: float = 15.0):
    """Polls `probe` until it returns something true (the nodes sync every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.2)


def test_who_and_kick_reach_a_session_on_another_node(pgdb, postie, tmp_path):  # noqa: F811
    pgdb.add_user("carol", "carol-pw", scheme="PLAIN")
    for i in range(2):
        message = tmp_path / f"m{i}.eml"
        message.write_bytes(f"Subject: node {i + 1}\r\n\r\nbody\r\n".encode())
        pgdb.import_message(message, "carol")
    a = pgdb.serve(postie, name="node-a")
    b = pgdb.serve(postie, name="node-b")
    b_node = f"{socket.gethostname()}:{b.pid}"

    client = poplib.POP3("127.0.0.1", b.port, timeout=15)
    client.user("carol")
    client.pass_("carol-pw")
    client.dele(1)

    def listed():
        sessions = json.loads(admin(pgdb.binary, a, "who", "--json").stdout)["sessions"]
        return [s for s in sessions if s["user"] == "carol"]
    [session] = wait_for("node A never listed node B's session", listed)
    assert (session["address"], session["state"], session["node"]) == ("127.0.0.1", "TRANSACTION", b_node), session
    table = admin(pgdb.binary, a, "who").stdout
    assert table.splitlines()[0].split()[-1] == "NODE" and b_node in table, table

    kicked = admin(pgdb.binary, a, "kick", "carol")
    if f"no answer in time from node {b_node}" in kicked.stdout:
        # Node B syncs every second; on a loaded machine it may miss the 3 s the command waits.
        # Its sessions still end (it answers every request made since it started): the log
        # line and the closed client below show that.
        note(f"cross-node kick: node B answered after the command's 3 s wait: {kicked.stdout!r}")
    else:
        assert kicked.returncode == 0, kicked
        assert "kicked 1 session" in kicked.stdout and f"1 on node {b_node}" in kicked.stdout, kicked.stdout
    try:
        line = client.file.readline()
    except OSError:
        line = b""
    assert line == b"" or line.startswith(b"-ERR [SYS/TEMP]"), line
    client.close()
    b.wait_log(r"Kicked by the administrator")

    # Nothing was deleted: the kicked session never reached UPDATE.
    again = poplib.POP3("127.0.0.1", a.port, timeout=15)
    again.user("carol")
    again.pass_("carol-pw")
    assert again.stat()[0] == 2
    again.quit()

    # Nobody called dave is logged in anywhere: exit status 1, and node B was asked.
    nobody = admin(pgdb.binary, a, "kick", "dave")
    assert nobody.returncode == 1 and "kicked 0 sessions" in nobody.stdout, nobody

    # A node stopping gracefully withdraws its rows.
    b.stop()
    assert pgdb.psql(f"SELECT count(*) FROM nodes WHERE node = '{b_node}'") == "0"
