"""`postie fetch` against Dovecot (Debian's dovecot-pop3d) and against `postie serve`:
byte-exact over STLS and over implicit TLS (995-style), `--keep` twice fetches nothing new,
mbox delivery (From quoting, other programs' locks), the login method asked for, and TLS
verified by default, STLS never downgraded, failures named by step.

SIGKILL at random moments is in test_fetch_sigkill.py, part-way failures in
test_fetch_failures.py, state and accounts in test_fetch_state.py.
"""

from __future__ import annotations

import json
import os
import poplib
import threading
import time
from pathlib import Path

from kits.fetch import account, expected_local, local_messages, parse_mboxrd, run_fetch, server_messages, write_password
from kits.launcher import HOST
from kits.mail import corpus
from kits.tls import client_context, make_pki


# --------------------------------------------------------------------------
# 1. byte-exact over STLS and implicit TLS; --keep twice fetches nothing new
# --------------------------------------------------------------------------


def test_fetch_from_dovecot_stls_and_implicit_tls_byte_exact(dovecot, postie_bin, tmp_path):
    pki = make_pki(tmp_path / "pki")
    d = dovecot({"alice": "pw-alice", "bob": "pw-bob"}, cert=pki.a.cert, key=pki.a.key)
    originals = list(corpus().values())
    for user in ("alice", "bob"):
        for m in originals:
            d.maildir(user).deliver(m)
    d.fix_ownership()
    want = sorted(expected_local(m) for m in originals)

    # STLS on the plain port, --keep: everything arrives, nothing leaves the server.
    out = tmp_path / "alice-Maildir"
    pw = write_password(tmp_path, "alice", "pw-alice")
    args = ["--server", f"{HOST}:{d.port}", "--tls", "starttls", "--ca-file", str(pki.cafile),
            "--user", "alice", "--password-file", str(pw), "--to", f"maildir:{out}", "--keep"]
    code, doc, _, err = run_fetch(postie_bin, args)
    assert code == 0, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["skipped"], a["deleted"], a["failed"]) == ("ok", len(originals), 0, 0, 0), a
    assert sorted(local_messages(out)) == want
    assert len(server_messages(d.maildir("alice"))) == len(originals)

    # --keep again: nothing new.
    code, doc, _, err = run_fetch(postie_bin, args)
    assert code == 0, err
    a = account(doc)
    assert (a["fetched"], a["skipped"], a["deleted"]) == (0, len(originals), 0), a
    assert sorted(local_messages(out)) == want

    # A new message arrives: only it is fetched.
    extra = b"From: x@example.org\nSubject: late\n\nlate arrival\n"
    d.maildir("alice").deliver(extra)
    d.fix_ownership()
    code, doc, _, err = run_fetch(postie_bin, args)
    assert code == 0, err
    assert (account(doc)["fetched"], account(doc)["skipped"]) == (1, len(originals))
    assert sorted(local_messages(out)) == sorted(want + [extra])

    # Implicit TLS (POP3S port), password from POSTIE_PASSWORD, without --keep: the server is emptied.
    out_b = tmp_path / "bob-Maildir"
    code, doc, _, err = run_fetch(postie_bin, [
        "--server", f"{HOST}:{d.tls_port}", "--tls", "implicit", "--ca-file", str(pki.cafile),
        "--user", "bob", "--to", f"maildir:{out_b}"], password="pw-bob")
    assert code == 0, err
    b = account(doc)
    assert (b["status"], b["fetched"], b["deleted"]) == ("ok", len(originals), len(originals)), b
    assert sorted(local_messages(out_b)) == want
    assert server_messages(d.maildir("bob")) == []
    p = poplib.POP3_SSL(d.host, d.tls_port, context=client_context(pki.cafile), timeout=10)
    p.user("bob")
    p.pass_("pw-bob")
    assert p.stat() == (0, 0)
    p.quit()


def test_fetch_into_mbox_quotes_from_lines(dovecot, postie_bin, tmp_path):
    pki = make_pki(tmp_path / "pki")
    d = dovecot({"alice": "pw-alice"}, cert=pki.a.cert, key=pki.a.key)
    originals = list(corpus().values()) + [b"Subject: from lines\n\nFrom the start\n>From quoted\n>>From twice\nFromage\n"]
    for m in originals:
        d.maildir("alice").deliver(m)
    d.fix_ownership()
    mbox = tmp_path / "alice.mbox"
    args = ["--server", f"{HOST}:{d.tls_port}", "--tls", "implicit", "--ca-file", str(pki.cafile), "--user", "alice",
            "--to", f"mbox:{mbox}", "--keep"]
    code, doc, _, err = run_fetch(postie_bin, args, password="pw-alice")
    assert code == 0, err
    assert account(doc)["fetched"] == len(originals)
    raw = mbox.read_bytes()
    assert b"\n>From the start\n>>From quoted\n>>>From twice\nFromage\n" in raw
    got = parse_mboxrd(raw)
    assert sorted(m for _, m in got) == sorted(expected_local(m) for m in originals)
    code, doc, _, err = run_fetch(postie_bin, args, password="pw-alice")
    assert code == 0 and account(doc)["fetched"] == 0 and account(doc)["skipped"] == len(originals)
    assert mbox.read_bytes() == raw


def test_fetch_into_mbox_honours_other_programs_locks(dovecot, postie_bin, tmp_path):
    """mutt, procmail and Dovecot (mbox_write_locks = dotlock fcntl) lock an mbox with a dot-lock
    file and an fcntl lock: fetch waits for either before it appends, removes its own dot-lock
    afterwards, and takes over a dot-lock left by a crash (older than 5 minutes)."""
    import fcntl
    pki = make_pki(tmp_path / "pki")
    d = dovecot({"alice": "pw-alice"}, cert=pki.a.cert, key=pki.a.key)
    originals = list(corpus().values())[:3]
    for m in originals:
        d.maildir("alice").deliver(m)
    d.fix_ownership()

    def args(mbox: Path) -> list[str]:
        return ["--server", f"{HOST}:{d.tls_port}", "--tls", "implicit", "--ca-file", str(pki.cafile),
                "--user", "alice", "--to", f"mbox:{mbox}", "--keep"]

    for kind in ("dot-lock", "fcntl lock"):
        mbox = tmp_path / f"{kind.split()[0]}.mbox"
        mbox.write_bytes(b"")
        dotlock = Path(f"{mbox}.lock")
        held = open(mbox, "r+b")
        if kind == "dot-lock":
            dotlock.write_text("4242\n")
        else:
            fcntl.lockf(held, fcntl.LOCK_EX)
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(r=run_fetch(postie_bin, args(mbox), password="pw-alice")))
        t.start()
        time.sleep(1.5)  # fetch has logged in and is waiting for the lock by now
        written = mbox.stat().st_size
        alive = t.is_alive()
        if kind == "dot-lock":
            dotlock.unlink()
        else:
            fcntl.lockf(held, fcntl.LOCK_UN)
        held.close()
        t.join(120)
        code, doc, _, err = result["r"]
        assert written == 0 and alive, f"fetch appended to the mbox while another program held a {kind}: {result}"
        assert code == 0 and account(doc)["fetched"] == len(originals), err
        assert not dotlock.exists(), "fetch left its dot-lock behind"
        assert sorted(m for _, m in parse_mboxrd(mbox.read_bytes())) == sorted(expected_local(m) for m in originals)

    # A dot-lock from a crash ten minutes ago is stale: removed, and the fetch goes ahead.
    mbox = tmp_path / "stale.mbox"
    dotlock = Path(f"{mbox}.lock")
    dotlock.write_text("4242\n")
    os.utime(dotlock, (time.time() - 600, time.time() - 600))
    code, doc, _, err = run_fetch(postie_bin, args(mbox), password="pw-alice")
    assert code == 0 and account(doc)["fetched"] == len(originals), err
    assert not dotlock.exists()


def test_fetch_logs_in_with_the_method_asked_for(dovecot, postie_bin, tmp_path):
    """USER/PASS by default; --login-method picks a SASL mechanism or APOP, `auto` the strongest
    SASL mechanism offered; Dovecot's log names the mechanism that was used."""
    pki = make_pki(tmp_path / "pki")
    d = dovecot({"alice": "pw-alice"}, cert=pki.a.cert, key=pki.a.key)
    d.maildir("alice").deliver(b"Subject: one\n\nbody\n")
    d.fix_ownership()
    for method, logged in ((None, "PLAIN"), ("scram-sha-256", "SCRAM-SHA-256"), ("CRAM-MD5", "CRAM-MD5"),
                           ("auto", "SCRAM-SHA-256"), ("login", "LOGIN")):
        out = tmp_path / f"out-{method}"
        args = ["--server", f"{HOST}:{d.tls_port}", "--tls", "implicit", "--ca-file", str(pki.cafile),
                "--user", "alice", "--to", f"maildir:{out}", "--keep"]
        if method:
            args += ["--login-method", method]
        before = d.log_path.read_text()
        code, doc, _, err = run_fetch(postie_bin, args, password="pw-alice")
        assert code == 0 and account(doc)["fetched"] == 1, (method, err)
        # Dovecot logs USER/PASS as method=PLAIN.
        new = d.log_path.read_text()[len(before):]
        assert f"user=<alice>, method={logged}," in new, (method, new)
    # A wrong password with SCRAM: a failed login, named with its method.
    code, doc, _, err = run_fetch(postie_bin, ["--server", f"{HOST}:{d.tls_port}", "--tls", "implicit",
                                               "--ca-file", str(pki.cafile), "--user", "alice", "--to",
                                               f"maildir:{tmp_path / 'wrong'}", "--login-method", "scram-sha-256"],
                                  password="wrong")
    assert code != 0 and account(doc)["status"] == "failed", err
    assert "with SCRAM-SHA-256 failed" in json.dumps(doc), doc
    code, _, _, err = run_fetch(postie_bin, ["--server", f"{HOST}:{d.tls_port}", "--user", "alice", "--to",
                                             f"maildir:{tmp_path / 'x'}", "--login-method", "NTLM"], password="x")
    assert code == 64 and "--login-method" in err, err


# --------------------------------------------------------------------------
# TLS: verified by default, STLS never downgraded, failures named by step
# --------------------------------------------------------------------------


def test_tls_failures_are_explained_and_never_downgraded(dovecot, postie_bin, tmp_path):
    pki = make_pki(tmp_path / "pki")
    d = dovecot({"alice": "pw-alice"}, cert=pki.a.cert, key=pki.a.key)
    d.maildir("alice").deliver(b"Subject: x\n\nbody\n")
    d.fix_ownership()
    out = tmp_path / "Maildir"
    base = ["--user", "alice", "--to", f"maildir:{out}", "--timeout", "10"]

    # No --ca-file: the test CA is not among the system's, the handshake fails and says why.
    code, doc, _, _ = run_fetch(postie_bin, ["--server", f"{HOST}:{d.tls_port}", "--tls", "implicit", *base], password="pw-alice")
    assert code == 2
    assert "TLS handshake" in account(doc)["error"] and "--ca-file" in account(doc)["error"], account(doc)
    code, doc, _, _ = run_fetch(postie_bin, ["--server", f"{HOST}:{d.port}", *base], password="pw-alice")
    assert code == 2
    assert "after STLS" in account(doc)["error"], account(doc)

    # A certificate for another name.
    other = dovecot({"alice": "pw-alice"}, cert=pki.other.cert, key=pki.other.key)
    code, doc, _, _ = run_fetch(postie_bin, ["--server", f"{HOST}:{other.tls_port}", "--tls", "implicit",
                                             "--ca-file", str(pki.cafile), *base],
                                password="pw-alice")
    assert code == 2 and "TLS handshake" in account(doc)["error"], account(doc)

    # A server without STLS: refused, never a plaintext login.
    plain = dovecot({"alice": "pw-alice"})
    code, doc, _, _ = run_fetch(postie_bin, ["--server", f"{HOST}:{plain.port}", "--tls", "starttls", *base],
                                password="pw-alice")
    assert code == 2 and "does not offer STLS" in account(doc)["error"], account(doc)
    assert "Login: user=<alice>" not in plain.log_tail(200)
    assert local_messages(out) == []
