"""Helpers of the protocol tests, for any environment with `host`, `port` and
`maildir(user).deliver(bytes)` (Maildir or PostgreSQL): three small messages, a logged-in
session that tolerates a short [IN-USE] window, message numbers by content, the expected TOP
output, and a liveness check.
"""

from __future__ import annotations

from .mail import ALICE, CRLF, canonical_crlf
from .pop3 import POP3Raw, login_within
from .report import note

MSG1 = b"From: a@example.org\nSubject: first\n\nline 1\n.line 2\nline 3\nline 4\n"
MSG2 = b"From: b@example.org\nSubject: second\n\n..body\n"
MSG3 = b"From: c@example.org\nSubject: third\n\nthree\n"


def three(env) -> list[bytes]:
    md = env.maildir("alice")
    msgs = [MSG1, MSG2, MSG3]
    for m in msgs:
        md.deliver(m)
    return msgs


def session(env, user=ALICE) -> POP3Raw:
    """A logged-in session. A previous session of this test may have just sent QUIT;
    a short [IN-USE] window after its +OK is tolerated here (and reported)."""
    c, waited = login_within(env.host, env.port, user, 30)
    assert c.greeting.startswith(b"+OK"), f"greeting {c.greeting!r}"
    if waited > 0.05:
        note(f"login needed {waited * 1000:.0f} ms of [IN-USE] retries after the previous session ended")
    return c


def numbers_by_content(c: POP3Raw, msgs: list[bytes]) -> list[int]:
    """Message numbers in the session for each of `msgs` (order on the server is not contractual)."""
    want = {canonical_crlf(m): i for i, m in enumerate(msgs)}
    out = [0] * len(msgs)
    for n in sorted(c.listing("LIST")):
        out[want[c.retr(n)]] = n
    return out


def top_expected(data: bytes, k: int) -> bytes:
    lines = canonical_crlf(data).split(CRLF)[:-1]
    h = lines.index(b"")
    return b"".join(l + CRLF for l in lines[: h + 1 + k])


def alive(c: POP3Raw) -> None:
    r = c.cmd("NOOP")
    assert r.startswith("+OK"), f"session broken after the previous command: NOOP got {r!r}"
