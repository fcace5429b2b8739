"""LMTP (RFC 2033) into Maildir, driven by Python's smtplib.LMTP and a raw pipelining client:
per-recipient replies, unknown users, SIZE, dot-unstuffing, pipelining and bad input, the
listener from a config file, its access list, SIGTERM and metrics (load: test_lmtp_load.py;
`postie deliver`: test_deliver.py).

Every message delivered is read back over POP3 and compared octet for octet with its
canonical CRLF form.
"""

from __future__ import annotations

import re
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from kits.launcher import free_port, wait_port
from kits.lmtp import CAROL, RawLMTP, canonical, data_replies, lmtp, lmtp_env, pop3_messages
from kits.metrics import scrape


# --------------------------------------------------------------------------
# smtplib.LMTP
# --------------------------------------------------------------------------


def test_one_message_to_several_recipients_one_reply_each(env_factory):
    e = lmtp_env(env_factory)
    c = lmtp(e)
    assert {"pipelining", "enhancedstatuscodes", "8bitmime", "size"} <= set(c.esmtp_features)
    assert c.mail("sender@example.org", ["BODY=8BITMIME"])[0] == 250
    assert c.rcpt("alice@example.org")[0] == 250
    code, text = c.rcpt("nobody@example.org")
    assert (code, text[:5]) == (550, b"5.1.1"), (code, text)
    assert c.rcpt("bob@example.org")[0] == 250
    assert c.rcpt(CAROL[0])[0] == 250  # the whole address is a user
    msg = b"From: sender@example.org\nSubject: to three\nMessage-ID: <three@example.org>\n\nHello\xe9 all\n"
    replies = data_replies(c, msg, 3)
    assert [r[0] for r in replies] == [250, 250, 250], replies
    for (code, text), who in zip(replies, ["alice@example.org", "bob@example.org", CAROL[0]]):
        assert text.startswith(b"2.0.0 <" + who.encode() + b">"), text
    assert c.noop()[0] == 250
    c.quit()

    # Durable before the replies: the Maildir file and the index entry exist already.
    files = list((Path(e.template.replace("%u", "alice")) / "new").iterdir())
    assert len(files) == 1 and re.search(r",S=\d+,W=\d+$", files[0].name), files
    index = (Path(e.template.replace("%u", "alice")) / "postie-uidlist").read_text()
    assert files[0].name in index
    for user in ("alice", "bob", CAROL[0]):
        assert pop3_messages(e, user) == [canonical(msg)], user


def test_unknown_user_is_refused_and_nothing_stored(env_factory):
    e = lmtp_env(env_factory)
    c = lmtp(e)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        c.sendmail("s@example.org", ["nobody@example.org"], b"Subject: x\n\nx\n")
    code, text = refused.value.recipients["nobody@example.org"]
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    c.quit()
    assert pop3_messages(e, "alice") == []


def test_size_limit(env_factory):
    e = lmtp_env(env_factory, "--lmtp-max-size", "50000")
    c = lmtp(e)
    assert c.esmtp_features["size"] == "50000"
    big = b"Subject: big\n\n" + b"x" * 60000 + b"\n"
    # smtplib announces SIZE=... in MAIL FROM and is refused there (RFC 1870).
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        c.sendmail("s@example.org", ["alice@example.org"], big)
    assert refused.value.smtp_code == 552 and refused.value.smtp_error.startswith(b"5.3.4")
    c.rset()
    # Without SIZE the server reads the whole message and refuses it for each recipient.
    assert c.mail("s@example.org")[0] == 250
    assert c.rcpt("alice")[0] == 250
    assert c.rcpt("bob")[0] == 250
    replies = data_replies(c, big, 2)
    assert [(r[0], r[1][:5]) for r in replies] == [(552, b"5.3.4")] * 2, replies
    assert c.noop()[0] == 250
    # Exactly at the limit is fine.
    head = b"Subject: fits\r\n\r\n"
    fits = head + b"y" * (50000 - len(head) - 2) + b"\r\n"
    assert len(fits) == 50000
    assert c.sendmail("s@example.org", ["alice"], fits) == {}
    c.quit()
    assert pop3_messages(e, "alice") == [fits]
    assert pop3_messages(e, "bob") == []


def test_dot_unstuffing_bare_lf_and_8bit(env_factory):
    e = lmtp_env(env_factory)
    msg = (b"Subject: dots\n\n.leading dot\n..two dots\n.\n...\nbare LF\nCRLF line\r\n"
           b"a bare \r inside\n\xff\xfe 8-bit\nlast line without newline")
    c = lmtp(e)
    assert c.sendmail("s@example.org", ["alice"], msg) == {}  # smtplib dot-stuffs
    c.quit()
    got = pop3_messages(e, "alice")
    assert got == [canonical(msg)]
    assert b"\r\n.\r\n...\r\n" in got[0] and b"a bare \r inside\r\n" in got[0]


# --------------------------------------------------------------------------
# Raw protocol: pipelining and bad input
# --------------------------------------------------------------------------


def test_pipelining_whole_transactions(env_factory):
    e = lmtp_env(env_factory)
    r = RawLMTP(e.lmtp_port)
    assert r.greeting.startswith("220 ")
    r.send(b"LHLO mx.example.org\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\n"
           b"RCPT TO:<ghost>\r\nRCPT TO:<bob>\r\nDATA\r\n")
    got = r.replies(6)
    assert got[0].startswith("250-") and "PIPELINING" in got[0]
    assert got[1:] == ["250 2.1.0 OK", "250 2.1.5 <alice> OK", "550 5.1.1 <ghost> User doesn't exist",
                       "250 2.1.5 <bob> OK", "354 End data with <CR><LF>.<CR><LF>"]
    # The message, then a second transaction and QUIT in the same packet (RFC 2920 section 3).
    r.send(b"Subject: one\r\n\r\n..stuffed\nbare\r\n.\r\n"
           b"MAIL FROM:<>\r\nRCPT TO:<alice>\r\nDATA\r\n")
    assert r.replies(5) == ["250 2.0.0 <alice> Saved", "250 2.0.0 <bob> Saved", "250 2.1.0 OK",
                            "250 2.1.5 <alice> OK", "354 End data with <CR><LF>.<CR><LF>"]
    r.send(b"Subject: two\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
    assert r.replies(2) == ["250 2.0.0 <alice> Saved", "221 2.0.0 Bye"]
    assert r.reply() == "<EOF>"
    r.close()
    assert pop3_messages(e, "alice") == [b"Subject: one\r\n\r\n.stuffed\r\nbare\r\n", b"Subject: two\r\n\r\ntwo\r\n"]
    assert pop3_messages(e, "bob") == [b"Subject: one\r\n\r\n.stuffed\r\nbare\r\n"]


def test_bad_input_gets_clear_errors(env_factory):
    e = lmtp_env(env_factory, "--lmtp-max-recipients", "2")
    r = RawLMTP(e.lmtp_port)
    r.send(b"HELO x\r\nMAIL FROM:<a>\r\nLHLO\r\nLHLO mx\r\nRCPT TO:<alice>\r\nDATA\r\nFROB\r\n"
           + b"NOOP " + b"x" * 5000 + b"\r\n"
           + b"MAIL FROM:<a> SIZE=abc\r\nMAIL FROM:<a> BODY=BINARYMIME\r\nMAIL FROM:a\r\nMAIL FROM:<a>\r\n"
           + b"MAIL FROM:<b>\r\nRCPT TO:<>\r\nRCPT TO:<../../etc@x>\r\nRCPT TO:<alice> NOTIFY=NEVER\r\n"
           + b"RCPT TO:<alice>\r\nRCPT TO:<bob>\r\nRCPT TO:<alice>\r\nVRFY alice\r\nRSET\r\nDATA\r\nNOOP\x00\r\n")
    got = r.replies(23)
    expected = [
        "500 5.5.1 This is an LMTP server: use LHLO (RFC 2033)",
        "503 5.5.1 Send LHLO first",
        "501 5.5.4 Syntax: LHLO hostname",
        None,  # the LHLO reply
        "503 5.5.1 Send MAIL FROM first",
        "503 5.5.1 Send MAIL FROM first",
        "500 5.5.2 Unknown command",
        "500 5.5.2 Line too long",
        "501 5.5.4 SIZE needs a number of octets",
        "555 5.5.4 BODY must be 7BIT or 8BITMIME",
        "501 5.5.4 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]",
        "250 2.1.0 OK",
        "503 5.5.1 Nested MAIL command",
        "501 5.5.4 Syntax: RCPT TO:<address>, not an empty address",
        "501 5.1.3 Bad recipient address syntax",
        "555 5.5.4 Unsupported RCPT parameter NOTIFY",
        "250 2.1.5 <alice> OK",
        "250 2.1.5 <bob> OK",
        "452 4.5.3 Too many recipients",
        "252 2.5.2 Cannot VRFY user, but will accept the message and attempt delivery",
        "250 2.0.0 OK",
        "503 5.5.1 Send MAIL FROM first",
        "500 5.5.2 Invalid character in command",
    ]
    for i, (g, x) in enumerate(zip(got, expected)):
        if x is not None:
            assert g == x, f"reply {i}: {g!r} != {x!r}"
    # Too many bad commands end the session, as in Dovecot.
    r.send(b"FROB\r\n" * 4)
    assert r.replies(5) == ["500 5.5.2 Unknown command"] * 3 + [
        "421 4.7.0 Too many invalid commands, closing connection", "<EOF>"]
    r.close()
    # A connection dropped in the middle of DATA delivers nothing.
    r = RawLMTP(e.lmtp_port)
    r.send(b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\nDATA\r\n")
    assert r.replies(4)[3].startswith("354")
    r.send(b"Subject: cut\r\n\r\nhalf a message")
    r.close()
    time.sleep(0.3)
    assert pop3_messages(e, "alice") == []
    assert e.server.alive()


def test_listen_lmtp_from_config_file(env_factory, postie_bin, tmp_path):
    lport = free_port()
    cfg = tmp_path / "postie.yaml"
    cfg.write_text(f'listen_lmtp: ["127.0.0.1:{lport}"]\nlmtp_max_size: 12345\nlmtp_recipient: local\n')
    e = env_factory(extra=["--config", str(cfg)])
    e.lmtp_port = lport
    wait_port(lport)
    c = lmtp(e)
    assert c.esmtp_features["size"] == "12345"
    # lmtp_recipient: local: the domain is ignored.
    assert c.sendmail("s@example.org", ["alice@elsewhere.example"], b"Subject: cfg\r\n\r\nx\r\n") == {}
    c.quit()
    assert pop3_messages(e, "alice") == [b"Subject: cfg\r\n\r\nx\r\n"]
    out = subprocess.run([str(postie_bin), "config", "check", "--config", str(cfg), "--listen", "127.0.0.1:1",
                          "--passwd-file", str(e.passwd.path), "--maildir", e.template],
                         capture_output=True, text=True, timeout=30)
    assert "lmtp_max_size: 12345" in out.stdout, out.stdout + out.stderr
    assert out.returncode == 0 and "LMTP has no authentication" not in out.stderr, out.stderr
    # An LMTP listener open to the network, without an allow list, is worth a warning.
    out = subprocess.run([str(postie_bin), "config", "check", "--listen-lmtp", "0.0.0.0:24",
                          "--passwd-file", str(e.passwd.path), "--maildir", e.template],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "warning: --listen-lmtp: 0.0.0.0:24: LMTP has no authentication" in out.stderr, out.stderr
    out = subprocess.run([str(postie_bin), "config", "check", "--listen-lmtp", "0.0.0.0:24 allow=10.0.0.5/32",
                          "--passwd-file", str(e.passwd.path), "--maildir", e.template],
                         capture_output=True, text=True, timeout=30)
    assert "LMTP has no authentication" not in out.stderr, out.stderr


def test_lmtp_listener_access_list(env_factory):
    lport = free_port()
    e = env_factory(extra=["--listen-lmtp", f"127.0.0.1:{lport} deny=127.0.0.0/8"])
    wait_port(lport)  # that connection is refused and logged too
    r = RawLMTP(lport)
    assert r.greeting == "554 5.7.1 Access denied"
    assert r.reply() == "<EOF>"
    r.close()
    assert "lmtp: Info: Connection refused by access list: rip=127.0.0.1" in e.server.log_text()


def test_sigterm_answers_421_and_delivers_nothing_half_received(env_factory):
    e = lmtp_env(env_factory)
    idle = RawLMTP(e.lmtp_port)
    idle.send(b"LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\n")
    assert idle.replies(3)[2] == "250 2.1.5 <alice> OK"
    mid_data = RawLMTP(e.lmtp_port)
    mid_data.send(b"LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<bob>\r\nDATA\r\n")
    assert mid_data.replies(4)[3].startswith("354")
    mid_data.send(b"Subject: interrupted\r\n\r\nhalf")
    time.sleep(0.2)
    assert e.server.stop() == 0
    for r in (idle, mid_data):
        assert r.reply() == "421 4.3.2 Server shutting down, try again later"
        assert r.reply() == "<EOF>"
        r.close()
    assert "Server shutting down in DATA; nothing delivered" in e.server.log_text()
    for user in ("alice", "bob"):
        md = Path(e.template.replace("%u", user))
        assert not md.exists() or not any((md / "new").iterdir()), f"{user} got a message"


def test_lmtp_metrics(env_factory):

    mport = free_port()
    e = lmtp_env(env_factory, "--metrics", f"127.0.0.1:{mport}", "--lmtp-max-size", "1000")
    wait_port(mport)  # bound just after the POP3 listener the launcher waited for
    before = scrape(mport)
    for result in ("delivered", "temporary_failure", "permanent_failure", "too_big"):  # present at 0 from the start
        assert before.samples.get(("lmtp_deliveries_total", frozenset({("result", result)}))) == 0, before.text[:2000]
    c = lmtp(e)
    assert c.mail("s@example.org")[0] == 250
    assert c.rcpt("alice")[0] == 250
    assert c.rcpt("bob")[0] == 250
    assert c.rcpt("ghost")[0] == 550
    msg = b"Subject: counted\r\n\r\nx\r\n"
    assert [r[0] for r in data_replies(c, msg, 2)] == [250, 250]
    assert c.mail("s@example.org")[0] == 250
    assert c.rcpt("alice")[0] == 250
    assert data_replies(c, b"x" * 2000 + b"\r\n", 1)[0][0] == 552
    c.quit()
    s = scrape(mport)
    assert s.get("lmtp_connections_total") >= 1
    assert s.get("lmtp_recipients_total", result="accepted") == 3
    assert s.get("lmtp_recipients_total", result="unknown") == 1
    assert s.get("lmtp_deliveries_total", result="delivered") == 2
    assert s.get("lmtp_deliveries_total", result="too_big") == 1
    assert s.get("lmtp_received_bytes_total") == 2 * len(msg)
