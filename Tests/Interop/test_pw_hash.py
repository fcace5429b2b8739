"""`postie pw hash` checked with Dovecot's `doveadm pw -t` for every scheme, and its output
logging in. Needs Debian's `dovecot-core`; missing, it is a failure, never a skip.
"""

from __future__ import annotations

import subprocess

import pytest

from conftest import note
from kits.authenv import (
    FAST,
    write_yaml,
)
from kits.mail import PasswdFile
from kits.pop3 import POP3Raw
from kits.tools import doveadm_pw_test, run_postie


# --------------------------------------------------------------------------
# 5. `postie pw hash` verified by Dovecot's doveadm
# --------------------------------------------------------------------------

PW = "correct horse ✓ 42"


def pw_hash(postie_bin, scheme: str, password: str = PW) -> subprocess.CompletedProcess:
    return run_postie(postie_bin, ["pw", "hash", "--scheme", scheme], password)


@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "PLAIN"])
def test_pw_hash_verifies_with_doveadm(postie_bin, doveadm, scheme):
    r = pw_hash(postie_bin, scheme)
    assert r.returncode == 0, f"postie pw hash --scheme {scheme}: exit {r.returncode}: {r.stderr!r}"
    h = r.stdout.decode().strip()
    assert h.startswith("{" + scheme + "}") and "\n" not in h, f"output {h!r}"
    assert PW not in h or scheme == "PLAIN", f"{scheme} output contains the password"
    v = doveadm_pw_test(doveadm, h, PW)
    assert v.returncode == 0 and b"(verified)" in v.stdout, f"doveadm pw -t {h!r}: {v.stdout!r} {v.stderr!r}"
    v = doveadm_pw_test(doveadm, h, PW + "x")
    assert v.returncode != 0, f"doveadm verified {h!r} with a wrong password"
    if scheme != "PLAIN":
        again = pw_hash(postie_bin, scheme).stdout.decode().strip()
        assert again != h, f"{scheme}: two hashes of the same password are equal (no random salt)"


@pytest.fixture(scope="module")
def scheme_survey(postie_bin, doveadm):
    """Every scheme `doveadm pw -l` lists, sorted into those `postie pw hash` writes and refuses."""
    r = subprocess.run([doveadm, "pw", "-l"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    schemes = r.stdout.decode().split()
    assert "SHA512-CRYPT" in schemes, schemes
    accepted: dict[str, str] = {}
    refused: dict[str, str] = {}
    for s in schemes:
        out = pw_hash(postie_bin, s)
        if out.returncode == 0:
            accepted[s] = out.stdout.decode().strip()
        else:
            refused[s] = out.stderr.decode(errors="replace").strip().splitlines()[-1] if out.stderr else ""
    note(f"postie pw hash writes {len(accepted)} of doveadm's {len(schemes)} schemes: {' '.join(sorted(accepted))}")
    note(f"postie pw hash refuses: {' '.join(sorted(refused))}")
    return accepted, refused


def test_pw_hash_every_accepted_doveadm_scheme_verifies(doveadm, scheme_survey):
    accepted, refused = scheme_survey
    for s in ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "PLAIN"):
        assert s in accepted, f"postie pw hash refuses {s}: {refused.get(s)}"
    failures = []
    for s, h in sorted(accepted.items()):
        prefix = h[1:h.index("}")] if h.startswith("{") and "}" in h else None
        if prefix is None or prefix.split(".")[0].upper() != s:
            failures.append(f"{s}: output {h!r} does not start with {{{s}}}")
            continue
        v = doveadm_pw_test(doveadm, h, PW)
        if v.returncode != 0 or b"(verified)" not in v.stdout:
            failures.append(f"{s}: doveadm pw -t {h!r}: exit {v.returncode} {v.stderr.decode(errors='replace').strip()}")
            continue
        if doveadm_pw_test(doveadm, h, "wrong " + PW).returncode == 0:
            failures.append(f"{s}: doveadm verifies {h!r} with a wrong password")
    assert not failures, "schemes postie writes that Dovecot does not verify:\n" + "\n".join(failures)


def test_pw_hash_output_logs_in(postie, tmp_path, scheme_survey):
    """Whatever `postie pw hash` writes, the server itself must accept at login."""
    accepted, _ = scheme_survey
    pwf = PasswdFile(tmp_path / "passwd")
    users = {}
    for i, (s, h) in enumerate(sorted(accepted.items())):
        u = f"s{i}"
        users[u] = s
        pwf.entries[u] = h
    pwf.write()
    cfg = write_yaml(tmp_path / "fast.yaml", FAST)
    srv = postie.start(passwd=pwf.path, maildir=str(tmp_path / "mail" / "%u"), extra=["--config", str(cfg)])
    failures = []
    for u, s in users.items():
        with POP3Raw(srv.host, srv.port) as c:
            w = c.try_login(u, "wrong " + PW)
            if not w.startswith("-ERR"):
                failures.append(f"{{{s}}}: a wrong password got {w}")
            r = c.try_login(u, PW)
            if not r.startswith("+OK"):
                failures.append(f"{{{s}}}: {r}")
    assert not failures, "hashes from `postie pw hash` that `postie serve` does not accept:\n" + "\n".join(failures)
