"""Postie's Prometheus endpoint as the tests read it: the text format (version 0.0.4) parsed
strictly, scrapes, waiting for a value, comparing with what a test expects, and a server with
a metrics endpoint.

Standard library only.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .launcher import HOST, free_port
from .mail import PasswdFile

# Fast failures, no lockout: the counting run makes several failed logins from 127.0.0.1.
QUICK_CONFIG = """\
auth_failure_delay: 0.01
auth_failure_max_delay: 0.02
lockout_threshold: 1000
lockout_window: 300
lockout_duration: 900
"""


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


def start_metrics_server(postie, tmp: Path, config: str, users: dict[str, str], *, extra: list[str] | None = None,
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
