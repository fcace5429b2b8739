"""contrib/systemd/postie.service: `systemd-analyze verify` (and `security`), the unit's commands
run as systemd would run them, and the server running with the kernel's
MemoryDenyWriteExecute (PR_SET_MDWE) as the unit asks.

Tools: systemd-analyze (Debian package `systemd`), openssl. A missing tool fails the test.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import note, REPO
from kits.launcher import free_port, HOST, PostieServer
from kits.mail import Maildir, PasswdFile
from kits.metrics import wait_metrics
from kits.pop3 import POP3Raw
from kits.tls import client_context, make_pki
from kits.tools import need, run

UNIT = REPO / "contrib" / "systemd" / "postie.service"
SHIPPED_BIN = "/usr/local/bin/postie"


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
