"""`postie fetch` against Dovecot (Debian's dovecot-pop3d) and against `postie serve`.

The issue's must-show items:
1. byte-exact over STLS and over implicit TLS (995-style), `--keep` twice fetches nothing new;
2. SIGKILL at random moments, re-run until done: nothing lost, nothing stored twice, nothing
   deleted on the server before it was safe locally;
3. a fetch that fails part-way (a message the server refuses, a dropped connection) exits
   non-zero and its JSON summary says what happened.
"""

from __future__ import annotations

import json
import os
import poplib
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import note
from kits.mail import canonical_crlf, corpus, Maildir, numbered_message
from kits.scripted import ScriptedServer, ScriptedSession
from kits.tls import client_context, make_pki

HOST = "127.0.0.1"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def run_fetch(postie_bin: Path, args: list[str], password: str | None = None, timeout: float = 120,
              env_extra: dict | None = None) -> tuple[int, dict | None, str, str]:
    """Runs `postie fetch ... --json`; returns (exit code, parsed JSON or None, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("POSTIE_PASSWORD", None)
    if password is not None:
        env["POSTIE_PASSWORD"] = password
    env.update(env_extra or {})
    r = subprocess.run([str(postie_bin), "fetch", *args, "--json"], capture_output=True, timeout=timeout, env=env)
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    try:
        doc = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        doc = None
    return r.returncode, doc, out, err


def account(doc: dict, i: int = 0) -> dict:
    return doc["accounts"][i]


def local_messages(maildir: Path) -> list[bytes]:
    out = []
    for sub in ("new", "cur"):
        p = maildir / sub
        if p.is_dir():
            out.extend(f.read_bytes() for f in sorted(p.iterdir()))
    return out


def server_messages(md: Maildir) -> list[bytes]:
    return [p.read_bytes() for p in md.message_files()]


def expected_local(original: bytes) -> bytes:
    """What a Maildir delivery agent stores: POP3 adds a line end to a message that had none."""
    return original if original.endswith(b"\n") or original == b"" else original + b"\n"


def parse_mboxrd(data: bytes) -> list[tuple[bytes, bytes]]:
    """(From line, message) pairs of an mboxrd file, quoting undone."""
    msgs: list[tuple[bytes, list[bytes]]] = []
    for line in data.split(b"\n")[:-1]:
        if line.startswith(b"From "):
            msgs.append((line, []))
            continue
        assert msgs, "mbox does not start with a From line"
        if line.lstrip(b">").startswith(b"From ") and line.startswith(b">"):
            line = line[1:]
        msgs[-1][1].append(line)
    out = []
    for frm, lines in msgs:
        assert lines and lines[-1] == b"", "each mbox message ends with a blank line"
        out.append((frm, b"\n".join(lines[:-1]) + b"\n"))
    return out


def write_password(tmp: Path, name: str, password: str) -> Path:
    p = tmp / f"{name}.password"
    p.write_text(password + "\n")
    p.chmod(0o600)
    return p


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


# --------------------------------------------------------------------------
# 2. SIGKILL at random moments
# --------------------------------------------------------------------------


def kill_loop(postie_bin: Path, tmp_path: Path, server_md: Maildir, deliver, port: int, user: str, password: str,
              budget: float, seed: int) -> dict:
    """Rounds of: deliver a fresh batch to the server, then run fetch (no --keep) and SIGKILL it
    after a random delay, again and again until a run completes. After every run or kill: no
    message stored twice locally, and every message either still on the server or stored
    locally (so none was deleted before it was safe). Stops starting rounds after `budget` s."""
    rng = random.Random(seed)
    out = tmp_path / f"{user}-Maildir"
    pw = write_password(tmp_path, user, password)
    cmd = [str(postie_bin), "fetch", "--server", f"{HOST}:{port}", "--tls", "none", "--user", user,
           "--password-file", str(pw), "--to", f"maildir:{out}", "--json"]
    want: list[bytes] = []
    deadline = time.monotonic() + budget
    kills = runs = rounds = 0
    while rounds == 0 or time.monotonic() < deadline:
        batch = bulk_messages(30, seed * 1000 + rounds, first=rounds * 1000)
        deliver(batch)
        want += [expected_local(m) for m in batch]
        rounds += 1
        finished = False
        stuck = 0  # kills in a row that stored nothing: on a slow machine, give the next run longer
        while not finished:
            assert time.monotonic() < deadline + 300, f"round {rounds} did not finish ({runs} runs, {kills} kills)"
            runs += 1
            before = len(local_messages(out))
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                _, stderr = proc.communicate(timeout=rng.uniform(0.0, min(10.0, 0.6 * 1.5 ** stuck)))
                assert proc.returncode in (0, 1, 2), (proc.returncode, stderr.decode(errors="replace"))
                finished = proc.returncode == 0
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills += 1
            local = local_messages(out)
            stuck = 0 if len(local) > before else stuck + 1
            assert len(local) == len(set(local)), "a message was stored twice locally"
            assert set(local) <= set(want), "something that is not a server message was stored"
            on_server = {expected_local(m) for m in server_messages(server_md)}
            lost = [m for m in want if m not in on_server and m not in local]
            assert not lost, f"{len(lost)} message(s) neither on the server nor stored locally"
        assert sorted(local_messages(out)) == sorted(want)
        assert server_messages(server_md) == []
    return {"rounds": rounds, "runs": runs, "kills": kills, "messages": len(want)}


def bulk_messages(n: int, seed: int, first: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [numbered_message(first + i, rng, size=rng.choice([2000, 20000, 60000, 150000])) for i in range(n)]


def test_sigkill_at_random_moments_against_postie(env, postie_bin, tmp_path):
    from conftest import ALICE
    md = env.maildir("alice")

    def deliver(batch):
        for m in batch:
            md.deliver(m)

    c = kill_loop(postie_bin, tmp_path, md, deliver, env.port, ALICE[0], ALICE[1], budget=20, seed=1)
    note(f"fetch SIGKILL loop vs postie: {c['rounds']} rounds, {c['messages']} messages, {c['runs']} runs, {c['kills']} SIGKILLs")
    assert c["kills"] >= 10


def test_sigkill_at_random_moments_against_dovecot(dovecot, postie_bin, tmp_path):
    d = dovecot({"carol": "pw-carol"})

    def deliver(batch):
        for m in batch:
            d.maildir("carol").deliver(m)
        d.fix_ownership()

    c = kill_loop(postie_bin, tmp_path, d.maildir("carol"), deliver, d.port, "carol", "pw-carol", budget=20, seed=2)
    note(f"fetch SIGKILL loop vs dovecot: {c['rounds']} rounds, {c['messages']} messages, {c['runs']} runs, {c['kills']} SIGKILLs")
    assert c["kills"] >= 10


# --------------------------------------------------------------------------
# 3. partial failures: a refused message, a dropped connection, a broken server
# --------------------------------------------------------------------------


class ScriptedPOP3(ScriptedServer):
    """A misbehaving POP3 server: fixed messages and UIDLs, RETR refused or the connection
    dropped for chosen messages. Records the commands it received."""

    replies = {**ScriptedServer.replies, "DELE": "+OK"}

    def __init__(self, messages: list[bytes], uidls: list[str | None], refuse: set[int] = frozenset(),
                 drop_on: int | None = None, flood_on: int | None = None):
        self.flood_on = flood_on
        self.messages = messages
        self.uidls = uidls
        self.refuse = refuse
        self.drop_on = drop_on
        super().__init__()

    def command(self, s: ScriptedSession, word: str, args: list[str]) -> bool:
        if word == "UIDL":
            s.listing([f"{i + 1} {u}" for i, u in enumerate(self.uidls) if u is not None])
        elif word == "LIST":
            s.listing([f"{i + 1} {len(canonical_crlf(m))}" for i, m in enumerate(self.messages)])
        elif word == "RETR":
            n = int(args[0])
            if n in self.refuse:
                s.reply("-ERR [SYS/PERM] Message could not be read")
            elif n == self.flood_on:
                s.send(b"+OK\r\n" + (b"x" * 98 + b"\r\n") * 40000)
                return False
            elif n == self.drop_on:
                s.send(b"+OK\r\nSubject: half\r\n")
                return False
            else:
                s.message(self.messages[n - 1])
        else:
            return super().command(s, word, args)
        return True


@pytest.fixture
def scripted():
    servers = []

    def make(*a, **kw):
        s = ScriptedPOP3(*a, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def fetch_from(postie_bin: Path, s: ScriptedPOP3, out: Path) -> tuple[int, dict | None, str, str]:
    """`postie fetch` from the scripted server `s` into the Maildir `out`."""
    return run_fetch(postie_bin, ["--server", f"{HOST}:{s.port}", "--tls", "none", "--user", "u",
                                  "--to", f"maildir:{out}"], password="pw")


def msgs(n: int) -> list[bytes]:
    return [f"Subject: m{i}\n\nbody {i}\n".encode() for i in range(1, n + 1)]


def test_refused_message_is_reported_and_kept(scripted, postie_bin, tmp_path):
    s = scripted(msgs(4), ["u1", "u2", "u3", "u4"], refuse={2})
    out = tmp_path / "Maildir"
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 1, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["failed"], a["deleted"]) == ("partial", 3, 1, 3), a
    assert a["failures"] == [{"number": 2, "uidl": "u2", "reason": "RETR refused: -ERR [SYS/PERM] Message could not be read"}]
    assert "DELE 2" not in s.commands and "DELE 1" in s.commands and "QUIT" in s.commands
    assert doc["exit_code"] == 1


def test_dropped_connection_deletes_nothing_and_says_where(scripted, postie_bin, tmp_path):
    s = scripted(msgs(5), ["u1", "u2", "u3", "u4", "u5"], drop_on=3)
    out = tmp_path / "Maildir"
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 2, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["deleted"]) == ("failed", 2, 0), a
    assert "RETR 3" in a["error"] and "closed the connection" in a["error"], a
    assert "QUIT" not in s.commands
    assert len(local_messages(out)) == 2
    # Once the server is healthy again, the re-run fetches only the rest and deletes all five.
    s.drop_on = None
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 0, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["skipped"], a["deleted"]) == ("ok", 3, 2, 5), a
    assert sorted(local_messages(out)) == sorted(msgs(5))


def test_a_message_far_larger_than_listed_ends_the_session(scripted, postie_bin, tmp_path):
    s = scripted(msgs(3), ["u1", "u2", "u3"], flood_on=2)
    out = tmp_path / "Maildir"
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 2, err
    a = account(doc)
    assert (a["status"], a["fetched"], a["deleted"]) == ("failed", 1, 0), a
    assert "RETR 2: the server sent over" in a["error"], a
    assert "QUIT" not in s.commands
    assert len(local_messages(out)) == 1


def test_duplicate_and_missing_uidls_are_left_alone_with_a_warning(scripted, postie_bin, tmp_path):
    s = scripted(msgs(5), ["u1", "same", "same", None, "u5"])
    out = tmp_path / "Maildir"
    code, doc, _, err = fetch_from(postie_bin, s, out)
    assert code == 1, err
    a = account(doc)
    assert (a["fetched"], a["failed"], a["deleted"]) == (2, 3, 2), a
    assert any("same UIDL same" in w for w in a["warnings"]), a
    assert any("message 4 has no UIDL" in w for w in a["warnings"]), a
    assert "warning" in err
    for n in (2, 3, 4):
        assert f"RETR {n}" not in s.commands and f"DELE {n}" not in s.commands


def test_unreadable_message_in_dovecot_fails_part_way(dovecot, postie_bin, tmp_path):
    d = dovecot({"dave": "pw-dave"})
    names = [d.maildir("dave").deliver(f"Subject: {i}\n\nbody {i}\n".encode()) for i in range(4)]
    d.fix_ownership()
    # Let Dovecot index the mailbox first (names move to cur/), then take read access away from one file.
    p = poplib.POP3(d.host, d.port, timeout=10)
    p.user("dave")
    p.pass_("pw-dave")
    p.quit()
    victim = next(f for f in d.maildir("dave").message_files() if f.name.startswith(names[1]))
    victim.chmod(0)
    out = tmp_path / "Maildir"
    code, doc, _, err = run_fetch(postie_bin, ["--server", f"{HOST}:{d.port}", "--tls", "none", "--user", "dave",
                                               "--to", f"maildir:{out}"], password="pw-dave")
    a = account(doc)
    # Dovecot answers "-ERR Message 2 expunged." for a file it cannot read.
    assert code == 1, a
    assert (a["status"], a["fetched"], a["failed"], a["deleted"]) == ("partial", 3, 1, 3), a
    assert [(f["number"], f["reason"].startswith("RETR refused: -ERR")) for f in a["failures"]] == [(2, True)], a
    assert doc["exit_code"] == 1
    # Nothing was lost: the refused message is still in the server's Maildir, the rest are local.
    assert victim.exists()
    assert len(local_messages(out)) == 3
    assert [p.name for p in d.maildir("dave").message_files()] == [victim.name]


# --------------------------------------------------------------------------
# state loss, several accounts, exit codes
# --------------------------------------------------------------------------


def test_lost_state_is_detected_and_rebuilt(env, postie_bin, tmp_path):
    from conftest import ALICE
    for m in msgs(3):
        env.maildir("alice").deliver(m)
    out = tmp_path / "Maildir"
    pw = write_password(tmp_path, "alice", ALICE[1])
    args = ["--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0], "--password-file", str(pw),
            "--to", f"maildir:{out}", "--keep"]
    code, doc, _, err = run_fetch(postie_bin, args)
    assert code == 0 and account(doc)["fetched"] == 3, err
    state = next(out.glob("postie-fetch-*.state"))
    state.unlink()
    code, doc, _, err = run_fetch(postie_bin, args)
    assert code == 3
    assert "state file" in account(doc)["error"] and "missing" in account(doc)["error"]
    assert "--rebuild-state" in account(doc)["error"]
    assert len(local_messages(out)) == 3
    code, doc, _, err = run_fetch(postie_bin, args + ["--rebuild-state"])
    assert code == 0, err
    assert (account(doc)["fetched"], account(doc)["skipped"]) == (0, 3)
    assert len(local_messages(out)) == 3


def test_mark_existing_then_only_new_mail(env, postie_bin, tmp_path):
    from conftest import ALICE
    for m in msgs(3):
        env.maildir("alice").deliver(m)
    out = tmp_path / "Maildir"
    args = ["--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0], "--to", f"maildir:{out}"]
    code, doc, _, err = run_fetch(postie_bin, args + ["--mark-existing"], password=ALICE[1])
    assert code == 0 and (account(doc)["marked"], account(doc)["fetched"], account(doc)["deleted"]) == (3, 0, 0), err
    env.maildir("alice").deliver(b"Subject: new\n\nnew one\n")
    code, doc, _, err = run_fetch(postie_bin, args, password=ALICE[1])
    # Without --keep the new message is fetched and deleted; marked ones have no local copy and stay.
    assert code == 0, err
    assert (account(doc)["fetched"], account(doc)["skipped"], account(doc)["deleted"]) == (1, 3, 1)
    assert local_messages(out) == [b"Subject: new\n\nnew one\n"]
    assert len(env.maildir("alice").message_files()) == 3


def test_config_file_several_accounts_in_parallel_worst_exit_code(env, dovecot, postie_bin, tmp_path):
    from conftest import ALICE, BOB
    d = dovecot({"erin": "pw-erin"})
    for m in msgs(2):
        env.maildir("alice").deliver(m)
        d.maildir("erin").deliver(m)
    d.fix_ownership()
    pa = write_password(tmp_path, "alice", ALICE[1])
    pe = write_password(tmp_path, "erin", "pw-erin")
    pb = write_password(tmp_path, "bob", "wrong password")
    cfg = tmp_path / "fetch.yaml"
    cfg.write_text(f"""
accounts:
  - server: {HOST}:{env.port}
    tls: none
    user: {ALICE[0]}
    password-file: {pa}
    to: maildir:{tmp_path}/alice
    keep: true
  - server: {HOST}:{d.port}
    tls: none
    user: erin
    password-file: {pe}
    to: mbox:{tmp_path}/erin.mbox
  - server: {HOST}:{env.port}
    tls: none
    user: {BOB[0]}
    password-file: {pb}
    to: maildir:{tmp_path}/bob
""")
    code, doc, _, err = run_fetch(postie_bin, ["--config", str(cfg)])
    assert code == 2, err
    statuses = [(a["account"].split("@")[0], a["status"], a["fetched"]) for a in doc["accounts"]]
    assert statuses == [(ALICE[0], "ok", 2), ("erin", "ok", 2), (BOB[0], "failed", 0)], statuses
    assert "login as bob failed" in doc["accounts"][2]["error"]
    assert doc["exit_code"] == 2
    # Human output: one line per account.
    r = subprocess.run([str(postie_bin), "fetch", "--config", str(cfg)], capture_output=True, timeout=60)
    assert r.returncode == 2
    assert len(r.stdout.decode().strip().splitlines()) == 3
    assert "skipped 2" in r.stdout.decode().splitlines()[0]


def test_password_never_on_the_command_line(postie_bin, tmp_path):
    r = subprocess.run([str(postie_bin), "fetch", "--server", f"{HOST}:1", "--user", "u", "--to", f"maildir:{tmp_path}/m"],
                       capture_output=True, timeout=30, env={k: v for k, v in os.environ.items() if k != "POSTIE_PASSWORD"})
    assert r.returncode != 0
    assert b"--password-file" in r.stderr and b"POSTIE_PASSWORD" in r.stderr
    r = subprocess.run([str(postie_bin), "fetch", "--password", "x"], capture_output=True, timeout=30)
    assert r.returncode != 0


def test_keep_with_delete_larger_removes_only_big_messages(env, postie_bin, tmp_path):
    from conftest import ALICE
    small = b"Subject: small\n\n" + b"s" * 300 + b"\n"
    big = b"Subject: big\n\n" + b"b" * 5000 + b"\n"
    env.maildir("alice").deliver(small)
    env.maildir("alice").deliver(big)
    out = tmp_path / "Maildir"
    args = ["--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0], "--to", f"maildir:{out}",
            "--keep", "--delete-larger", "1k"]
    code, doc, _, err = run_fetch(postie_bin, args, password=ALICE[1])
    assert code == 0, err
    assert (account(doc)["fetched"], account(doc)["deleted"]) == (2, 1)
    assert [p.read_bytes() for p in env.maildir("alice").message_files()] == [small]
    assert sorted(local_messages(out)) == sorted([small, big])


def test_poll_fetches_again_until_interrupted(env, postie_bin, tmp_path):
    from conftest import ALICE
    env.maildir("alice").deliver(b"Subject: first\n\none\n")
    out = tmp_path / "Maildir"
    envv = dict(os.environ, POSTIE_PASSWORD=ALICE[1])
    proc = subprocess.Popen([str(postie_bin), "fetch", "--server", f"{HOST}:{env.port}", "--tls", "none",
                             "--user", ALICE[0], "--to", f"maildir:{out}", "--poll", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=envv)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(l.decode() for l in proc.stdout), daemon=True)
    reader.start()

    def wait_for(cond) -> None:
        deadline = time.monotonic() + 20
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        wait_for(lambda: any("fetched 1" in l for l in lines))
        env.maildir("alice").deliver(b"Subject: second\n\ntwo\n")
        wait_for(lambda: sum("fetched 1" in l for l in lines) >= 2)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        reader.join(timeout=5)
    assert sum("fetched 1," in l and ": ok: " in l for l in lines) == 2, lines
    assert sorted(local_messages(out)) == sorted([b"Subject: first\n\none\n", b"Subject: second\n\ntwo\n"])


def test_progress_bar_only_on_a_terminal(env, postie_bin, tmp_path):
    from conftest import ALICE
    for m in msgs(3):
        env.maildir("alice").deliver(m)
    envv = dict(os.environ, POSTIE_PASSWORD=ALICE[1])
    args = [str(postie_bin), "fetch", "--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0], "--keep"]
    # Not a terminal: only the summary line, nothing on standard error.
    r = subprocess.run(args + ["--to", f"maildir:{tmp_path}/a"], capture_output=True, timeout=60, env=envv)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout.decode().count("\n") == 1
    # On a terminal (script(1) gives it a pty): a bar that counts up, then erased.
    cmd = " ".join(args + ["--to", f"maildir:{tmp_path}/b"])
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=60, env=envv)
    assert r.returncode == 0, r.stdout
    out = r.stdout.decode()
    assert "[####################] 3/3" in out and "1/3" in out, out
    assert "\r\x1b[K" in out and ": ok: fetched 3" in out
