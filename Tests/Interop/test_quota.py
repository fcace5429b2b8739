"""Quotas (Dovecot's quota_rule): LMTP answers 552 5.2.2 per recipient over quota and stores
nothing for it, or 452 4.2.2 with --quota-full-tempfail; POP3 is never blocked, so the user
retrieves and deletes to get under quota and the next delivery succeeds; `postie deliver`
exits 73 or 75; `postie admin quota USER` shows use and limit; the over-90 % gauge.
"""

from __future__ import annotations

import json
import subprocess

from kits.launcher import free_port
from kits.launcher import wait_port
from kits.lmtp import CAROL, RawLMTP, canonical, lmtp_env, pop3_messages, run_deliver
from kits.metrics import wait_metrics
from kits.pop3 import POP3Raw


def message(size: int, subject: str = "quota") -> bytes:
    """A CRLF message of exactly `size` octets."""
    head = f"Subject: {subject}\r\n\r\n".encode()
    body = b"x" * (size - len(head) - 2) + b"\r\n"
    return head + body


def send(port: int, recipients: list[str], msg: bytes) -> list[str]:
    """One LMTP transaction; the replies after DATA, one per recipient."""
    c = RawLMTP(port)
    c.send(b"LHLO mx\r\nMAIL FROM:<s@example.org>\r\n" + b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients) + b"DATA\r\n")
    replies = c.replies(2 + len(recipients) + 1)
    assert all(r.startswith("250") for r in replies[:-1]), replies
    assert replies[-1].startswith("354"), replies
    c.send(msg.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    out = c.replies(len(recipients))
    c.send(b"QUIT\r\n")
    c.close()
    return out


def quota_env(env_factory, *extra: str):
    """lmtp_env's server (alice, bob, carol@example.org) and quser with `*:storage=1k`."""
    lport = free_port()

    def prefill(e):
        e.passwd.add(*CAROL, scheme="PLAIN")
        e.passwd.add("quser", "quser-pw", scheme="PLAIN", extra="::::::userdb_quota_rule=*:storage=1k")
        e.passwd.write()

    e = env_factory(extra=["--listen-lmtp", f"127.0.0.1:{lport}", *extra], prefill=prefill)
    e.users[CAROL[0]] = CAROL[1]
    e.users["quser"] = "quser-pw"
    e.lmtp_port = lport
    wait_port(lport)
    return e


def admin_quota(postie_bin, e, user: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(postie_bin), "admin", "quota", user, "--passwd-file", str(e.passwd.path), "--maildir", e.template, *extra],
                          capture_output=True, text=True, timeout=60)


def test_lmtp_over_quota_552_then_pop3_drains_and_delivery_succeeds(env_factory, postie_bin):
    mport = free_port()

    e = quota_env(env_factory, "--metrics", f"127.0.0.1:{mport}")
    sc = wait_metrics(mport, lambda sc: True)
    assert sc.types.get("pop3_quota_users_over_90_percent") == "gauge"
    assert sc.get("pop3_quota_users_over_90_percent") == 0

    first = message(950, "first")
    assert send(e.lmtp_port, ["quser"], first) == ["250 2.0.0 <quser> Saved"]
    # 950 of 1024 octets: over 90 %.
    assert wait_metrics(mport, lambda sc: sc.get("pop3_quota_users_over_90_percent") == 1).get("pop3_quota_users_over_90_percent") == 1

    # 950 + 100 > 1024: refused for quser only, stored for carol (no quota) in the same transaction.
    second = message(100, "second")
    assert send(e.lmtp_port, ["quser", CAROL[0]], second) == ["552 5.2.2 <quser> Mailbox full", f"250 2.0.0 <{CAROL[0]}> Saved"]
    assert len(list(e.maildir("quser").path.joinpath("new").iterdir())) + len(list(e.maildir("quser").path.joinpath("cur").iterdir())) == 1
    assert pop3_messages(e, CAROL[0]) == [canonical(second)]
    assert wait_metrics(mport, lambda sc: sc.get("lmtp_deliveries_total", result="over_quota") == 1).get("lmtp_deliveries_total", result="over_quota") == 1

    r = admin_quota(postie_bin, e, "quser", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"user": "quser", "rule": "*:storage=1k", "source": "user", "storage_used": 950, "storage_limit": 1024,
                                    "messages_used": 1, "messages_limit": None}

    # POP3 is never blocked by quota: retrieve and delete to get under it.
    c = POP3Raw(e.host, e.port)
    c.login("quser", "quser-pw")
    assert c.stat() == (1, 950)
    assert c.retr(1) == first
    c.ok("DELE 1")
    c.ok("QUIT")
    c.close()

    assert send(e.lmtp_port, ["quser"], second) == ["250 2.0.0 <quser> Saved"]
    assert pop3_messages(e, "quser") == [second]
    # 100 of 1024 octets now: the gauge counts quser no more.
    assert wait_metrics(mport, lambda sc: sc.get("pop3_quota_users_over_90_percent") == 0).get("pop3_quota_users_over_90_percent") == 0


def test_quota_full_tempfail_and_default_quota(env_factory):
    e = lmtp_env(env_factory, "--quota-full-tempfail", "--default-quota", "*:messages=1")
    msg = message(200)
    assert send(e.lmtp_port, ["bob", "alice"], msg) == ["250 2.0.0 <bob> Saved", "250 2.0.0 <alice> Saved"]
    # The default limit (one message) applies to users without a rule of their own.
    assert send(e.lmtp_port, ["bob"], msg) == ["452 4.2.2 <bob> Mailbox full"]
    assert pop3_messages(e, "bob") == [msg]


def test_deliver_exit_codes_over_quota(env_factory, postie_bin, tmp_path):
    e = env_factory()
    spool = tmp_path / "spool"
    spool.mkdir()
    base = ["--maildir", e.template, "--passwd-file", str(e.passwd.path), "--spool-dir", str(spool), "--default-quota", "*:storage=1k"]
    assert run_deliver(postie_bin, ["--user", "bob", *base], message(800)).returncode == 0
    r = run_deliver(postie_bin, ["--user", "bob", *base], message(800))
    # 73 EX_CANTCREAT: permanent, the MTA bounces.
    assert r.returncode == 73 and b"Mailbox full" in r.stderr, r
    # 75 EX_TEMPFAIL with --quota-full-tempfail: the MTA keeps it and retries.
    r = run_deliver(postie_bin, ["--user", "bob", *base, "--quota-full-tempfail"], message(800))
    assert r.returncode == 75 and b"Mailbox full" in r.stderr, r
    assert pop3_messages(e, "bob") == [message(800)]
    # 64: a default quota that is no quota_rule.
    r = run_deliver(postie_bin, ["--user", "bob", *base[:-2], "--default-quota", "lots"], message(10))
    assert r.returncode == 64 and b"--default-quota" in r.stderr, r


def test_admin_quota_text_and_errors(env_factory, postie_bin, tmp_path):
    e = env_factory()
    e.passwd.add("quser", "quser-pw", scheme="PLAIN", extra="::::::quota_rule=*:storage=1M:messages=4")
    e.passwd.write()
    spool = tmp_path / "spool"
    spool.mkdir()
    for _ in range(3):
        assert run_deliver(postie_bin, ["--user", "quser", "--maildir", e.template, "--passwd-file", str(e.passwd.path),
                                        "--spool-dir", str(spool)], message(1000)).returncode == 0
    r = admin_quota(postie_bin, e, "quser")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "user quser: quota *:storage=1M:messages=4 (user)", r.stdout
    assert lines[2].split() == ["storage", "3000", "1048576", "0.3%"], r.stdout
    assert lines[3].split() == ["messages", "3", "4", "75.0%"], r.stdout
    # A user without a rule: the default, or no limit.
    r = admin_quota(postie_bin, e, "bob", "--default-quota", "*:messages=10", "--json")
    assert json.loads(r.stdout)["source"] == "default" and json.loads(r.stdout)["messages_limit"] == 10, r
    r = admin_quota(postie_bin, e, "bob", "--json")
    assert json.loads(r.stdout)["rule"] is None and json.loads(r.stdout)["storage_limit"] is None, r
    # 67 for an unknown user.
    r = admin_quota(postie_bin, e, "nobody")
    assert r.returncode == 67 and "no user nobody" in r.stderr, r


def test_postgres_quota_column(pgdb, postie, postie_bin):
    """users.quota_rule (schema version 4) wins over extra_fields; LMTP 552, POP3 drains, then 250."""
    from kits.pop3 import POP3Raw as Raw

    pgdb.add_user("quser", "quser-pw", scheme="PLAIN")
    pgdb.add_user("other", "other-pw", scheme="PLAIN")
    pgdb.psql("UPDATE users SET quota_rule = '*:messages=1', extra_fields = 'quota_rule=*:messages=100' WHERE name = 'quser'")
    lport = free_port()
    node = pgdb.serve(postie, "--listen-lmtp", f"127.0.0.1:{lport}", "--default-quota", "*:storage=10M")
    wait_port(lport)
    msg = message(300)
    assert send(lport, ["quser", "other"], msg) == ["250 2.0.0 <quser> Saved", "250 2.0.0 <other> Saved"]
    assert send(lport, ["quser", "other"], msg) == ["552 5.2.2 <quser> Mailbox full", "250 2.0.0 <other> Saved"]
    assert pgdb.psql("SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.name = 'quser'") == "1"

    r = pgdb.postie("admin", "quota", "quser", "--store", "postgres", "--json")
    assert json.loads(r.stdout) == {"user": "quser", "rule": "*:messages=1", "source": "user", "storage_used": 300, "storage_limit": None,
                                    "messages_used": 1, "messages_limit": 1}
    r = pgdb.postie("admin", "quota", "other", "--store", "postgres", "--default-quota", "*:storage=10M", "--json")
    assert json.loads(r.stdout)["storage_used"] == 600 and json.loads(r.stdout)["source"] == "default", r.stdout

    c = Raw(node.host, node.port)
    c.login("quser", "quser-pw")
    assert c.retr(1) == msg
    c.ok("DELE 1")
    c.ok("QUIT")
    c.close()
    assert send(lport, ["quser"], msg) == ["250 2.0.0 <quser> Saved"]
