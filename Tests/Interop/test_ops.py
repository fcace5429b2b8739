"""Operations: the Prometheus endpoint, the alert rules, `postie config check` and the systemd unit.

a. `postie serve --metrics`: a scripted sequence of sessions, then every counter must equal
   exactly what the script did (the text format is parsed here, stdlib only); a second server
   with a low lockout threshold checks the lockout counters; a TLS server checks the STLS,
   implicit-TLS and handshake-failure counters and the certificate-expiry gauge (also after
   SIGHUP).
b. `promtool check rules` / `promtool test rules` on contrib/prometheus/.
c. `postie config check`: problems named by flag or by FILE: key, exit status 1; a good
   configuration exits 0 and prints the effective settings.
d. `systemd-analyze verify` (and `security`) on contrib/systemd/postie.service, and the
   server running with the kernel's MemoryDenyWriteExecute (PR_SET_MDWE) as the unit asks.

Tools: promtool (Debian package `prometheus`), systemd-analyze (`systemd`), openssl.
A missing tool fails the test, as everywhere in this suite.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import note, REPO
from kits.launcher import free_port, PostieServer
from kits.mail import canonical_crlf, Maildir, PasswdFile
from kits.pop3 import POP3Raw, ProtocolError
from kits.tls import client_context, make_pki, start_tls_server

HOST = "127.0.0.1"
RULES = REPO / "contrib" / "prometheus" / "postie-rules.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "postie-rules.test.yml"
UNIT = REPO / "contrib" / "systemd" / "postie.service"
SHIPPED_BIN = "/usr/local/bin/postie"

# Command keywords the server counts under their own name; anything else is "unknown".
KNOWN_COMMANDS = {"USER", "PASS", "APOP", "AUTH", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP",
                  "RSET", "TOP", "UIDL", "CAPA", "STLS", "UTF8"}

LOCKED_OUT = "-ERR [SYS/TEMP] Too many failed logins from your IP address; try again later."

# Fast failures, no lockout: the counting run makes several failed logins from 127.0.0.1.
QUICK_CONFIG = """\
auth_failure_delay: 0.01
auth_failure_max_delay: 0.02
lockout_threshold: 1000
lockout_window: 300
lockout_duration: 900
"""


def need(tool: str) -> str:
    p = shutil.which(tool)
    if p is None:
        pytest.fail(f"{tool} is missing (Debian: {'prometheus' if tool == 'promtool' else 'systemd'}); "
                    f"scripts/test installs it", pytrace=False)
    return p


def run(cmd: list, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


# --------------------------------------------------------------------------
# Prometheus text format (version 0.0.4), parsed strictly
# --------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}.get(m.group(1), "\\" + m.group(1)), v)


def _float(s: str) -> float:
    return float(s)  # also "+Inf", "-Inf" and "NaN"


Key = tuple[str, frozenset]


@dataclass
class Scrape:
    samples: dict[Key, float]
    types: dict[str, str]
    text: str

    def get(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when the series does not exist (yet):
        counters with labels appear at their first increment."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> dict[frozenset, float]:
        return {k[1]: v for k, v in self.samples.items() if k[0] == name}

    def family_of(self, name: str) -> str | None:
        for suffix in ("_bucket", "_sum", "_count", ""):
            if suffix and not name.endswith(suffix):
                continue
            base = name[: len(name) - len(suffix)] if suffix else name
            if base in self.types:
                return base
        return None


def parse_metrics(text: str) -> Scrape:
    """Parses the exposition format and checks its rules: every sample belongs to a family
    with a TYPE line, counter families end in _total, no sample appears twice, histograms
    are cumulative with +Inf equal to _count."""
    samples: dict[Key, float] = {}
    types: dict[str, str] = {}
    problems: list[str] = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                if parts[2] in types:
                    problems.append(f"line {n}: second TYPE line for {parts[2]}")
                types[parts[2]] = parts[3].strip()
            continue
        m = _SAMPLE.match(line)
        if not m:
            problems.append(f"line {n}: not a sample: {line!r}")
            continue
        name, labelstr, value = m.group(1), m.group(2) or "", m.group(3)
        labels: dict[str, str] = {}
        pos = 0
        while pos < len(labelstr):
            lm = _LABEL.match(labelstr, pos)
            if not lm or lm.end() == pos:
                problems.append(f"line {n}: bad labels {labelstr!r}")
                break
            if lm.group(1) in labels:
                problems.append(f"line {n}: label {lm.group(1)} twice")
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
        try:
            v = _float(value)
        except ValueError:
            problems.append(f"line {n}: bad value {value!r}")
            continue
        key = (name, frozenset(labels.items()))
        if key in samples:
            problems.append(f"line {n}: duplicate sample {line!r}")
        samples[key] = v
    s = Scrape(samples, types, text)
    for name, _ in samples:
        fam = s.family_of(name)
        if fam is None:
            problems.append(f"sample {name} has no # TYPE line")
    for fam, typ in types.items():
        if typ == "counter" and not fam.endswith("_total"):
            problems.append(f"counter {fam} does not end in _total")
        if typ == "histogram":
            groups: dict[frozenset, list[tuple[float, float]]] = {}
            for (name, labels), v in samples.items():
                if name == fam + "_bucket":
                    d = dict(labels)
                    le = d.pop("le")
                    groups.setdefault(frozenset(d.items()), []).append((_float(le), v))
            for rest, buckets in groups.items():
                buckets.sort()
                counts = [c for _, c in buckets]
                if counts != sorted(counts):
                    problems.append(f"{fam}{dict(rest)}: buckets not cumulative: {buckets}")
                if not buckets or buckets[-1][0] != math.inf:
                    problems.append(f"{fam}{dict(rest)}: no +Inf bucket")
                elif buckets[-1][1] != samples.get((fam + "_count", rest)):
                    problems.append(f"{fam}{dict(rest)}: +Inf bucket {buckets[-1][1]} != _count "
                                    f"{samples.get((fam + '_count', rest))}")
                if (fam + "_sum", rest) not in samples:
                    problems.append(f"{fam}{dict(rest)}: no _sum")
    assert not problems, "malformed /metrics:\n" + "\n".join(problems[:20]) + "\n---\n" + text[:3000]
    return s


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    """GET http://127.0.0.1:PORT/PATH without any proxy: (status, content type, body)."""
    try:
        with _NO_PROXY.open(f"http://{HOST}:{port}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode(errors="replace")


def scrape(port: int) -> Scrape:
    status, ctype, body = fetch(port)
    assert status == 200, f"GET /metrics: HTTP {status}: {body[:300]}"
    assert ctype.startswith("text/plain"), f"GET /metrics: Content-Type {ctype!r}, want text/plain (format 0.0.4)"
    return parse_metrics(body)


def wait_metrics(port: int, until, timeout: float = 10.0, what: str = "") -> Scrape:
    """Scrapes until `until(scrape)` holds (sessions end asynchronously after QUIT or a drop)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = scrape(port)
        except (OSError, urllib.error.URLError) as e:
            s = None
            err = e
        if s is not None and until(s):
            return s
        if time.monotonic() > deadline:
            if s is None:
                raise AssertionError(f"/metrics on port {port} not reachable: {err}")
            return s  # the caller's assertions say what is wrong
        time.sleep(0.05)


def compare(scrape_: Scrape, expected: dict[tuple[str, tuple], float], families: list[str]) -> list[str]:
    """Every expected sample must have its value; every other series of `families` must be 0."""
    bad = []
    for (name, labels), want in expected.items():
        got = scrape_.get(name, **dict(labels))
        if got != want:
            bad.append(f"{name}{dict(labels)} = {got:g}, want {want:g}")
    for fam in families:
        for labels, v in scrape_.series(fam).items():
            if (fam, tuple(sorted(labels))) not in {(n, tuple(sorted(l))) for n, l in expected} and v != 0:
                bad.append(f"{fam}{dict(labels)} = {v:g}, want 0 (the script did nothing that counts there)")
    return bad


def E(name: str, **labels: str) -> tuple[str, tuple]:
    return (name, tuple(sorted(labels.items())))


# --------------------------------------------------------------------------
# A POP3 client that counts what it does
# --------------------------------------------------------------------------


@dataclass
class Tally:
    connections: int = 0
    commands: Counter = field(default_factory=Counter)


class Client(POP3Raw):
    """POP3Raw that counts each command it sends under the label the server must use."""

    def __init__(self, tally: Tally, port: int, source: str | None = None, **kw):
        tally.connections += 1
        self.tally = tally
        super().__init__(HOST, port, source=source, **kw)

    def sendline(self, line) -> None:
        text = line.decode() if isinstance(line, bytes) else line
        words = text.split()
        kw = words[0].upper() if words else ""
        self.tally.commands[kw if kw in KNOWN_COMMANDS else "unknown"] += 1
        super().sendline(line)


def start_server(postie, tmp: Path, config: str, users: dict[str, str], *, extra: list[str] | None = None,
                 name: str = "ops"):
    """A server with these PLAIN users, the config text and a metrics endpoint; waits until
    /metrics answers. Returns (server, metrics port)."""
    pw = PasswdFile(tmp / "passwd")
    for u, p in users.items():
        pw.add(u, p, scheme="PLAIN")
    pw.write()
    os.chmod(pw.path, 0o600)
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(config)
    mport = free_port()
    s = postie.start(passwd=pw.path, maildir=str(tmp / "mail" / "%u"),
                     extra=["--config", str(cfg), "--metrics", f"{HOST}:{mport}"] + (extra or []), name=name)
    wait_metrics(mport, lambda sc: True)
    return s, mport


# --------------------------------------------------------------------------
# a. Counters equal what the script did
# --------------------------------------------------------------------------

MSGS = {
    "alice": [
        b"From: a@example.org\nSubject: one\n\nfirst message\n",
        b"From: a@example.org\nSubject: two\n\n.leading dot\n..two dots\n.\nend\n",
        b"From: a@example.org\nSubject: three\nX-Long: " + b"x" * 300 + b"\n\nbody 1\nbody 2\nbody 3\n",
        b"From: a@example.org\nSubject: four\n\nno final newline",
    ],
    "bob": [
        b"From: b@example.org\nSubject: b1\n\n" + b"line of bob's mail\n" * 50,
        b"From: b@example.org\nSubject: b2\n\nshort\n",
    ],
    "carol": [b"From: c@example.org\nSubject: c1\n\nhello carol\n"],
}
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def test_metrics_count_exactly_what_the_clients_did(postie, tmp_path):
    for user, msgs in MSGS.items():
        md = Maildir(tmp_path / "mail" / user).create()
        for m in msgs:
            md.deliver(m)
    # 127.0.0.1 is trusted for plaintext logins, 127.0.0.9 is not.
    config = QUICK_CONFIG + 'trusted_networks: ["127.0.0.1/32"]\n'
    s, mport = start_server(postie, tmp_path, config, USERS)
    port = s.port
    listener = f"{HOST}:{port}"

    # Before any client: the readiness probe's connection only; every other counter 0.
    base = wait_metrics(mport, lambda sc: sc.get("pop3_connections_total", listener=listener, tls="none") == 1)
    assert base.get("pop3_connections_total", listener=listener, tls="none") == 1, base.text
    assert "pop3_tls_certificate_expiry_timestamp_seconds" not in base.types, \
        "a server without TLS exports a certificate expiry"
    for fam in ("pop3_logins_total", "pop3_commands_total", "pop3_sent_bytes_total", "pop3_messages_deleted_total",
                "pop3_connections_refused_total", "pop3_sessions_active"):
        assert all(v == 0 for v in base.series(fam).values()), f"{fam} not 0 at start: {base.series(fam)}"

    t = Tally()
    retr_bytes = top_bytes = 0
    deleted = 0
    logins_ok = 0
    failures = 0
    sessions_ended = 0
    t0 = time.monotonic()

    # S1: alice reads, tops, deletes two and commits.
    c = Client(t, port)
    c.login("alice", USERS["alice"])
    logins_ok += 1
    n, size = c.stat()
    assert n == 4
    sizes = {k: int(v) for k, v in c.listing("LIST").items()}
    c.listing("UIDL")
    assert sum(sizes.values()) == size
    for i in (1, 2):
        body = c.retr(i)
        assert body == canonical_crlf(MSGS["alice"][i - 1]) and len(body) == sizes[i]
        retr_bytes += len(body)
    top_bytes += len(c.top(3, 0))
    top_bytes += len(c.top(4, 2))
    c.ok("DELE 1")
    c.ok("DELE 2")
    c.ok("noop")  # keywords are case-insensitive: counted as NOOP
    assert c.cmd("XYZZY").startswith("-ERR")  # unknown
    r, caps = c.multi("CAPA")
    assert r.startswith("+OK")
    assert c.quit().startswith("+OK")
    c.close()
    deleted += 2
    sessions_ended += 1

    # S2: bob deletes one, RSET, deletes the other, commits one deletion.
    c = Client(t, port)
    c.login("bob", USERS["bob"])
    logins_ok += 1
    retr_bytes += len(c.retr(1))
    retr_bytes += len(c.retr(2))
    top_bytes += len(c.top(1, 1))
    c.ok("DELE 1")
    c.ok("RSET")
    c.ok("DELE 2")
    assert c.cmd("LAST").startswith("-ERR")  # RFC 1725's LAST is gone: unknown
    assert c.quit().startswith("+OK")
    c.close()
    deleted += 1
    sessions_ended += 1

    # S3: bob deletes and drops the connection: nothing is deleted, the session still ends.
    c = Client(t, port)
    c.login("bob", USERS["bob"])
    logins_ok += 1
    c.ok("DELE 1")
    c.abort()
    sessions_ended += 1

    # Four failed logins in two connections (wrong password, unknown user).
    c = Client(t, port)
    for user, pw in (("alice", "wrong"), ("nosuchuser", "whatever")):
        c.ok(f"USER {user}")
        assert c.cmd(f"PASS {pw}").startswith("-ERR [AUTH]")
        failures += 1
    c.quit()
    c.close()
    c = Client(t, port)
    assert c.cmd("HELO there").startswith("-ERR")  # unknown, before login
    for user, pw in (("bob", "wrong"), ("carol", "Carol-PW")):
        c.ok(f"USER {user}")
        assert c.cmd(f"PASS {pw}").startswith("-ERR [AUTH]")
        failures += 1
    c.quit()
    c.close()

    # S4: carol logs in and stays (the one open session) ...
    open_session = Client(t, port)
    open_session.login("carol", USERS["carol"])
    logins_ok += 1
    open_session.ok("STAT")
    # ... so her second session is refused [IN-USE].
    c = Client(t, port)
    c.ok("USER carol")
    r = c.cmd(f"PASS {USERS['carol']}")
    assert r.startswith("-ERR [IN-USE]"), r
    c.quit()
    c.close()

    # From an untrusted address, plaintext USER is refused.
    c = Client(t, port, source="127.0.0.9")
    r, caps = c.multi("CAPA")
    assert r.startswith("+OK") and b"USER" not in caps, caps
    r = c.cmd("USER alice")
    assert r.startswith("-ERR [AUTH] Plaintext authentication disallowed"), r
    c.quit()
    c.close()

    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= sessions_ended
                      and sc.get("pop3_sessions_active") <= 1)
    elapsed = time.monotonic() - t0
    expected = {
        E("pop3_connections_total", listener=listener, tls="none"): 1 + t.connections,
        E("pop3_logins_total", result="success", mechanism="USER", tls="no"): logins_ok,
        E("pop3_logins_total", result="failure", mechanism="USER", tls="no"): failures,
        E("pop3_logins_total", result="refused", mechanism="USER", tls="no"): 1,
        E("pop3_in_use_refusals_total"): 1,
        E("pop3_plaintext_refused_total"): 1,
        E("pop3_lockouts_total"): 0,
        E("pop3_sessions_active"): 1,
        E("pop3_sent_bytes_total", command="RETR"): retr_bytes,
        E("pop3_sent_bytes_total", command="TOP"): top_bytes,
        E("pop3_messages_deleted_total"): deleted,
        E("pop3_session_duration_seconds_count"): sessions_ended,
    }
    for kw, n in t.commands.items():
        expected[E("pop3_commands_total", command=kw)] = n
    bad = compare(sc, expected, ["pop3_connections_total", "pop3_logins_total", "pop3_commands_total",
                                 "pop3_sent_bytes_total", "pop3_connections_refused_total",
                                 "pop3_starttls_total", "pop3_tls_handshake_failures_total"])
    dsum = sc.get("pop3_session_duration_seconds_sum")
    if not (0 < dsum < elapsed + 1):
        bad.append(f"pop3_session_duration_seconds_sum = {dsum}, want between 0 and {elapsed:.2f}")
    # The buckets are cumulative: they never decrease, and +Inf holds every ended session.
    # (Which bucket a session falls in depends on the machine's speed, so none is named.)
    buckets = sorted((_float(dict(l)["le"]), v) for (n_, l), v in sc.samples.items()
                     if n_ == "pop3_session_duration_seconds_bucket")
    counts = [v for _, v in buckets]
    if counts != sorted(counts) or not buckets or buckets[-1] != (float("inf"), sessions_ended):
        bad.append(f"session-duration buckets {buckets}: want non-decreasing counts ending at +Inf = {sessions_ended}")
    assert not bad, ("metrics differ from what the clients did:\n  " + "\n  ".join(bad)
                     + f"\nclient tally: {dict(t.commands)}, {t.connections} connections\n---\n{sc.text}")

    # Nothing but /metrics is served there.
    status, _, _ = fetch(mport, "/")
    assert status == 404, f"GET / on the metrics port: HTTP {status}"

    # Closing the open session brings the gauge back to 0 and adds its duration.
    open_session.quit()
    open_session.close()
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_sessions_active") == 0)
    assert sc.get("pop3_sessions_active") == 0
    assert sc.get("pop3_session_duration_seconds_count") == sessions_ended + 1
    assert sc.get("pop3_commands_total", command="QUIT") == t.commands["QUIT"]


def test_metrics_are_off_by_default(postie, tmp_path):
    pw = PasswdFile(tmp_path / "passwd").add("bob", "pw", scheme="PLAIN")
    pw.write()
    s = postie.start(passwd=pw.path, maildir=str(tmp_path / "mail" / "%u"))
    time.sleep(0.2)
    assert "Serving metrics" not in s.log_text(), f"a metrics endpoint without --metrics:\n{s.log_tail()}"


def test_login_mechanism_label_follows_the_method(postie, tmp_path):
    """pop3_logins_total{mechanism} is the method the log line names (method=USER, PLAIN, APOP)."""
    import base64
    import hashlib

    Maildir(tmp_path / "mail" / "bob").create().deliver(b"Subject: hi\n\nhi\n")
    s, mport = start_server(postie, tmp_path, QUICK_CONFIG, {"bob": "bob-pw"}, extra=["--apop"], name="mech")
    t = Tally()
    with Client(t, s.port) as c:
        c.login("bob", "bob-pw")
        c.quit()
    with Client(t, s.port) as c:
        assert c.cmd("AUTH PLAIN " + base64.b64encode(b"\0bob\0wrong").decode()).startswith("-ERR [AUTH]")
        c.ok("AUTH PLAIN " + base64.b64encode(b"\0bob\0bob-pw").decode())
        c.quit()
    with Client(t, s.port) as c:
        m = re.search(rb"<[^>]+>", c.greeting)
        assert m, f"no APOP timestamp in the greeting with --apop: {c.greeting!r}"
        c.ok("APOP bob " + hashlib.md5(m.group(0) + b"bob-pw").hexdigest())
        c.quit()
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 3)
    logged = Counter(re.findall(r"pop3-login: Info: (Login|Login failed): user=<bob>, method=(\w[\w-]*)", s.log_text()))
    assert logged == Counter({("Login", "USER"): 1, ("Login failed", "PLAIN"): 1, ("Login", "PLAIN"): 1,
                              ("Login", "APOP"): 1}), f"log lines: {logged}"
    expected = {
        E("pop3_logins_total", result="success", mechanism="USER", tls="no"): 1,
        E("pop3_logins_total", result="success", mechanism="PLAIN", tls="no"): 1,
        E("pop3_logins_total", result="failure", mechanism="PLAIN", tls="no"): 1,
        E("pop3_logins_total", result="success", mechanism="APOP", tls="no"): 1,
    }
    for kw, n in t.commands.items():
        expected[E("pop3_commands_total", command=kw)] = n
    bad = compare(sc, expected, ["pop3_logins_total", "pop3_commands_total"])
    assert not bad, "logins by mechanism differ from the log's method=:\n  " + "\n  ".join(bad) + "\n---\n" + sc.text


# --------------------------------------------------------------------------
# a'. Lockout counters
# --------------------------------------------------------------------------

LOCKOUT_CONFIG = """\
auth_failure_delay: 0.01
auth_failure_max_delay: 0.02
lockout_threshold: 3
lockout_window: 300
lockout_duration: 600
"""


def test_lockout_counters(postie, tmp_path):
    Maildir(tmp_path / "mail" / "alice").create().deliver(b"Subject: hi\n\nhi\n")
    s, mport = start_server(postie, tmp_path, LOCKOUT_CONFIG, {"alice": "alice-pw"}, name="lockout")
    port = s.port
    base = wait_metrics(mport, lambda sc: sc.get("pop3_connections_total", listener=f"{HOST}:{port}", tls="none") == 1)
    conns0 = base.get("pop3_connections_total", listener=f"{HOST}:{port}", tls="none")
    t = Tally()
    attacker = "127.0.0.5"
    # A second connection from the attacker, greeted before the lockout, waits.
    waiting = Client(t, port, source=attacker)
    assert waiting.greeting.startswith(b"+OK")
    # Three wrong passwords: the first two are answered [AUTH], the third (checked, wrong,
    # and counted as a failure) locks the address out and is answered with the lockout.
    c = Client(t, port, source=attacker)
    for k in range(3):
        c.ok("USER alice")
        r = c.cmd(f"PASS guess-{k}")
        if k < 2:
            assert r.startswith("-ERR [AUTH]"), f"wrong password {k + 1} of 3 got {r!r}"
        else:
            assert r == LOCKED_OUT, f"the wrong password that reaches lockout_threshold 3 got {r!r}"
    c.expect_closed()
    c.close()
    # The waiting connection is now refused even with the right password: a refused login.
    waiting.ok("USER alice")
    r = waiting.cmd("PASS alice-pw")
    assert r == LOCKED_OUT, f"the right password from a locked-out address got {r!r}"
    waiting.close()
    # New connections from the address are refused before the greeting.
    refused = 0
    for _ in range(2):
        c = Client(t, port, source=attacker, read_greeting=False)
        g = c.reply()
        assert g == LOCKED_OUT, f"a locked-out address got {g!r}"
        c.expect_closed()
        c.close()
        refused += 1
    # Another address still logs in.
    c = Client(t, port, source="127.0.0.6")
    c.login("alice", "alice-pw")
    c.quit()
    c.close()

    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 1)
    expected = {
        E("pop3_lockouts_total"): 1,
        E("pop3_connections_refused_total", reason="lockout"): refused,
        E("pop3_logins_total", result="failure", mechanism="USER", tls="no"): 3,
        E("pop3_logins_total", result="success", mechanism="USER", tls="no"): 1,
        E("pop3_logins_total", result="refused", mechanism="USER", tls="no"): 1,
        E("pop3_in_use_refusals_total"): 0,
        # refused connections were accepted first: they count here too
        E("pop3_connections_total", listener=f"{HOST}:{port}", tls="none"): conns0 + t.connections,
    }
    for kw, n in t.commands.items():
        expected[E("pop3_commands_total", command=kw)] = n
    bad = compare(sc, expected, ["pop3_connections_refused_total", "pop3_logins_total", "pop3_commands_total"])
    assert not bad, ("lockout metrics differ:\n  " + "\n  ".join(bad)
                     + f"\n---\n{sc.text}")


# --------------------------------------------------------------------------
# a''. TLS counters and the certificate-expiry gauge
# --------------------------------------------------------------------------


def not_after(cert: Path) -> int:
    r = run(["openssl", "x509", "-noout", "-enddate", "-in", cert])
    assert r.returncode == 0, r.stderr
    return int(ssl.cert_time_to_seconds(r.stdout.strip().split("=", 1)[1]))


def make_leaf(ca, name: str, days: int, sans: str) -> tuple[Path, Path]:
    cert, key = ca.dir / f"{name}.pem", ca.dir / f"{name}.key"
    r = run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", key, "-out", cert, "-days", str(days), "-subj", f"/CN={name}",
             "-CA", ca.cert, "-CAkey", ca.key, "-addext", f"subjectAltName={sans}",
             "-addext", "extendedKeyUsage=serverAuth"])
    assert r.returncode == 0, r.stderr
    return cert, key


def test_tls_metrics_and_certificate_expiry(postie, tmp_path):

    pki = make_pki(tmp_path / "pki")
    # An SNI certificate that expires long before the default one (30 days): the gauge is
    # the earliest notAfter of all configured certificates.
    sni_src, sni_key_src = make_leaf(pki.ca, "sni-short", 5, "DNS:short.test")
    sni_cert, sni_key = tmp_path / "sni.pem", tmp_path / "sni.key"
    shutil.copyfile(sni_src, sni_cert)
    shutil.copyfile(sni_key_src, sni_key)
    Maildir(tmp_path / "mail" / "alice").create().deliver(b"Subject: tls\n\nover tls\n")
    mport = free_port()
    srv = start_tls_server(postie, tmp_path, pki,
                                  extra=["--metrics", f"{HOST}:{mport}", "--tls-sni", f"short.test={sni_cert}:{sni_key}"],
                                  config=QUICK_CONFIG, name="tlsmetrics")
    plain, implicit = f"{HOST}:{srv.plain}", f"{HOST}:{srv.tls}"
    sc = wait_metrics(mport, lambda sc: True)
    want = not_after(sni_cert)
    assert not_after(srv.cert) > want
    got = sc.get("pop3_tls_certificate_expiry_timestamp_seconds")
    assert sc.types.get("pop3_tls_certificate_expiry_timestamp_seconds") == "gauge", sc.text
    assert got == want, (f"pop3_tls_certificate_expiry_timestamp_seconds = {got:.0f}, want {want} "
                         f"(the SNI certificate's notAfter; the default one's is {not_after(srv.cert)})")

    # The readiness probe connected to the STLS listener once; nothing touched the other yet.
    base = wait_metrics(mport, lambda sc: sc.get("pop3_connections_total", listener=plain, tls="none") >= 1)
    c0_plain = base.get("pop3_connections_total", listener=plain, tls="none")
    c0_tls = base.get("pop3_connections_total", listener=implicit, tls="implicit")
    hf0 = base.get("pop3_tls_handshake_failures_total", listener=implicit)
    ctx = client_context(pki.cafile)
    # STLS, then a login over TLS.
    with POP3Raw(HOST, srv.plain) as c:
        c.ok("STLS")
        c.starttls(ctx)
        c.login("alice", "Alice-S3cret!pw")
        c.retr(1)
        c.ok("QUIT")
    # Implicit TLS.
    with POP3Raw(HOST, srv.tls, tls=ctx) as c:
        c.login("bob", "bob-plain-pw")
        c.ok("QUIT")
    # Plaintext on the implicit-TLS port: the handshake fails.
    with POP3Raw(HOST, srv.tls, read_greeting=False, timeout=5) as c:
        c.send(b"USER alice\r\n")
        try:
            c.expect_closed()
        except (OSError, ProtocolError):
            pass
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 2
                      and sc.get("pop3_tls_handshake_failures_total", listener=implicit) >= hf0 + 1)
    expected = {
        E("pop3_starttls_total", listener=plain): 1,
        E("pop3_connections_total", listener=plain, tls="none"): c0_plain + 1,
        E("pop3_connections_total", listener=implicit, tls="implicit"): c0_tls + 2,
        E("pop3_tls_handshake_failures_total", listener=implicit): hf0 + 1,
        E("pop3_logins_total", result="success", mechanism="USER", tls="yes"): 2,
        E("pop3_session_duration_seconds_count"): 2,
    }
    bad = compare(sc, expected, ["pop3_logins_total", "pop3_starttls_total"])
    assert not bad, "TLS metrics differ:\n  " + "\n  ".join(bad) + "\n---\n" + sc.text

    # SIGHUP with a longer-lived SNI certificate: the gauge follows.
    new_src, new_key_src = make_leaf(pki.ca, "sni-longer", 20, "DNS:short.test")
    for src, dst in ((new_src, sni_cert), (new_key_src, sni_key)):
        tmp = dst.with_name(dst.name + ".new")
        shutil.copyfile(src, tmp)
        os.rename(tmp, dst)
    want2 = min(not_after(sni_cert), not_after(srv.cert))
    assert want2 != want
    srv.hup()
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_tls_certificate_expiry_timestamp_seconds") == want2)
    got = sc.get("pop3_tls_certificate_expiry_timestamp_seconds")
    assert got == want2, f"after SIGHUP the expiry gauge is {got:.0f}, want {want2} (was {want})"


# --------------------------------------------------------------------------
# b. Alert rules
# --------------------------------------------------------------------------


def test_promtool_check_rules():
    promtool = need("promtool")
    r = run([promtool, "check", "rules", RULES])
    assert r.returncode == 0 and "SUCCESS" in r.stdout, f"promtool check rules:\n{r.stdout}{r.stderr}"


def test_promtool_unit_tests_of_the_rules():
    promtool = need("promtool")
    r = run([promtool, "test", "rules", RULE_TESTS], timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, f"promtool test rules:\n{r.stdout}{r.stderr}"


def test_rules_use_only_metrics_the_server_exports(postie, tmp_path):
    """Every pop3_* name in the rules is a family the server exports (with TLS, after a login)."""

    pki = make_pki(tmp_path / "pki")
    mport = free_port()
    srv = start_tls_server(postie, tmp_path, pki, extra=["--metrics", f"{HOST}:{mport}"], name="names")
    with POP3Raw(HOST, srv.plain) as c:
        c.login("bob", "bob-plain-pw")
        c.ok("QUIT")
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 1)
    used = set(re.findall(r"\bpop3_[a-z_]+", RULES.read_text()))
    missing = sorted(n for n in used if sc.family_of(n) is None)
    assert not missing, f"the rules use metrics the server does not export: {missing}\n---\n{sc.text}"


def test_alerted_series_exist_from_the_start(postie, tmp_path):
    """increase() and rate() cannot see the jump of a series that appears with its first event
    (Prometheus' "avoid missing metrics"): the first plaintext login after a restart would never
    fire PostiePlaintextLoginAccepted. So every label combination the rules and dashboards use
    must be exported as 0 before any traffic."""
    s, mport = start_server(postie, tmp_path, QUICK_CONFIG, {"bob": "pw"}, name="fresh")
    sc = scrape(mport)
    want = [E("pop3_logins_total", result=r, mechanism="USER", tls=t)
            for r in ("success", "failure", "refused") for t in ("yes", "no")]
    want += [E("pop3_connections_refused_total", reason=r) for r in ("access", "limit", "lockout")]
    want += [E(n) for n in ("pop3_lockouts_total", "pop3_plaintext_refused_total", "pop3_in_use_refusals_total",
                            "pop3_messages_deleted_total", "pop3_sessions_active")]
    want += [E("pop3_sent_bytes_total", command=c) for c in ("RETR", "TOP")]
    missing = [f"{n}{dict(l)}" for n, l in want if (n, frozenset(l)) not in sc.samples]
    assert not missing, ("series missing before the first event (they must start at 0):\n  "
                         + "\n  ".join(missing) + "\n---\n" + sc.text)


# --------------------------------------------------------------------------
# c. postie config check
# --------------------------------------------------------------------------


@dataclass
class CheckEnv:
    tmp: Path
    passwd: Path
    cert: Path
    key: Path
    base_flags: list[str]

    def args(self, form: str, settings: list[tuple[str, str, object]], bad: str) -> tuple[list, str]:
        """`settings` ([(key, flag, value)], a list value is one flag per item) as flags
        (`form` "flag") or in a config file, and the name config check must report `bad` (a key) under."""
        if form == "flag":
            args = list(self.base_flags)
            for _, flag, value in settings:
                for v in (value if isinstance(value, list) else [value]):
                    args += [flag, v]
            return args, next(flag for key, flag, _ in settings if key == bad)
        cfg = self.tmp / "postie.yaml"
        cfg.write_text("".join(f"{key}: " + ("[" + ", ".join(f'"{v}"' for v in value) + "]"
                                             if isinstance(value, list) else f"{value}") + "\n"
                               for key, _, value in settings))
        return self.base_flags + ["--config", cfg], f"{cfg}: {bad}"


@pytest.fixture
def check_env(tmp_path) -> CheckEnv:

    pw = PasswdFile(tmp_path / "passwd").add("bob", "pw", scheme="PLAIN")
    pw.write()
    os.chmod(pw.path, 0o640)
    pki = make_pki(tmp_path / "pki")
    return CheckEnv(tmp_path, pw.path, pki.a.cert, pki.a.key,
                    ["--listen", f"{HOST}:{free_port()}", "--maildir", str(tmp_path / "mail" / "%u")])


def config_check(postie_bin, args: list, cwd: Path) -> subprocess.CompletedProcess:
    return run([postie_bin, "config", "check"] + args, cwd=cwd, timeout=30)


def problems(r: subprocess.CompletedProcess) -> list[str]:
    return [l for l in (r.stdout + r.stderr).splitlines() if re.match(r"^(error|warning):", l)]


def assert_reported(r: subprocess.CompletedProcess, setting: str, path: str, cmd: str) -> None:
    out = r.stdout + r.stderr
    errs = [l for l in problems(r) if l.startswith("error:")]
    mine = [l for l in errs if setting in l and path in l]
    assert r.returncode == 1 and mine, (
        f"`{cmd}` exited {r.returncode}; want 1 with an error naming {setting!r} and {path!r}.\n"
        f"errors: {errs}\n--- output:\n{out}")


UNREADABLE = ["missing", "directory"] + (["mode-000"] if os.geteuid() != 0 else [])
# Root reads a mode-000 file anyway (CAP_DAC_OVERRIDE), so as root the "unreadable" case is a
# directory in place of the file (and a missing file); as another user mode 000 is checked too.


def unreadable_passwd(ce: CheckEnv, kind: str) -> Path:
    if kind == "missing":
        return ce.tmp / "no-such-dir" / "passwd"
    if kind == "directory":
        d = ce.tmp / "passwd.d"
        d.mkdir(exist_ok=True)
        return d
    p = ce.tmp / "passwd-000"
    shutil.copyfile(ce.passwd, p)
    os.chmod(p, 0)
    return p


@pytest.mark.parametrize("form", ["flag", "config"])
@pytest.mark.parametrize("kind", UNREADABLE)
def test_config_check_unreadable_passwd_file(postie_bin, check_env, kind, form):
    ce = check_env
    bad = unreadable_passwd(ce, kind)
    args, setting = ce.args(form, [("passwd_file", "--passwd-file", bad)], "passwd_file")
    r = config_check(postie_bin, args, ce.tmp)
    assert_reported(r, setting, str(bad), f"config check ({kind} passwd-file, {form})")


@pytest.mark.parametrize("form", ["flag", "config"])
def test_config_check_missing_certificate(postie_bin, check_env, form):
    ce = check_env
    missing = ce.tmp / "gone" / "fullchain.pem"
    args, setting = ce.args(form, [("passwd_file", "--passwd-file", ce.passwd), ("tls_cert", "--tls-cert", missing),
                                   ("tls_key", "--tls-key", ce.key)], "tls_cert")
    r = config_check(postie_bin, args, ce.tmp)
    assert_reported(r, setting, str(missing), f"config check (missing certificate, {form})")


@pytest.mark.parametrize("form", ["flag", "config"])
def test_config_check_missing_key(postie_bin, check_env, form):
    ce = check_env
    missing = ce.tmp / "gone" / "privkey.pem"
    args, setting = ce.args(form, [("passwd_file", "--passwd-file", ce.passwd), ("tls_cert", "--tls-cert", ce.cert),
                                   ("tls_key", "--tls-key", missing)], "tls_key")
    r = config_check(postie_bin, args, ce.tmp)
    assert_reported(r, setting, str(missing), f"config check (missing key, {form})")


BAD_CIDRS = [("deny", "--deny", "192.0.2.0/33"),
             ("allow", "--allow", "10.0.0.300/8"),
             ("trusted_networks", "--trusted-network", "2001:db8::/129"),
             ("proxy_from", "--proxy-from", "not-a-network")]


@pytest.mark.parametrize("form", ["flag", "config"])
@pytest.mark.parametrize("key,flag,value", BAD_CIDRS, ids=[k for k, _, _ in BAD_CIDRS])
def test_config_check_bad_cidr(postie_bin, check_env, key, flag, value, form):
    ce = check_env
    args, setting = ce.args(form, [("passwd_file", "--passwd-file", ce.passwd), (key, flag, [value])], key)
    r = config_check(postie_bin, args, ce.tmp)
    assert_reported(r, setting, value, f"config check ({key} {value}, {form})")


def test_config_check_reports_every_problem_at_once(postie_bin, check_env):
    ce = check_env
    cfg = ce.tmp / "postie.yaml"
    missing_cert = ce.tmp / "gone" / "cert.pem"
    missing_pw = ce.tmp / "gone" / "passwd"
    cfg.write_text(f'passwd_file: {missing_pw}\ntls_cert: {missing_cert}\ntls_key: {ce.key}\n'
                   f'deny: ["192.0.2.0/33"]\n')
    r = config_check(postie_bin, ce.base_flags + ["--config", cfg], ce.tmp)
    assert_reported(r, f"{cfg}: passwd_file", str(missing_pw), "config check (three problems)")
    assert_reported(r, f"{cfg}: tls_cert", str(missing_cert), "config check (three problems)")
    assert_reported(r, f"{cfg}: deny", "192.0.2.0/33", "config check (three problems)")
    assert re.search(r"\b3 error\(s\)", r.stdout + r.stderr), r.stdout + r.stderr


def test_config_check_good_configuration(postie_bin, check_env):
    ce = check_env
    cfg = ce.tmp / "postie.yaml"
    tls_port = free_port()
    cfg.write_text(f"""\
listen_tls: ["{HOST}:{tls_port}"]
passwd_file: {ce.passwd}
tls_cert: {ce.cert}
tls_key: {ce.key}
trusted_networks: ["127.0.0.0/8"]
deny: ["192.0.2.0/24"]
idle_timeout: 650
lockout_threshold: 7
auth_failure_delay: 0.5
""")
    # Flags win over the file: idle_timeout comes from the flag.
    r = config_check(postie_bin, ce.base_flags + ["--config", cfg, "--idle-timeout", "700",
                                                  "--metrics", f"{HOST}:{free_port()}"], ce.tmp)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"a good configuration: exit {r.returncode}\n{out}"
    assert not [l for l in problems(r) if l.startswith("error:")], out
    eff = r.stdout
    for want in (f"{HOST}:{tls_port}", str(ce.passwd), str(ce.tmp / "mail" / "%u"), str(ce.cert), str(ce.key),
                 "192.0.2.0/24", "127.0.0.0/8"):
        assert want in eff, f"effective configuration does not show {want!r}:\n{eff}"
    for key, value in (("idle_timeout", "700"), ("lockout_threshold", "7"), ("auth_failure_delay", "0.5"),
                       ("lockout_window", "300"), ("max_connections", "10000")):
        assert re.search(rf"^{key}:\s*{re.escape(value)}\b", eff, re.M), \
            f"effective configuration: want {key}: {value}:\n{eff}"
    assert re.search(r"no problems found|\b0 error\(s\)", out), out


def test_config_check_with_flags_only(postie_bin, check_env):
    ce = check_env
    r = config_check(postie_bin, ce.base_flags + ["--passwd-file", ce.passwd, "--tls-cert", ce.cert,
                                                  "--tls-key", ce.key], ce.tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(ce.passwd) in r.stdout and str(ce.cert) in r.stdout, r.stdout


# --------------------------------------------------------------------------
# d. The systemd unit
# --------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit_is_hardened_as_documented():
    s = unit_settings(UNIT.read_text())
    want = {
        "Type": "exec",
        "ExecStart": f"{SHIPPED_BIN} serve --config /etc/postie/postie.yaml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallFilter": "@system-service",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }
    bad = [f"{k}={s.get(k)} (want {v})" for k, v in want.items() if v not in s.get(k, [])]
    caps = set(" ".join(s.get("CapabilityBoundingSet", [])).split())
    if caps != {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"}:
        bad.append(f"CapabilityBoundingSet={caps}")
    rw = " ".join(s.get("ReadWritePaths", [])).split()
    if "/srv/mail" not in rw or not any(p.lstrip("-") == "/var/lib/postie" for p in rw):
        bad.append(f"ReadWritePaths={rw}")
    if int(s.get("LimitNOFILE", ["0"])[0]) < 65536:
        bad.append(f"LimitNOFILE={s.get('LimitNOFILE')}")
    assert not bad, "contrib/systemd/postie.service:\n  " + "\n  ".join(bad)


@pytest.fixture
def unit_copy(postie_bin, tmp_path) -> Path:
    """The shipped unit with /usr/local/bin/postie replaced by the binary under test."""
    text = UNIT.read_text()
    assert SHIPPED_BIN in text
    d = tmp_path / "units"
    d.mkdir()
    p = d / "postie.service"
    p.write_text(text.replace(SHIPPED_BIN, str(postie_bin)))
    return p


def test_systemd_analyze_verify(unit_copy):
    sa = need("systemd-analyze")
    r = run([sa, "verify", "--man=no", unit_copy])
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not out, f"systemd-analyze verify {unit_copy}: exit {r.returncode}\n{out}"


def test_systemd_analyze_verify_shipped_unit():
    """The shipped file itself: clean, or (where postie is not installed) only that complaint."""
    sa = need("systemd-analyze")
    r = run([sa, "verify", "--man=no", UNIT])
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    other = [l for l in lines if f"Command {SHIPPED_BIN} is not executable" not in l]
    assert not other, f"systemd-analyze verify {UNIT}: exit {r.returncode}\n" + "\n".join(lines)
    if not Path(SHIPPED_BIN).exists():
        assert r.returncode != 0 and lines, "verify did not notice the missing binary; is it checking at all?"
    else:
        assert r.returncode == 0


def test_systemd_analyze_security_exposure(unit_copy):
    sa = need("systemd-analyze")
    r = run([sa, "security", "--offline=yes", "--threshold=30", "--no-pager", unit_copy])
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, f"systemd-analyze security: no exposure level\n{r.stdout}{r.stderr}"
    note(f"systemd-analyze security: exposure {m.group(1)} (0 = locked down, 10 = none)")
    assert r.returncode == 0 and float(m.group(1)) <= 3.0, \
        f"exposure {m.group(1)} is above 3.0 (\"OK\"):\n{r.stdout}{r.stderr}"


def test_unit_commands_work_with_the_binary(postie_bin, tmp_path):
    """ExecStartPre, ExecStart and ExecReload of the unit, run as systemd would run them (with the
    binary under test and a loopback configuration in place of /etc/postie/postie.yaml): the
    check passes, the server starts, SIGHUP reloads without stopping it, SIGTERM stops it."""
    s = unit_settings(UNIT.read_text())
    pw = PasswdFile(tmp_path / "passwd").add("bob", "bob-pw", scheme="PLAIN")
    pw.write()
    os.chmod(pw.path, 0o640)
    port = free_port()
    cfg = tmp_path / "postie.yaml"
    cfg.write_text(f'listen: ["{HOST}:{port}"]\npasswd_file: {pw.path}\nmaildir: {tmp_path}/mail/%u\n')

    def argv(cmd: str) -> list[str]:
        cmd = cmd.lstrip("-@:+!")
        return [a.replace(SHIPPED_BIN, str(postie_bin)).replace("/etc/postie/postie.yaml", str(cfg))
                for a in cmd.split()]

    for pre in s.get("ExecStartPre", []):
        r = run(argv(pre), cwd=tmp_path)
        assert r.returncode == 0, f"ExecStartPre={pre}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    (start,) = s["ExecStart"]
    cmd = argv(start)
    server = PostieServer(Path(cmd[0]), cmd[1:], tmp_path / "unit.log", [(HOST, port)], cwd=tmp_path, name="unit")
    try:
        server.start(ready_timeout=15)
        with POP3Raw(HOST, port) as c:
            c.login("bob", "bob-pw")
            c.ok("QUIT")
        (reload,) = s["ExecReload"]
        r = run([a.replace("$MAINPID", str(server.pid)) for a in argv(reload)])
        assert r.returncode == 0, f"ExecReload={reload}: {r.stderr}"
        server.wait_log("SIGHUP", timeout=30)
        assert server.alive(), f"the server stopped on ExecReload:\n{server.log_text()}"
        with POP3Raw(HOST, port) as c:
            c.login("bob", "bob-pw")
            c.ok("QUIT")
    finally:
        rc = server.stop()  # SIGTERM, as systemctl stop
    assert rc == 0, f"SIGTERM (systemctl stop): exit {rc}\n{server.log_text()}"


PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def _mdwe_preexec():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def mdwe_supported() -> bool:
    """True if the kernel has PR_SET_MDWE and enforces it after execve (checked on a control
    process: an RWX mapping must fail in it)."""
    code = ("import ctypes, ctypes.util, mmap, sys\n"
            "assert ctypes.CDLL(ctypes.util.find_library('c')).prctl(66, 0, 0, 0, 0) == 1, 'not inherited'\n"
            "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "except PermissionError:\n    sys.exit(0)\n"
            "sys.exit('an RWX mapping succeeded under PR_SET_MDWE')\n")
    try:
        r = subprocess.run([sys.executable, "-c", code], preexec_fn=_mdwe_preexec, capture_output=True, text=True)
    except subprocess.SubprocessError:  # prctl failed in the child: no PR_SET_MDWE (Linux < 6.3)
        return False
    assert r.returncode == 0, f"PR_SET_MDWE control process: {r.stderr}"
    return True


def test_server_runs_with_memory_deny_write_execute(postie, tmp_path):
    """MemoryDenyWriteExecute=yes in the unit: the kernel's PR_SET_MDWE (Linux 6.3+, inherited
    across execve) refuses the same thing (writable+executable mappings, mprotect adding
    PROT_EXEC). A full session with TLS and metrics must work under it, and no mapping of
    the running server may be writable and executable."""

    enforced = mdwe_supported()
    pki = make_pki(tmp_path / "pki")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    pki.a.install(cert, key)
    pw = PasswdFile(tmp_path / "passwd").add("bob", "bob-pw", scheme="PLAIN").add(
        "alice", "Alice-S3cret!pw", scheme="SHA512-CRYPT")
    pw.write()
    Maildir(tmp_path / "mail" / "alice").create().deliver(b"Subject: mdwe\n\nhello\n")
    port, tport, mport = free_port(), free_port(), free_port()
    s = postie.start(passwd=pw.path, maildir=str(tmp_path / "mail" / "%u"), listen=[(HOST, port)],
                     extra=["--listen-tls", f"{HOST}:{tport}", "--tls-cert", str(cert), "--tls-key", str(key),
                            "--metrics", f"{HOST}:{mport}"],
                     name="mdwe", preexec_fn=_mdwe_preexec if enforced else None, ready_timeout=15)
    proc = s.proc
    try:
        ctx = client_context(pki.cafile)
        with POP3Raw(HOST, port) as c:
            c.ok("STLS")
            c.starttls(ctx)
            c.login("alice", "Alice-S3cret!pw")  # crypt(3)
            assert b"hello" in c.retr(1)
            c.ok("QUIT")
        with POP3Raw(HOST, tport, tls=ctx) as c:
            c.login("bob", "bob-pw")
            c.ok("QUIT")
        sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 2)
        assert sc.get("pop3_logins_total", result="success", mechanism="USER", tls="yes") == 2
        wx = [l for l in Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
              if len(l.split()) > 1 and "w" in l.split()[1] and "x" in l.split()[1]]
        assert not wx, "writable and executable mappings:\n" + "\n".join(wx)
        assert proc.poll() is None, "postie died"
        if enforced:
            note("MemoryDenyWriteExecute: served STLS, implicit TLS, crypt(3) and metrics under PR_SET_MDWE")
        else:
            note("MemoryDenyWriteExecute: this kernel has no PR_SET_MDWE; checked only that no mapping is W+X")
    finally:
        s.stop()
