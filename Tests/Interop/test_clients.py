"""Real clients download every message byte-exact (see kits.mail's module doc
for the precise meaning of byte-exact, including the no-final-newline case)."""

from __future__ import annotations

import hashlib
import poplib
import subprocess


from kits.mail import (
    ALICE,
    canonical_crlf,
    corpus,
    CRLF,
    digest_bytes,
    dot_stuff,
    hash_fileobj,
    hash_path,
    sha,
    ZERO_BYTE,
)
from kits.pop3 import POP3Raw
from kits.tools import curl, Fetchmail

BIG = 1 << 20  # messages above this are streamed and hashed, never held in memory


def deliver_all(md, big_message, with_zero: bool = True) -> dict[str, object]:
    """Delivers the corpus (+ the big message) and returns label -> StreamDigest."""
    expected = {}
    for label, data in corpus().items():
        md.deliver(data)
        expected[label] = digest_bytes(data)
    if with_zero:
        md.deliver(ZERO_BYTE)
        expected["zero-byte"] = digest_bytes(ZERO_BYTE)
    if big_message is not None:
        md.deliver_link(big_message.path)
        expected["big"] = big_message
    return expected


def assert_same_messages(expected: dict, got: dict[int, tuple[int, str]], form: str, client: str) -> None:
    """got: message number -> (size, sha256) of the client's output in `form` ('crlf' or 'lf')."""
    want = {getattr(d, f"{form}_sha"): (label, getattr(d, f"{form}_size")) for label, d in expected.items()}
    problems = []
    matched = set()
    for n, (size, h) in sorted(got.items()):
        if h in want:
            if h in matched:
                problems.append(f"message {n}: duplicate of {want[h][0]!r}")
            matched.add(h)
            continue
        same_size = [lab for lab, sz in want.values() if sz == size]
        problems.append(
            f"message {n}: {size} octets, sha256 {h[:16]}… matches no expected message"
            + (f" (same size as {same_size}, different bytes)" if same_size else ""))
    for h, (label, size) in want.items():
        if h not in matched:
            problems.append(f"{label!r} ({size} octets in {form.upper()} form) was not received byte-exact")
    assert not problems, f"{client}: " + "; ".join(problems)


# --------------------------------------------------------------------------
# Raw wire check: the exact stuffed bytes for each corpus message
# --------------------------------------------------------------------------


def test_wire_bytes_are_exactly_the_stuffed_crlf_form(env):
    md = env.maildir("alice")
    msgs = dict(corpus())
    msgs["zero-byte"] = ZERO_BYTE
    for data in msgs.values():
        md.deliver(data)
    by_size: dict[int, list[str]] = {}
    for label, data in msgs.items():
        by_size.setdefault(len(canonical_crlf(data)), []).append(label)
    with POP3Raw(env.host, env.port) as c:
        c.login(*ALICE)
        sizes = c.listing("LIST")
        assert len(sizes) == len(msgs), f"LIST shows {len(sizes)} messages, delivered {len(msgs)}"
        assert sorted(int(s) for s in sizes.values()) == sorted(len(canonical_crlf(d)) for d in msgs.values()), \
            "LIST sizes are not the exact octet counts of the CRLF form (RFC 1939 section 5 / contract)"
        wires = {}
        for n in sorted(sizes):
            r = c.cmd(f"RETR {n}")
            assert r.startswith("+OK"), f"RETR {n} -> {r!r}"
            wires[n] = c.read_multiline_wire()
        c.ok("QUIT")
    expected_wires = {dot_stuff(canonical_crlf(d)): label for label, d in msgs.items()}
    for n, w in wires.items():
        assert w in expected_wires, (
            f"RETR {n} wire bytes ({len(w)} octets, LIST {sizes[n]}) are not the dot-stuffed CRLF form of any "
            f"delivered message; candidates of that size: {by_size.get(int(sizes[n]))}; first 300 bytes: {w[:300]!r}")
    assert sorted(expected_wires[w] for w in wires.values()) == sorted(msgs), "some message was sent twice"


# --------------------------------------------------------------------------
# Python poplib
# --------------------------------------------------------------------------


def poplib_retr_stream(p: poplib.POP3, n: int) -> tuple[int, str]:
    """RETR through poplib's own line reader, hashing instead of collecting the lines."""
    p._shortcmd(f"RETR {n}")
    h = hashlib.sha256()
    size = 0
    while True:
        line, _ = p._getline()
        if line == b".":
            return size, h.hexdigest()
        if line.startswith(b".."):
            line = line[1:]
        h.update(line)
        h.update(CRLF)
        size += len(line) + 2


def test_poplib_downloads_every_message_byte_exact(env, big_message, monkeypatch):
    # poplib caps lines at 2048 octets; RFC 1939 sets no limit on message lines.
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 16)
    expected = deliver_all(env.maildir("alice"), big_message)
    p = poplib.POP3(env.host, env.port, timeout=60)
    try:
        assert p.getwelcome().startswith(b"+OK")
        p.user(ALICE[0])
        p.pass_(ALICE[1])
        count, total = p.stat()
        assert count == len(expected), f"STAT count {count}, delivered {len(expected)}"
        want_total = sum(d.crlf_size for d in expected.values())
        assert total == want_total, f"STAT size {total}, sum of CRLF sizes {want_total}"
        _, listing, _ = p.list()
        sizes = {int(l.split()[0]): int(l.split()[1]) for l in listing}
        got = {}
        for n, size in sorted(sizes.items()):
            if size > BIG:
                got[n] = poplib_retr_stream(p, n)
            else:
                _, lines, _ = p.retr(n)
                body = b"".join(l + CRLF for l in lines)
                got[n] = (len(body), sha(body))
            assert got[n][0] == size, f"message {n}: LIST says {size} octets, poplib RETR gave {got[n][0]}"
        assert_same_messages(expected, got, "crlf", "poplib")
        _, uidls, _ = p.uidl()
        uids = [l.split()[1] for l in uidls]
        assert len(set(uids)) == len(uids) == count, f"UIDL not unique: {uids}"
        for u in uids:
            assert 1 <= len(u) <= 70 and all(0x21 <= b <= 0x7E for b in u), \
                f"UIDL {u!r} violates RFC 1939 section 7 (1-70 chars in 0x21-0x7E)"
        assert p.quit().startswith(b"+OK")
    finally:
        p.close()


# --------------------------------------------------------------------------
# curl
# --------------------------------------------------------------------------


def test_curl_lists_and_downloads_every_message_byte_exact(env, big_message):
    expected = deliver_all(env.maildir("alice"), big_message)
    base = f"pop3://127.0.0.1:{env.port}/"
    auth = ["-u", f"{ALICE[0]}:{ALICE[1]}"]

    r = curl([base] + auth, timeout=120)
    assert r.returncode == 0, f"curl LIST exit {r.returncode}: {r.stderr.decode()}"
    lines = r.stdout.decode().split("\r\n")
    assert lines[-1] == "", f"curl LIST output does not end in CRLF: {r.stdout[-50:]!r}"
    sizes = {int(l.split()[0]): int(l.split()[1]) for l in lines[:-1]}
    assert len(sizes) == len(expected), f"curl LIST shows {len(sizes)} messages, delivered {len(expected)}"
    assert sorted(sizes.values()) == sorted(d.crlf_size for d in expected.values()), "curl LIST sizes != CRLF sizes"

    r = curl(["-X", "UIDL", base] + auth, timeout=120)
    assert r.returncode == 0, f"curl UIDL exit {r.returncode}: {r.stderr.decode()}"
    ulines = r.stdout.decode().split("\r\n")[:-1]
    uids = {int(l.split()[0]): l.split()[1] for l in ulines}
    assert set(uids) == set(sizes), f"UIDL numbers {sorted(uids)} != LIST numbers {sorted(sizes)}"
    assert len(set(uids.values())) == len(uids), f"duplicate UIDLs: {uids}"

    got = {}
    for n in sorted(sizes):
        proc = subprocess.Popen(["curl", "-sS", "--max-time", "120", f"{base}{n}"] + auth,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        got[n] = hash_fileobj(proc.stdout)
        err = proc.stderr.read().decode()
        rc = proc.wait(30)
        assert rc == 0, f"curl RETR {n} exit {rc}: {err}"
        if sizes[n] == 0 and got[n] == (2, sha(CRLF)):
            # curl quirk (checked against a hand-written server sending "+OK\r\n.\r\n"):
            # for an empty message curl prints the CRLF that ended the +OK line. The
            # exact wire bytes of the 0-byte message are checked by the raw-socket test.
            got[n] = (0, sha(b""))
        assert got[n][0] == sizes[n], f"curl RETR {n}: {got[n][0]} octets, LIST said {sizes[n]}"
    assert_same_messages(expected, got, "crlf", "curl")


# --------------------------------------------------------------------------
# fetchmail
# --------------------------------------------------------------------------

def test_fetchmail_keep_uidl_fetches_each_message_once(env_factory, big_message):
    """fetchmail 6.4 in --keep mode fetches with `TOP n 99999999`, so this also
    checks TOP with a line count beyond the end of the body."""
    carol = ("carol", "Car0l-fetch-pw")

    def prefill(e):
        e.passwd.add(*carol, scheme="SHA512-CRYPT")
        e.passwd.write()

    e = env_factory(prefill=prefill)
    md = e.maildir("carol")
    # No 0-byte message here: fetchmail replaces a headerless message by a
    # "Headerless mail" notice of its own (seen with a reference server).
    expected = deliver_all(md, big_message, with_zero=False)
    fm = Fetchmail(e.tmp / "fetchmail", e.port, *carol)

    r = fm.run()
    assert r.returncode == 0, f"first fetchmail run should retrieve mail (exit 0): {fm.describe(r)}"
    files = fm.take()
    got = {i + 1: hash_path(f) for i, f in enumerate(files)}
    assert len(files) == len(expected), \
        f"fetchmail delivered {len(files)} messages, the mailbox has {len(expected)}: {fm.describe(r)}"
    # fetchmail strips CR before handing the message to an MDA: compare the LF form.
    assert_same_messages(expected, got, "lf", "fetchmail")
    assert len(md.message_files()) == len(expected), "fetchmail --keep: messages vanished from the Maildir"

    r = fm.run()
    assert r.returncode == 1, f"second run with --keep --uidl should find no new mail (exit 1): {fm.describe(r)}"
    assert fm.take() == [], "second fetchmail run delivered messages again"

    extra = b"From: late@example.org\nSubject: delivered after the first fetch\n\n.late dot line\nbye\n"
    md.deliver(extra)
    r = fm.run()
    assert r.returncode == 0, f"third run should fetch the one new message (exit 0): {fm.describe(r)}"
    files = fm.take()
    assert len(files) == 1, f"third run delivered {len(files)} messages, expected only the new one"
    assert files[0].read_bytes() == extra, "the new message differs from what was delivered"

    r = fm.run()
    assert r.returncode == 1, f"fourth run should find nothing new: {fm.describe(r)}"
