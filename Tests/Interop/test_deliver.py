"""`postie deliver`: exit codes, and Maildirs shared with Dovecot (Dovecot serves what Postie
delivered; a delivery into a Dovecot-indexed Maildir takes Dovecot's next UID).

Every message delivered is read back over POP3 and compared octet for octet with its
canonical CRLF form.
"""

from __future__ import annotations

import os

from kits.lmtp import pop3_messages, run_deliver
from kits.pop3 import POP3Raw


# --------------------------------------------------------------------------
# postie deliver
# --------------------------------------------------------------------------


def test_postie_deliver_exit_codes(env_factory, postie_bin, tmp_path):
    e = env_factory()
    spool = tmp_path / "spool"
    spool.mkdir()
    base = ["--maildir", e.template, "--passwd-file", str(e.passwd.path), "--spool-dir", str(spool)]

    # 0: delivered, an mbox "From " line dropped, line ends made CRLF; retrievable over POP3.
    r = run_deliver(postie_bin, ["--user", "alice", *base],
                    b"From sender@example.org Tue Nov 14 10:00:00 2023\nSubject: piped\n\n.dot stays\nlast")
    assert r.returncode == 0, r.stderr
    r = run_deliver(postie_bin, ["--user", "bob@example.org", *base], b"Subject: to bob\r\n\r\nhi\r\n")
    assert r.returncode == 0, r.stderr  # the local part of an address
    assert pop3_messages(e, "alice") == [b"Subject: piped\r\n\r\n.dot stays\r\nlast\r\n"]
    assert pop3_messages(e, "bob") == [b"Subject: to bob\r\n\r\nhi\r\n"]

    # 67 EX_NOUSER
    r = run_deliver(postie_bin, ["--user", "nobody", *base], b"Subject: x\n\nx\n")
    assert r.returncode == 67 and b"no such user: nobody" in r.stderr, r
    # 65 EX_DATAERR: empty, or over --max-size
    r = run_deliver(postie_bin, ["--user", "alice", *base], b"")
    assert r.returncode == 65 and b"empty message" in r.stderr, r
    r = run_deliver(postie_bin, ["--user", "alice", "--max-size", "100", *base], b"Subject: x\n\n" + b"x" * 200)
    assert r.returncode == 65 and b"larger than 100 octets" in r.stderr, r
    # 75 EX_TEMPFAIL: the user database cannot be read
    r = run_deliver(postie_bin, ["--user", "alice", "--maildir", e.template, "--passwd-file", str(tmp_path / "missing")],
                    b"Subject: x\n\nx\n")
    assert r.returncode == 75 and b"cannot look up user" in r.stderr, r
    # 73 EX_CANTCREAT: a file where the Maildir should be
    (tmp_path / "blocked").write_text("not a directory")
    r = run_deliver(postie_bin, ["--user", "alice", "--maildir", str(tmp_path / "blocked" / "%u"),
                                 "--passwd-file", str(e.passwd.path)], b"Subject: x\n\nx\n")
    assert r.returncode == 73 and b"Cannot create the mailbox" in r.stderr, r
    # 74 EX_IOERR: standard input cannot be read
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        r = run_deliver(postie_bin, ["--user", "alice", *base], fd)
    finally:
        os.close(fd)
    assert r.returncode == 74 and b"reading standard input failed" in r.stderr, r
    # 64 EX_USAGE
    r = run_deliver(postie_bin, ["--user", "alice", "--passwd-file", str(e.passwd.path)], b"x\n")
    assert r.returncode == 64, r
    # Nothing of the failed attempts reached a mailbox or stayed in the spool directory.
    assert pop3_messages(e, "alice") == [b"Subject: piped\r\n\r\n.dot stays\r\nlast\r\n"]
    assert not list(spool.iterdir())


def test_dovecot_serves_what_postie_delivered(dovecot, postie, postie_bin):
    """Postie's Maildir files (CRLF, `,S=,W=` names) are read by Dovecot as they are: the same
    octets and sizes from Dovecot's POP3 as from Postie's."""
    d = dovecot(users={"alice": "alice-pw"}, ssl="no")
    messages = [
        b"Subject: one\n\n.leading dot\nbare LF\n",
        b"Subject: two\r\n\r\nCRLF\r\n.\r\n..\r\nno final newline",
        b"From sender@example.org Tue Nov 14 10:00:00 2023\nSubject: three\n\n" + b"x" * 70000 + b"\n",
    ]
    template = f"{d.mail_root}/%u"
    for m in messages:
        r = run_deliver(postie_bin, ["--user", "alice", "--maildir", template, "--passwd-file", str(d.passwd_path)], m)
        assert r.returncode == 0, r.stderr
    d.fix_ownership()
    expected = [
        b"Subject: one\r\n\r\n.leading dot\r\nbare LF\r\n",
        b"Subject: two\r\n\r\nCRLF\r\n.\r\n..\r\nno final newline\r\n",
        b"Subject: three\r\n\r\n" + b"x" * 70000 + b"\r\n",
    ]

    def served(server) -> None:
        c = POP3Raw(server.host, server.port)
        c.login("alice", "alice-pw")
        assert c.listing("LIST") == {i + 1: str(len(m)) for i, m in enumerate(expected)}
        assert [c.retr(i + 1) for i in range(len(expected))] == expected
        c.ok("QUIT")
        c.close()

    served(d)
    served(postie.start(passwd=d.passwd_path, maildir=template))


def test_delivery_into_a_dovecot_maildir_takes_dovecots_next_uid(dovecot, postie, postie_bin):
    """After Dovecot has indexed a Maildir (dovecot-uidlist), `postie deliver` records the new
    message there: Dovecot and Postie then serve the same UIDL list, old and new messages alike."""
    d = dovecot(users={"alice": "alice-pw"}, ssl="no")
    for i in range(3):
        d.maildir("alice").deliver(f"Subject: old {i}\n\nbody {i}\n".encode())
    d.fix_ownership()

    def uidls(host, port):
        c = POP3Raw(host, port)
        c.login("alice", "alice-pw")
        listing = c.listing("UIDL")
        c.ok("QUIT")
        c.close()
        return listing

    before = uidls(d.host, d.port)
    assert len(before) == 3 and (d.mail_root / "alice" / "dovecot-uidlist").exists()
    template = f"{d.mail_root}/%u"
    r = run_deliver(postie_bin, ["--user", "alice", "--maildir", template, "--passwd-file", str(d.passwd_path)],
                    b"Subject: new\n\ndelivered by postie\n")
    assert r.returncode == 0, r.stderr
    d.fix_ownership()
    from_dovecot = uidls(d.host, d.port)
    assert len(from_dovecot) == 4 and {k: v for k, v in from_dovecot.items() if k <= 3} == before
    d.stop()
    s = postie.start(passwd=d.passwd_path, maildir=template)
    assert uidls(s.host, s.port) == from_dovecot
