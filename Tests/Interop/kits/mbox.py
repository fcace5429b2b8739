"""mbox spools as Postfix local(8) writes them, for the mbox tests."""

from __future__ import annotations

DATE = "Mon Nov 30 08:00:00 2026"


def postfix_entry(message: bytes, sender: str = "alice@example.org") -> bytes:
    """One message as Postfix local(8) appends it: From line, the message with each line that
    starts with "From " quoted (mboxo), a final newline, the blank separator line."""
    lines = message.split(b"\n")
    quoted = b"\n".join(b">" + l if l.startswith(b"From ") else l for l in lines)
    if not quoted.endswith(b"\n"):
        quoted += b"\n"
    return f"From {sender} {DATE}\n".encode() + quoted + b"\n"


def stored(message: bytes) -> bytes:
    """What the spool holds of a message (mboxo-quoted), which is what POP3 sends."""
    return b"\n".join(b">" + l if l.startswith(b"From ") else l for l in message.split(b"\n"))


def corpus_messages() -> list[bytes]:
    big = b"".join(b"line %07d of a big message, a little padding to make it longer\n" % i for i in range(32_000))
    return [
        b"Subject: plain\nMessage-ID: <m1@example.org>\n\nhello\n",
        b"Subject: quoting\nMessage-ID: <m2@example.org>\n\nFrom the start, a From line Postfix quotes\n"
        b">From an already quoted line (mboxo keeps it)\n>>From twice\nFrom  two spaces\n",
        b"Subject: dots\nMessage-ID: <m3@example.org>\n\n.\n..\n.hidden\n\nFrom\n",
        b"Subject: big\nMessage-ID: <m4@example.org>\n\n" + big,
    ]


LAST = b"Subject: no final newline\nMessage-ID: <m5@example.org>\n\nthe end"
