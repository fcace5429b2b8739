"""SMTP smuggling over LMTP (the CVE-2023-51764 class, issue 22): only CRLF . CRLF ends DATA.

A "." line with a bare LF on either side is message data, so the commands after it are never
executed and no second, forged message is delivered. The message is stored as ONE message for
the intended recipient, bare line ends normalised to CRLF; the would-be victim gets nothing.
"""

from __future__ import annotations

import pytest

from kits.lmtp import RawLMTP, lmtp_env, pop3_messages

FORGED = (b"MAIL FROM:<x@evil.example>\r\nRCPT TO:<bob>\r\nDATA\r\n"
          b"From: ceo@example.org\r\nSubject: forged\r\n\r\npay now\r\n")


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r"])
def test_bare_line_end_dot_is_data_not_the_end(env_factory, fake_end):
    e = lmtp_env(env_factory)
    r = RawLMTP(e.lmtp_port)
    r.send(b"LHLO mx.example.org\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\nDATA\r\n")
    got = r.replies(4)
    assert got[-1].startswith("354 "), got
    r.send(b"Subject: real\r\n\r\nhello" + fake_end + FORGED + b".\r\nQUIT\r\n")
    # One reply for the one recipient, then QUIT's: the forged commands were never executed.
    assert r.replies(2) == ["250 2.0.0 <alice> Saved", "221 2.0.0 Bye"]
    assert r.reply() == "<EOF>"
    r.close()
    alice = pop3_messages(e, "alice")
    assert len(alice) == 1, alice
    assert alice[0].startswith(b"Subject: real\r\n\r\nhello") and alice[0].endswith(b"pay now\r\n"), alice[0]
    assert b"MAIL FROM:<x@evil.example>\r\nRCPT TO:<bob>\r\n" in alice[0]
    # Stored canonical: every line ends in CRLF (a lone CR stays, as everywhere in LMTP).
    assert b"\n" not in alice[0].replace(b"\r\n", b""), alice[0]
    assert pop3_messages(e, "bob") == []


def test_crlf_dot_crlf_still_ends_and_pipelines(env_factory):
    """The control: the same bytes with a real CRLF . CRLF are two transactions, as RFC 2920
    pipelining allows, and bob gets the second message."""
    e = lmtp_env(env_factory)
    r = RawLMTP(e.lmtp_port)
    r.send(b"LHLO mx.example.org\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice>\r\nDATA\r\n")
    r.replies(4)
    r.send(b"Subject: real\r\n\r\nhello\r\n.\r\n" + FORGED + b".\r\nQUIT\r\n")
    assert r.replies(6) == ["250 2.0.0 <alice> Saved", "250 2.1.0 OK", "250 2.1.5 <bob> OK",
                            "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 <bob> Saved", "221 2.0.0 Bye"]
    r.close()
    assert pop3_messages(e, "alice") == [b"Subject: real\r\n\r\nhello\r\n"]
    assert len(pop3_messages(e, "bob")) == 1
