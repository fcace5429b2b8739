"""The PostgreSQL store: several `postie serve --store postgres` nodes on one real PostgreSQL
(Debian's package, started by the `pg_server` fixture), the cluster-wide [IN-USE] lock, lost
database connections, deduplicated chunked bodies, a 200 MB message, and the admin commands.

Mail gets in through `postie db import`, which stores through the same MailDelivery code that
LMTP and `postie deliver` use."""

from __future__ import annotations

import hashlib
import os
import random
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path


from conftest import note
from kits.launcher import free_port, wait_port
from kits.mail import canonical_crlf, corpus, CRLF, numbered_message, write_big_message
from kits.pop3 import POP3Raw

ALICE = ("alice", "Alice-pg-S3cret")
BOB = ("bob", "bob-pg-plain")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def import_messages(pgdb, tmp: Path, count: int, user: str) -> list[bytes]:
    """`count` messages written to tmp/m<i>.eml and imported for `user`."""
    msgs = write_messages(tmp, count)
    for i in range(count):
        pgdb.import_message(tmp / f"m{i}.eml", user)
    return msgs


def write_messages(tmp: Path, count: int, seed: int = 2033) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        data = numbered_message(i, rng)
        (tmp / f"m{i}.eml").write_bytes(data)
        out.append(data)
    return out


def nodes(postie, pgdb, count: int, prefix: str = "node", lmtp: bool = False, extra: list[str] | None = None) -> list:
    """`count` servers on the same database; with `lmtp`, each also has an LMTP listener (`.lmtp_port`)."""
    out = []
    for i in range(count):
        args = pgdb.server_args() + (extra or [])
        port = free_port()
        if lmtp:
            args += ["--listen-lmtp", f"127.0.0.1:{port}"]
        node = postie.start(passwd=None, maildir=None, extra=args, name=f"{prefix}{chr(65 + i)}")
        node.lmtp_port = port
        out.append(node)
    return out


def lmtp_client(node, timeout: float = 120) -> smtplib.LMTP:
    wait_port(node.lmtp_port)  # the LMTP port is bound just after the POP3 one answers
    c = smtplib.LMTP("127.0.0.1", node.lmtp_port, timeout=timeout)
    code, _ = c.ehlo()
    assert code == 250
    return c


def lock_holder_pid(pgdb, user: str) -> int | None:
    """The PostgreSQL backend holding the user's maildrop advisory lock (bigint key = mailbox id)."""
    out = pgdb.psql(
        "SELECT l.pid FROM pg_locks l JOIN mailboxes m ON l.locktype = 'advisory' AND l.granted "
        "AND l.objsubid = 1 AND l.classid::bigint = (m.id >> 32) AND l.objid::bigint = (m.id & 4294967295) "
        f"WHERE m.name = '{user}'")
    return int(out) if out else None


def test_migrate_is_versioned_and_idempotent(pgdb):
    assert pgdb.psql("SELECT version FROM schema_version ORDER BY version") == "1\n2\n3\n4\n5\n6\n7"
    r = pgdb.postie("db", "migrate")
    assert "up to date (version 7)" in r.stdout, r.stdout
    assert "***" in r.stdout and pgdb.server.password not in r.stdout + r.stderr  # never the password
    tables = pgdb.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'")
    assert tables == "app_passwords,bodies,body_chunks,kick_requests,kick_results,lockouts,mailboxes,messages,nodes,schema_version,sessions,users"
    assert pgdb.psql("SELECT count(*) FROM pg_proc WHERE proname = 'postie_open_maildrop'") == "1"  # version 7
    # Concurrent migrations of a fresh database serialise on the advisory lock.
    name = pgdb.name + "_fresh"
    url = pgdb.server.create_database(name)
    f = pgdb.url_file.with_name("fresh-url")
    f.write_text(url + "\n")
    procs = [subprocess.Popen([str(pgdb.binary), "db", "migrate", "--database-url-file", str(f)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("migrated" in o for o, _ in outs) == 1, outs
    assert pgdb.server.psql("SELECT count(*) FROM schema_version", database=name) == "7"
    pgdb.server.drop_database(name)


def test_user_commands_and_logins_against_postgres(pgdb, postie):
    pgdb.add_user(*ALICE)  # SHA512-CRYPT
    pgdb.add_user(*BOB, scheme="PLAIN")
    r = pgdb.postie("user", "add", "alice", "--store", "postgres", input="x\n", check=False)
    assert r.returncode == 64 and "already exists" in r.stderr, r
    listing = pgdb.postie("user", "list", "--store", "postgres").stdout.split("\n")
    assert listing[:2] == ["alice\t{SHA512-CRYPT}", "bob\t{PLAIN}"]
    assert ALICE[1] not in pgdb.psql("SELECT password FROM users WHERE name = 'alice'")

    s = pgdb.serve(postie)
    c = POP3Raw(s.host, s.port)
    c.login(*ALICE)
    assert c.stat() == (0, 0)
    c.ok("QUIT")
    c.close()
    c = POP3Raw(s.host, s.port)
    assert c.try_login("alice", "wrong").startswith("-ERR [AUTH]")
    c.close()
    c = POP3Raw(s.host, s.port)
    assert c.try_login("nobody", "wrong").startswith("-ERR [AUTH]")
    c.close()

    pgdb.postie("user", "passwd", "alice", "--store", "postgres", input="new-Pw-2\n")
    c = POP3Raw(s.host, s.port, source="127.0.0.2")
    c.login("alice", "new-Pw-2")
    c.ok("QUIT")
    c.close()
    pgdb.postie("user", "del", "bob", "--store", "postgres")
    r = pgdb.postie("user", "del", "bob", "--store", "postgres", check=False)
    assert r.returncode == 64 and "no user bob" in r.stderr, r
    r = pgdb.postie("user", "add", "x", "--store", "postgres", "--passwd-file", "/tmp/x", input="x\n", check=False)
    assert r.returncode != 0 and "not used with --store postgres" in r.stderr


def test_serve_refuses_bad_database_settings(postie_bin, pgdb, tmp_path):
    def serve(*args: str, env_url: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "POSTIE_DATABASE_URL"}
        if env_url:
            env["POSTIE_DATABASE_URL"] = env_url
        return subprocess.run([str(postie_bin), "serve", "--listen", f"127.0.0.1:{free_port()}", *args],
                              capture_output=True, text=True, timeout=60, env=env)

    r = serve("--store", "postgres")
    assert r.returncode != 0 and "POSTIE_DATABASE_URL" in r.stderr
    r = serve("--store", "postgres", env_url="mysql://x@y/z")
    assert r.returncode != 0 and "postgres://" in r.stderr
    r = serve("--store", "postgres", "--passwd-file", "/etc/passwd", *pgdb.server_args()[2:])
    assert r.returncode != 0 and "not used with store: postgres" in r.stderr
    # A wrong password: refused at startup, and the password is never printed.
    bad = pgdb.url.replace(pgdb.server.password, "not-the-password")
    r = serve("--store", "postgres", env_url=bad)
    assert r.returncode != 0 and "not-the-password" not in r.stderr and "***" in r.stderr, r.stderr
    # A database that was never migrated.
    name = pgdb.name + "_empty"
    url = pgdb.server.create_database(name)
    r = serve("--store", "postgres", env_url=url)
    assert r.returncode != 0 and "postie db migrate" in r.stderr, r.stderr
    env = dict(os.environ, POSTIE_DATABASE_URL=url)
    r = subprocess.run([str(postie_bin), "config", "check", "--store", "postgres", "--listen", "127.0.0.1:1110"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and "postie db migrate" in r.stderr and "***" in r.stdout, r
    assert pgdb.server.password not in r.stdout + r.stderr
    # A URL file anyone can read is worth a warning: it holds the password.
    os.chmod(pgdb.url_file, 0o644)
    r = subprocess.run([str(postie_bin), "config", "check", "--listen", "127.0.0.1:1110", *pgdb.server_args()],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "readable by every user" in r.stderr, r
    pgdb.server.drop_database(name)


def test_three_nodes_share_one_lock_and_one_mailbox(pgdb, postie, tmp_path):
    """Issue 9, (1): [IN-USE] across nodes, SIGKILL frees the lock at once, QUIT's deletions
    are seen everywhere, UIDLs agree on every node and across restarts."""
    pgdb.add_user(*ALICE)
    msgs = import_messages(pgdb, tmp_path, 5, "alice")
    a, b, c = nodes(postie, pgdb, 3)

    sa = POP3Raw(a.host, a.port)
    sa.login(*ALICE)
    uidl_a = sa.listing("UIDL")
    assert len(uidl_a) == 5 and len(set(uidl_a.values())) == 5
    for n, data in enumerate(msgs, 1):
        assert sa.retr(n) == canonical_crlf(data)
    for node in (b, c):
        other = POP3Raw(node.host, node.port)
        r = other.try_login(*ALICE)
        assert r.startswith("-ERR [IN-USE]"), f"{node.name} answered {r!r} while {a.name} holds the maildrop"
        other.close()

    # SIGKILL node A mid-session: its database connection closes with the process, and
    # PostgreSQL drops the advisory lock at once.
    sa.ok("DELE 1")  # never committed: A dies before QUIT
    a.kill()
    t = time.monotonic()
    sb = POP3Raw(b.host, b.port)
    r = sb.try_login(*ALICE)
    waited = time.monotonic() - t
    attempts = 1
    while not r.startswith("+OK") and r.startswith("-ERR [IN-USE]") and time.monotonic() - t < 30:
        sb.close()
        time.sleep(0.1)
        sb = POP3Raw(b.host, b.port)
        r = sb.try_login(*ALICE)
        attempts += 1
        waited = time.monotonic() - t
    note(f"postgres: after SIGKILL of node A, node B logged in after {attempts} attempt(s), {waited * 1000:.0f} ms")
    assert r.startswith("+OK"), f"node B still refused after node A was killed: {r!r}"
    assert sb.listing("UIDL") == uidl_a, "DELE without QUIT on a killed node deleted something"
    sb.ok("DELE 2")
    assert sb.quit().startswith("+OK")
    sb.close()

    sc = POP3Raw(c.host, c.port)
    sc.login(*ALICE)
    uidl_c = sc.listing("UIDL")
    assert sorted(uidl_c.values()) == sorted(v for k, v in uidl_a.items() if k != 2)
    assert sc.retr(1) == canonical_crlf(msgs[0]) and sc.retr(2) == canonical_crlf(msgs[2])
    sc.ok("QUIT")
    sc.close()

    # Restart every node: the same UIDLs everywhere.
    b.stop()
    c.stop()
    again = nodes(postie, pgdb, 3, prefix="restarted")
    for node in again:
        s = POP3Raw(node.host, node.port, source="127.0.0.3")
        s.login(*ALICE)
        assert s.listing("UIDL") == uidl_c, f"{node.name} after restart"
        s.ok("QUIT")
        s.close()
    assert pgdb.psql("SELECT count(*) FROM messages") == "4"


def test_lost_database_connection_ends_the_session_and_deletes_nothing(pgdb, postie, tmp_path):
    pgdb.add_user(*ALICE)
    msgs = import_messages(pgdb, tmp_path, 3, "alice")
    s = pgdb.serve(postie)

    # DELE, then the session's backend is terminated: QUIT must fail and delete nothing.
    c = POP3Raw(s.host, s.port)
    c.login(*ALICE)
    uidl = c.listing("UIDL")
    c.ok("DELE 1")
    c.ok("DELE 3")
    pid = lock_holder_pid(pgdb, "alice")
    assert pid, "no backend holds alice's advisory lock during her session"
    assert pgdb.psql(f"SELECT pg_terminate_backend({pid}, 10000)") == "t"
    r = c.quit()
    assert r.startswith("-ERR [SYS/TEMP]"), r
    c.expect_closed()
    assert pgdb.psql("SELECT count(*) FROM messages") == "3"

    # Terminated before RETR: -ERR [SYS/TEMP] and the session ends.
    c = POP3Raw(s.host, s.port)
    c.login(*ALICE)
    assert c.listing("UIDL") == uidl
    c.ok("DELE 2")
    pgdb.psql(f"SELECT pg_terminate_backend({lock_holder_pid(pgdb, 'alice')}, 10000)")
    r = c.cmd("RETR 1")
    assert r.startswith("-ERR [SYS/TEMP]"), r
    c.expect_closed()

    # The lock went with the connection: a new session gets in, with everything still there.
    c = POP3Raw(s.host, s.port)
    c.login(*ALICE)
    assert c.listing("UIDL") == uidl
    assert c.retr(2) == canonical_crlf(msgs[1])
    c.ok("QUIT")
    c.close()
    assert "maildrop lock lost" in s.log_text()


def test_stat_list_uidl_never_touch_bodies(pgdb, postie, tmp_path):
    pgdb.add_user(*ALICE)
    msgs = import_messages(pgdb, tmp_path, 3, "alice")
    s = pgdb.serve(postie)
    pgdb.psql("ALTER TABLE body_chunks RENAME TO body_chunks_hidden; ALTER TABLE bodies RENAME TO bodies_hidden")
    try:
        c = POP3Raw(s.host, s.port)
        c.login(*ALICE)
        assert c.stat() == (3, sum(len(canonical_crlf(m)) for m in msgs))
        assert sorted(c.listing("LIST").values()) == sorted(str(len(canonical_crlf(m))) for m in msgs)
        assert len(c.listing("UIDL")) == 3
        r = c.cmd("RETR 1")
        assert r.startswith("-ERR [SYS/TEMP]"), r  # bodies unreachable: a clean -ERR, session goes on
        assert c.stat()[0] == 3
        c.ok("QUIT")
        c.close()
    finally:
        pgdb.psql("ALTER TABLE body_chunks_hidden RENAME TO body_chunks; ALTER TABLE bodies_hidden RENAME TO bodies")


def test_identical_bodies_are_stored_once_and_collected(pgdb, postie, tmp_path):
    for u in ("alice", "bob", "carol"):
        pgdb.add_user(u, "pw-" + u)
    data = corpus()["dots"]
    (tmp_path / "dots.eml").write_bytes(data)
    r = pgdb.import_message(tmp_path / "dots.eml", "alice", "bob", "carol")
    assert r.stdout.count("stored") == 3
    pgdb.import_message(tmp_path / "dots.eml", "alice")  # again: a second message, same body
    assert pgdb.psql("SELECT count(*), sum(refcount) FROM bodies") == "1|4"
    assert pgdb.psql("SELECT count(DISTINCT (mailbox_id, uidl)) FROM messages") == "4"
    assert pgdb.psql("SELECT size, header_size FROM messages LIMIT 1") == \
        f"{len(canonical_crlf(data))}|{canonical_crlf(data).index(CRLF + CRLF) + 4}"

    s = pgdb.serve(postie)
    for i, u in enumerate(("alice", "bob", "carol")):
        c = POP3Raw(s.host, s.port, source=f"127.0.1.{i + 1}")
        c.login(u, "pw-" + u)
        n = c.stat()[0]
        for k in range(1, n + 1):
            assert c.retr(k) == canonical_crlf(data)
            c.ok(f"DELE {k}")
        c.ok("QUIT")
        c.close()
        left = pgdb.psql("SELECT coalesce(sum(refcount), 0), count(*) FROM bodies")
        assert left == ("0|0" if u == "carol" else f"{4 - (2 if u == 'alice' else 3)}|1"), (u, left)
    assert pgdb.psql("SELECT count(*) FROM body_chunks") == "0"
    # UIDs are never reused: the next message gets the next number.
    pgdb.import_message(tmp_path / "dots.eml", "alice")
    assert pgdb.psql("SELECT m.uid FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.name = 'alice'") == "3"


def test_unknown_recipient_is_refused_and_others_still_get_the_message(pgdb, tmp_path):
    pgdb.add_user(*ALICE)
    (tmp_path / "m.eml").write_bytes(b"Subject: hi\n\nbody\n")
    r = pgdb.import_message(tmp_path / "m.eml", "nobody", "alice", check=False)
    assert r.returncode == 75, r
    assert "nobody" in r.stderr and "alice: stored" in r.stdout
    assert pgdb.psql("SELECT count(*) FROM messages") == "1"


def test_a_200_mb_message_streams_with_flat_server_memory(pgdb, postie, tmp_path):
    """Issue 9, (2): a 200 MB message delivered over LMTP (smtplib) into PostgreSQL and
    retrieved over POP3, byte-exact, while the server's memory stays flat both ways."""
    pgdb.add_user(*ALICE)
    big = write_big_message(tmp_path / "big.eml", target_size=200 * 1024 * 1024, seed=2033)
    data = big.path.read_bytes().replace(b"\n", b"\r\n")
    big.path.unlink()
    (s,) = nodes(postie, pgdb, 1, lmtp=True, extra=["--lmtp-max-size", str(300 * 1024 * 1024)])
    warm = lmtp_client(s)
    warm.sendmail("sender@example.org", ["alice"], b"Subject: warm-up\r\n\r\nhi\r\n")
    warm.quit()
    base_in = rss_kib(s.pid)
    peak_in = base_in
    done = threading.Event()

    def sample():
        nonlocal peak_in
        while not done.wait(0.2):
            peak_in = max(peak_in, rss_kib(s.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.monotonic()
    c = lmtp_client(s, timeout=600)
    try:
        refused = c.sendmail("sender@example.org", ["alice"], data)
    finally:
        done.set()
        sampler.join()
    stored = time.monotonic() - t
    c.quit()
    del data
    assert refused == {}, refused
    assert pgdb.psql("SELECT max(size) FROM messages") == str(big.crlf_size)
    chunks = pgdb.psql("SELECT count(*) FROM body_chunks")
    grown_in = (peak_in - base_in) // 1024
    # The warm-up message is number 1, the big one number 2.
    warm = POP3Raw(s.host, s.port)
    warm.login(*ALICE)
    warm.ok("TOP 1 0")
    while warm.readline() != b".":
        pass
    warm.ok("QUIT")
    warm.close()
    base = rss_kib(s.pid)

    c = POP3Raw(s.host, s.port, timeout=120)
    c.login(*ALICE)
    assert c.listing("LIST")[2] == str(big.crlf_size)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    t = time.monotonic()
    c.sendline("RETR 2")
    r = c.reply()
    assert r.startswith("+OK"), r
    peak = base

    def sample(k: int) -> None:
        nonlocal peak
        if k % 20000 == 0:
            peak = max(peak, rss_kib(s.pid))
            if k % 200000 == 0:
                time.sleep(0.5)  # a slow reader for a moment: the server must wait, not buffer

    size, digest = c.read_multiline_digest(sample)
    took = time.monotonic() - t
    grown = (peak - base) // 1024
    c.ok("QUIT")
    c.close()
    note(f"postgres: 200 MB message in over LMTP in {stored:.1f} s ({chunks} chunks of 256 KiB), server RSS "
         f"{base_in >> 10} MiB before, peak growth {grown_in} MiB; RETR {size >> 20} MiB in {took:.1f} s, "
         f"server RSS {base >> 10} MiB before, peak growth {grown} MiB")
    assert size == big.crlf_size and digest == big.crlf_sha, "RETR of the 200 MB message is not byte-exact"
    assert grown_in < 64, f"server RSS grew {grown_in} MiB during a 200 MB LMTP delivery: the body is held in memory"
    assert grown < 64, f"server RSS grew {grown} MiB during a 200 MB RETR: the body is not streamed"


def test_parallel_deliveries_while_nodes_delete_lose_and_duplicate_nothing(pgdb, postie, tmp_path):
    """Issue 9, (3): parallel LMTP deliveries (one client per node) into one mailbox while POP3
    sessions on the three nodes retrieve and delete. Every message is taken exactly once, and
    each session's list stays as it was at login."""
    pgdb.add_user(*ALICE)
    msgs = write_messages(tmp_path, 30, seed=3)
    by_hash = {hashlib.sha256(canonical_crlf(m)).hexdigest(): i for i, m in enumerate(msgs)}
    servers = nodes(postie, pgdb, 3, lmtp=True)
    errors: list[str] = []

    def deliver(node, batch: list[bytes]) -> None:
        try:
            c = lmtp_client(node)
            for m in batch:
                refused = c.sendmail("sender@example.org", ["alice"], m.replace(b"\n", b"\r\n"))
                if refused:
                    errors.append(f"{node.name}: {refused}")
            c.quit()
        except Exception as e:  # reported below, not lost in the thread
            errors.append(f"{node.name}: {e!r}")

    deliverers = [threading.Thread(target=deliver, args=(servers[k], msgs[k::3])) for k in range(3)]
    for t in deliverers:
        t.start()

    taken: list[int] = []
    sessions = 0
    in_use = 0
    done = False
    k = 0
    while not done:
        done = not any(t.is_alive() for t in deliverers)  # one more round after the last delivery
        node = servers[k % 3]
        k += 1
        c = POP3Raw(node.host, node.port, source=f"127.0.2.{k % 200 + 1}")
        r = c.try_login(*ALICE)
        if r.startswith("-ERR [IN-USE]"):
            in_use += 1
            c.close()
            done = False
            assert in_use < 1000, "the mailbox stayed locked"
            time.sleep(0.05)
            continue
        assert r.startswith("+OK"), r
        sessions += 1
        count, size = c.stat()
        uidl = c.listing("UIDL")
        for n in sorted(uidl):
            body = c.retr(n)
            taken.append(by_hash[hashlib.sha256(body).hexdigest()])
            c.ok(f"DELE {n}")
        c.ok("RSET")
        assert c.stat() == (count, size), "the session's list changed after login"
        for n in sorted(uidl):
            c.ok(f"DELE {n}")
        assert c.quit().startswith("+OK")
        c.close()
        if sessions > 500:
            break
    for t in deliverers:
        t.join()
    assert not errors, errors
    assert sorted(taken) == list(range(30)), (
        f"lost {sorted(set(range(30)) - set(taken))}, duplicated {sorted(i for i in set(taken) if taken.count(i) > 1)}")
    assert pgdb.psql("SELECT count(*) FROM messages") == "0"
    assert pgdb.psql("SELECT count(*) FROM bodies") == "0"
    note(f"postgres: 30 parallel LMTP deliveries on 3 nodes while {sessions} POP3 sessions took and deleted them "
         f"({in_use} logins answered [IN-USE])")


def test_session_connections_carry_tcp_keepalives(pgdb, postie):
    """The lock connection has SO_KEEPALIVE with the configured idle time (seen with ss), so a
    dead database host is noticed in bounded time."""
    pgdb.add_user(*ALICE)
    s = pgdb.serve(postie, "--database-keepalive", "7,3,2")
    c = POP3Raw(s.host, s.port)
    c.login(*ALICE)
    out = subprocess.run(["ss", "-tnoHp", "state", "established", f"( dport = :{pgdb.server.port} )"],
                         capture_output=True, text=True, check=True).stdout
    mine = [l for l in out.splitlines() if f"pid={s.pid}," in l]
    assert mine, f"no connection of pid {s.pid} to the database in:\n{out}"
    timers = [l[l.index("timer:(keepalive,"):].split(",")[1] for l in mine if "timer:(keepalive," in l]
    assert timers, f"no keepalive timer on the session's database connection:\n{out}"
    # e.g. "6.9sec" or "7sec": counting down from TCP_KEEPIDLE, never the kernel's 7200 s default
    assert all(float(t.rstrip("sec").replace("ms", "")) <= 7 for t in timers if t.endswith("sec")), timers
    c.ok("QUIT")
    c.close()


def test_an_unreachable_database_gives_sys_temp(pgdb, postie, tmp_path):
    """Logins while the database is gone are answered -ERR [SYS/TEMP], and the server stays up."""
    pgdb.add_user(*ALICE)
    (tmp_path / "m.eml").write_bytes(b"Subject: hi\n\nbody\n")
    pgdb.import_message(tmp_path / "m.eml", "alice")
    s = pgdb.serve(postie, "--database-connect-timeout", "3")
    c = POP3Raw(s.host, s.port)
    c.login(*ALICE)
    c.ok("QUIT")
    c.close()
    pgdb.server.drop_database(pgdb.name)  # WITH (FORCE): every connection to it ends too
    c = POP3Raw(s.host, s.port, timeout=60)
    r = c.try_login(*ALICE)
    assert r.startswith("-ERR [SYS/TEMP]"), r
    assert c.quit().startswith("+OK"), "the session should go on in AUTHORIZATION"
    c.close()
    assert s.alive()
    assert pgdb.server.password not in s.log_text()


def test_expire_records_first_retrievals_and_deletes_after_the_policy(pgdb, postie, tmp_path):
    """RFC 2449 EXPIRE with a per-user policy (extra field expire=1): RETR is recorded at QUIT,
    and a message retrieved more than a day ago is gone at the next login."""
    pgdb.add_user(*ALICE, extra=["--extra", "expire=1"])
    msgs = import_messages(pgdb, tmp_path, 2, "alice")
    s = pgdb.serve(postie)
    c = POP3Raw(s.host, s.port)
    c.login(*ALICE)
    capa = c.multi("CAPA")[1]
    assert b"EXPIRE 1" in capa, capa
    c.retr(1)
    c.ok("QUIT")
    c.close()
    assert pgdb.psql("SELECT uid, retrieved_at IS NOT NULL FROM messages ORDER BY uid") == "1|t\n2|f"
    pgdb.psql("UPDATE messages SET retrieved_at = now() - interval '25 hours' WHERE uid = 1")
    c = POP3Raw(s.host, s.port)
    c.login(*ALICE)
    assert c.stat() == (1, len(canonical_crlf(msgs[1])))
    c.ok("QUIT")
    c.close()
    assert pgdb.psql("SELECT count(*) FROM bodies") == "1"


def test_lmtp_into_postgres_one_reply_per_recipient_readable_on_every_node(pgdb, postie):
    """Issue 9, (2): smtplib.LMTP delivers one message to several recipients on node A: one
    reply per accepted recipient, 550 for an unknown one, the body stored once, and every node
    serves each copy byte-exact."""
    users = {"alice": "pw-a", "bob": "pw-b", "carol@example.org": "pw-c"}
    for u, p in users.items():
        pgdb.add_user(u, p)
    a, b, c = nodes(postie, pgdb, 3, lmtp=True)
    msg = b"From: sender@example.org\r\nSubject: to three\r\n\r\n.dot line\r\nbare LF\nend\r\n"
    stored = msg.replace(b"bare LF\n", b"bare LF\r\n")
    l = lmtp_client(a)
    assert l.mail("sender@example.org")[0] == 250
    assert l.rcpt("alice")[0] == 250
    code, text = l.rcpt("nobody")
    assert code == 550 and b"5.1.1" in text, (code, text)
    assert l.rcpt("bob")[0] == 250
    assert l.rcpt("carol@example.org")[0] == 250
    replies = [l.data(msg)] + [l.getreply() for _ in range(2)]
    assert [r[0] for r in replies] == [250, 250, 250], replies
    l.quit()
    assert pgdb.psql("SELECT count(*), sum(refcount) FROM bodies") == "1|3"
    for k, node in enumerate((a, b, c)):
        for u, p in users.items():
            s = POP3Raw(node.host, node.port, source=f"127.0.3.{k + 1}")
            s.login(u, p)
            assert s.retr(1) == stored, f"{u} on {node.name}"
            s.ok("QUIT")
            s.close()


def test_postie_deliver_into_postgres(pgdb, postie_bin, tmp_path):
    """`postie deliver --store postgres`: sysexits codes, and the message stored."""
    pgdb.add_user(*ALICE)

    def deliver(user: str, data: bytes, *args: str, env_url: bool = False) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "POSTIE_DATABASE_URL"}
        if env_url:
            env["POSTIE_DATABASE_URL"] = pgdb.url
        return subprocess.run([str(postie_bin), "deliver", "--user", user, "--store", "postgres", *args],
                              input=data, capture_output=True, timeout=60, env=env)

    r = deliver("alice", b"From sender@example.org Mon Jan  1 00:00:00 2024\nSubject: piped\n\nbody\n", env_url=True)
    assert r.returncode == 0, r
    r = deliver("nobody", b"Subject: x\n\ny\n", "--database-url-file", str(pgdb.url_file))
    assert r.returncode == 67, r
    r = deliver("alice", b"Subject: x\n\ny\n")
    assert r.returncode == 78 and b"POSTIE_DATABASE_URL" in r.stderr, r
    r = deliver("alice", b"Subject: x\n\ny\n", "--database-url-file", str(pgdb.url_file), "--maildir", "/tmp/%u")
    assert r.returncode == 64, r
    piped = b"Subject: piped\r\n\r\nbody\r\n"  # the mbox From line dropped, line ends CRLF
    assert pgdb.psql("SELECT count(*), max(size) FROM messages") == f"1|{len(piped)}"
