"""One session per mailbox: the second gets -ERR [IN-USE], in one server
process and across two processes serving the same Maildir template."""

from __future__ import annotations



from conftest import note
from kits.mail import ALICE, BOB
from kits.pop3 import in_use, login_within, POP3Raw


def deliver_two(env):
    md = env.maildir("alice")
    md.deliver(b"Subject: one\n\nbody one\n")
    md.deliver(b"Subject: two\n\nbody two\n")


def test_second_session_same_process_gets_in_use(env):
    deliver_two(env)
    a = POP3Raw(env.host, env.port)
    a.login(*ALICE)
    assert a.stat()[0] == 2

    b = POP3Raw(env.host, env.port)
    r = b.try_login(*ALICE)
    assert in_use(r), f"second concurrent login to alice's mailbox: PASS got {r!r}, expected '-ERR [IN-USE] ...'"
    # The first session is unaffected.
    assert a.stat()[0] == 2
    # Another user's mailbox is not blocked by alice's lock.
    c = POP3Raw(env.host, env.port)
    c.login(*BOB)
    assert c.quit().startswith("+OK")
    c.close()
    # The refused client may try again later: after the first QUITs it gets in.
    assert a.quit().startswith("+OK")
    a.close()
    r = b.try_login(*ALICE)
    if not r.startswith("+OK"):
        b.close()
        b, waited = login_within(env.host, env.port, ALICE, 30)
        note(f"after QUIT, a new connection needed {waited:.2f}s to log in (retry on the refused one got {r!r})")
    assert b.stat()[0] == 2, "messages lost across sessions"
    assert b.quit().startswith("+OK")
    b.close()


def test_dropped_connection_releases_lock(env):
    deliver_two(env)
    a = POP3Raw(env.host, env.port)
    a.login(*ALICE)
    a.abort()  # RST, no QUIT
    b, waited = login_within(env.host, env.port, ALICE, 30)
    assert b.stat()[0] == 2
    b.ok("QUIT")
    b.close()
    if waited > 1:
        note(f"lock release after a dropped connection took {waited:.2f}s")


def test_two_processes_share_one_lock(env, postie):
    """Two `postie serve` processes on the same Maildir template exclude each other."""
    deliver_two(env)
    s1 = env.server
    s2 = postie.start(passwd=env.passwd.path, maildir=env.template, name="second")

    a = POP3Raw(s1.host, s1.port)
    a.login(*ALICE)
    b = POP3Raw(s2.host, s2.port)
    r = b.try_login(*ALICE)
    assert in_use(r), f"login on the second process while the first holds the mailbox: {r!r}, expected -ERR [IN-USE]"
    b.close()
    assert a.quit().startswith("+OK")
    a.close()

    # Now the second process gets it; the first must refuse.
    b, waited = login_within(s2.host, s2.port, ALICE, 30)
    a = POP3Raw(s1.host, s1.port)
    r = a.try_login(*ALICE)
    assert in_use(r), f"login on the first process while the second holds the mailbox: {r!r}"
    a.close()

    # SIGKILL the process holding the lock: the mailbox becomes usable again.
    b.sock.settimeout(5)
    s2.kill()
    b.close()
    c, waited = login_within(s1.host, s1.port, ALICE, 30)
    assert c.stat()[0] == 2, "messages lost after SIGKILL of the lock holder"
    assert c.quit().startswith("+OK")
    c.close()
    note(f"mailbox usable again {waited:.2f}s after SIGKILL of the process holding its lock")


def test_sigkill_of_lock_holder_same_template_restart(env):
    """The lock does not outlive a SIGKILLed server (no stale lock on restart)."""
    deliver_two(env)
    a = POP3Raw(env.host, env.port)
    a.login(*ALICE)
    a.ok("DELE 1")
    env.server.kill()
    a.close()
    env.restart()
    c, waited = login_within(env.host, env.port, ALICE, 30)
    assert c.stat()[0] == 2, "a SIGKILLed session's DELE took effect"
    c.ok("QUIT")
    c.close()
