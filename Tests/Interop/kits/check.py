"""What the `postie check` interop tests share: the certificates they serve (made once per
module), running the check and reading its text, JSON and perfdata (against the
monitoring-plugins grammar), and starting Postie or Dovecot with a mailbox to check."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kits.launcher import free_port, HOST
from kits.mail import BOB, Maildir, make_passwd
from kits.tls import self_signed, TestCA

LOCAL = ["DNS:localhost", "IP:127.0.0.1"]
MESSAGES = [b"Subject: one\r\n\r\nfirst body\r\n", b"Subject: two\r\n\r\nsecond\r\nbody\r\n"]
MAILBOX_SIZE = sum(len(m) for m in MESSAGES)


# --------------------------------------------------------------------------
# Certificates (made once per module)
# --------------------------------------------------------------------------


@dataclass
class CheckPKI:
    root: TestCA
    good: object  # leaf from root, 400 days
    chained: object  # leaf from the intermediate
    chained_full: Path  # that leaf followed by the intermediate
    expired: object
    self_signed: object


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CheckPKI:
    d = tmp_path_factory.mktemp("check-pki")
    os.chmod(d, 0o755)
    root = TestCA(d, "Postie Check Test Root", days=3650)
    inter = root.intermediate("inter", "Postie Check Test Intermediate", days=3650)
    chained = inter.leaf("chained", "chained.test", LOCAL, 0x3001, days=400)
    full = d / "chained-full.pem"
    full.write_bytes(chained.cert.read_bytes() + inter.cert.read_bytes())
    return CheckPKI(
        root=root,
        good=root.leaf("good", "good.test", LOCAL, 0x3002, days=400),
        chained=chained,
        chained_full=full,
        expired=root.expired_leaf("expired", "expired.test", LOCAL, 0x3003),
        self_signed=self_signed(d, "selfsigned", "selfsigned.test", LOCAL),
    )


# --------------------------------------------------------------------------
# Running the check and reading its output
# --------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def status_line(self) -> str:
        return self.stdout.splitlines()[0]

    @property
    def perfdata(self) -> dict[str, "Perf"]:
        return parse_perfdata(self.status_line)

    def __str__(self) -> str:
        return f"exit {self.code}\n{self.stdout}\n{self.stderr}"


def run_check(postie_bin: Path, *args, env: dict | None = None, timeout: float = 90) -> Result:
    e = dict(os.environ)
    e.pop("POSTIE_PASSWORD", None)
    e.update(env or {})
    r = subprocess.run([str(postie_bin), "check", *map(str, args)], capture_output=True, timeout=timeout, env=e)
    return Result(r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))


def run_json(postie_bin: Path, *args, **kw) -> tuple[Result, dict]:
    r = run_check(postie_bin, *args, "--json", **kw)
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"--json output is not JSON ({e}):\n{r}")
    assert doc["exit_code"] == r.code, r
    return r, doc


def items(doc: dict) -> dict[str, dict]:
    return {i["id"]: i for i in doc["items"]}


def verdict(doc: dict, item_id: str) -> str:
    found = items(doc)
    assert item_id in found, f"no item {item_id}: {sorted(found)}"
    return found[item_id]["verdict"]


@dataclass
class Perf:
    value: float
    uom: str
    warn: str
    crit: str
    min: str
    max: str


# monitoring-plugins guidelines, "Performance data":
#   'label'=value[UOM];[warn];[crit];[min];[max]
# label: any characters but '=' and "'", quoted with ' if it has spaces or quotes ('' for ');
# value and min/max in [-0-9.]; warn/crit are ranges [@][start:][end] with ~ for -infinity;
# UOM: none, s/ms/us, %, B/KB/MB/TB, c.
_RANGE = r"@?(?:(?:~|-?[0-9.]+)?:)?(?:-?[0-9.]+)?"
_PERF = re.compile(
    r"(?:'((?:[^'=]|'')+)'|([^'= ]+))="
    r"(-?[0-9.]+)(s|ms|us|%|B|KB|MB|TB|c)?"
    rf"(?:;({_RANGE})(?:;({_RANGE})(?:;(-?[0-9.]*)(?:;(-?[0-9.]*))?)?)?)?"
    r"(?= |$)")


def parse_perfdata(status_line: str) -> dict[str, Perf]:
    assert status_line.count("|") == 1, f"the status line needs exactly one '|': {status_line!r}"
    text, perf = status_line.split("|")
    assert re.match(r"^POP3 (OK|WARNING|CRITICAL|UNKNOWN) - \S", text), status_line
    perf = perf.strip()
    out: dict[str, Perf] = {}
    pos = 0
    while pos < len(perf):
        m = _PERF.match(perf, pos)
        assert m, f"perfdata does not parse at {perf[pos:]!r} (whole: {perf!r})"
        label = (m.group(1) or m.group(2)).replace("''", "'")
        out[label] = Perf(float(m.group(3)), m.group(4) or "", m.group(5) or "", m.group(6) or "",
                          m.group(7) or "", m.group(8) or "")
        pos = m.end()
        while pos < len(perf) and perf[pos] == " ":
            pos += 1
    return out


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


def fill(maildir: Maildir) -> None:
    maildir.create()
    for m in MESSAGES:
        maildir.deliver(m)


def start_postie(postie, tmp: Path, cert: Path, key: Path, extra: list[str] | None = None):
    pw = make_passwd(tmp)
    template = str(tmp / "mail" / "%u")
    fill(Maildir(tmp / "mail" / BOB[0]))
    tls_port = free_port()
    s = postie.make(passwd=pw.path, maildir=template,
                    extra=["--tls-cert", str(cert), "--tls-key", str(key),
                           "--listen-tls", f"{HOST}:{tls_port}"] + (extra or []))
    s.start(ready_timeout=15)
    s.wait_log(rf"Listening on 127\.0\.0\.1:{tls_port} ")
    return s, tls_port


def start_dovecot_with(dovecot, leaf_cert: Path | None, leaf_key: Path | None, **kw):
    d = dovecot(users={"alice": "alice-pw", "bob": BOB[1]}, cert=leaf_cert, key=leaf_key, **kw)
    fill(d.maildir("bob"))
    d.fix_ownership()
    return d


def password_file(tmp: Path, password: str) -> Path:
    p = tmp / "check-password"
    p.write_text(password + "\n")
    os.chmod(p, 0o600)
    return p
