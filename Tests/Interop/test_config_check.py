"""`postie config check`: problems named by flag or by FILE: key, exit status 1; a good
configuration exits 0 and prints the effective settings.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kits.launcher import free_port, HOST
from kits.mail import PasswdFile
from kits.tls import make_pki
from kits.tools import run


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


def assert_missing_tls_file_reported(postie_bin, ce: CheckEnv, form: str, key: str, name: str, what: str) -> None:
    """The TLS file `key` (tls_cert or tls_key) names a missing file, `name` in a missing directory."""
    missing = ce.tmp / "gone" / name
    files = {"tls_cert": ce.cert, "tls_key": ce.key, key: missing}
    args, setting = ce.args(form, [("passwd_file", "--passwd-file", ce.passwd),
                                   ("tls_cert", "--tls-cert", files["tls_cert"]),
                                   ("tls_key", "--tls-key", files["tls_key"])], key)
    r = config_check(postie_bin, args, ce.tmp)
    assert_reported(r, setting, str(missing), f"config check (missing {what}, {form})")


@pytest.mark.parametrize("form", ["flag", "config"])
def test_config_check_missing_certificate(postie_bin, check_env, form):
    assert_missing_tls_file_reported(postie_bin, check_env, form, "tls_cert", "fullchain.pem", "certificate")


@pytest.mark.parametrize("form", ["flag", "config"])
def test_config_check_missing_key(postie_bin, check_env, form):
    assert_missing_tls_file_reported(postie_bin, check_env, form, "tls_key", "privkey.pem", "key")


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


def test_config_check_alternative_certificate(postie_bin, check_env, tmp_path):
    """tls_alt_cert/tls_alt_key beside an RSA tls_cert: shown in the effective configuration;
    two ECDSA certificates, or an alternative without its key, are errors named by key."""
    ce = check_env
    pki = make_pki(tmp_path / "pki-alt")
    rsa = pki.ca.leaf("server-rsa", "postie-rsa.test", ["DNS:localhost"], 0x3201, rsa=True)
    good = ["--passwd-file", str(ce.passwd), "--tls-cert", str(rsa.cert), "--tls-key", str(rsa.key),
            "--tls-alt-cert", str(ce.cert), "--tls-alt-key", str(ce.key)]
    r = config_check(postie_bin, ce.base_flags + good, ce.tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(rf'^tls_alt_cert:\s*"{re.escape(str(ce.cert))}"', r.stdout, re.M), r.stdout
    assert re.search(rf'^tls_alt_key:\s*"{re.escape(str(ce.key))}"', r.stdout, re.M), r.stdout

    both_ecdsa = ["--passwd-file", str(ce.passwd), "--tls-cert", str(ce.cert), "--tls-key", str(ce.key),
                  "--tls-alt-cert", str(pki.a.cert), "--tls-alt-key", str(pki.a.key)]
    r = config_check(postie_bin, ce.base_flags + both_ecdsa, ce.tmp)
    assert r.returncode == 1 and "both have one" in r.stdout + r.stderr, r.stdout + r.stderr
    assert_reported(r, "--tls-alt-cert", str(pki.a.cert), "config check (two ECDSA certificates)")
    r = config_check(postie_bin, ce.base_flags + good[:8], ce.tmp)
    assert r.returncode == 1 and "tls_alt_key" in r.stdout + r.stderr, r.stdout + r.stderr


def test_config_check_with_flags_only(postie_bin, check_env):
    ce = check_env
    r = config_check(postie_bin, ce.base_flags + ["--passwd-file", ce.passwd, "--tls-cert", ce.cert,
                                                  "--tls-key", ce.key], ce.tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(ce.passwd) in r.stdout and str(ce.cert) in r.stdout, r.stdout
