"""App passwords (issue 17): made with `postie user app-password add`, used by poplib
(USER/PASS), AUTH PLAIN and fetchmail to download byte-exact mail, listed with their last use,
refused after `revoke`; with the passwd-file's sidecar and with --store postgres. No password
ever reaches the server's log."""

from __future__ import annotations

import json
import poplib
import re
import subprocess
import time
from pathlib import Path

from kits.mail import canonical_crlf, canonical_lf, corpus, hash_path, Maildir, sha
from kits.pop3 import POP3Raw
from kits.sasl import sasl_plain
from kits.tools import Fetchmail

ACCOUNT = ("carol", "Car0l-account-pw")
GROUPED = re.compile(r"^[a-km-np-z2-9]{6}(-[a-km-np-z2-9]{6}){3}$")


def run(binary: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *args], input=input, capture_output=True, text=True, timeout=60)


def add_app_password(binary: Path, store: list[str], user: str, name: str, *extra: str) -> str:
    r = run(binary, "user", "app-password", "add", user, "--name", name, *extra, *store)
    assert r.returncode == 0, f"app-password add exited {r.returncode}: {r.stderr}"
    password = r.stdout.strip()
    assert GROUPED.match(password), f"not 4 groups of 6 from the unambiguous alphabet: {password!r}"
    assert password not in r.stderr
    return password


def listing(binary: Path, store: list[str], user: str) -> list[dict]:
    r = run(binary, "user", "app-password", "list", user, "--json", *store)
    assert r.returncode == 0, f"app-password list exited {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def wait_for_last_use(binary: Path, store: list[str], user: str, name: str) -> dict:
    """The entry once its last use is recorded (written just after the login, off its path)."""
    deadline = time.monotonic() + 30
    while True:
        entry = next(e for e in listing(binary, store, user) if e["name"] == name)
        if entry["last_used"] is not None or time.monotonic() > deadline:
            return entry
        time.sleep(0.1)


def poplib_messages(host: str, port: int, user: str, password: str) -> list[bytes]:
    p = poplib.POP3(host, port, timeout=30)
    try:
        p.user(user)
        p.pass_(password)
        count, _ = p.stat()
        out = []
        for n in range(1, count + 1):
            _, lines, _ = p.retr(n)
            out.append(b"".join(line + b"\r\n" for line in lines))
        p.quit()
        return out
    finally:
        p.close()


def refused(host: str, port: int, user: str, password: str) -> None:
    with POP3Raw(host, port) as c:
        r = c.try_login(user, password)
        assert r.startswith("-ERR [AUTH]"), f"login with {user}'s revoked or wrong password: {r!r}"
        r = sasl_plain(c, user, password)
        assert r.startswith("-ERR"), f"AUTH PLAIN with a revoked password: {r!r}"


def check_cycle(binary: Path, store: list[str], host: str, port: int, user: str, messages: dict[str, bytes]) -> tuple[str, str]:
    """The cycle both stores go through: add, log in (USER/PASS and AUTH PLAIN), list, revoke."""
    password = add_app_password(binary, store, user, "phone", "--expires", "30")
    other = add_app_password(binary, store, user, "laptop")
    want = sorted(canonical_crlf(m) for m in messages.values())

    assert sorted(poplib_messages(host, port, user, password)) == want, "poplib with an app password: not byte-exact"
    with POP3Raw(host, port) as c:
        r = sasl_plain(c, user, other.replace("-", "").upper())
        assert r.startswith("+OK"), f"AUTH PLAIN with an app password typed without hyphens, in capitals: {r!r}"
        assert sorted(c.retr(n) for n in range(1, len(messages) + 1)) == want
        c.ok("QUIT")
    # The account password still works without mfa=yes.
    assert sorted(poplib_messages(host, port, user, ACCOUNT[1])) == want

    phone = wait_for_last_use(binary, store, user, "phone")
    assert phone["last_address"] == "127.0.0.1", phone
    assert phone["expires"] is not None and not phone["expired"], phone
    table = run(binary, "user", "app-password", "list", user, *store)
    assert table.returncode == 0 and "127.0.0.1" in table.stdout and "phone" in table.stdout, table.stdout

    r = run(binary, "user", "app-password", "revoke", user, "phone", *store)
    assert r.returncode == 0, r.stderr
    refused(host, port, user, password)
    r = run(binary, "user", "app-password", "revoke", user, "phone", *store)
    assert r.returncode == 67, f"revoking again: exit {r.returncode}, want 67: {r.stderr}"
    r = run(binary, "user", "app-password", "revoke", "nobody", "phone", *store)
    assert r.returncode == 67, f"revoking for an unknown user: exit {r.returncode}, want 67: {r.stderr}"
    r = run(binary, "user", "app-password", "add", "nobody", "--name", "x", *store)
    assert r.returncode == 67 and r.stdout == "", f"adding for an unknown user: exit {r.returncode}, want 67: {r.stderr}"
    assert [e["name"] for e in listing(binary, store, user)] == ["laptop"]
    return password, other


def assert_no_secret_in_log(server, *secrets: str) -> None:
    log = server.log_text()
    for secret in secrets:
        for form in {secret, secret.replace("-", ""), secret.replace("-", "").upper()}:
            assert form not in log, "a password reached the server log"


def test_app_passwords_with_the_passwd_file(postie_bin, postie, tmp_path, monkeypatch):
    # poplib caps lines at 2048 octets; the corpus has longer ones (RFC 1939 sets no limit).
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 16)
    passwd = tmp_path / "users"
    store = ["--passwd-file", str(passwd)]
    r = run(postie_bin, "user", "add", ACCOUNT[0], *store, input=ACCOUNT[1] + "\n")
    assert r.returncode == 0, r.stderr
    template = str(tmp_path / "mail" / "%u")
    md = Maildir(Path(template.replace("%u", ACCOUNT[0])))
    messages = {label: data for label, data in corpus().items()}
    for data in messages.values():
        md.deliver(data)
    server = postie.start(passwd=passwd, maildir=template)

    password, other = check_cycle(postie_bin, store, server.host, server.port, ACCOUNT[0], messages)
    sidecar = Path(str(passwd) + ".app-passwords")
    text = sidecar.read_text()
    assert text.startswith("carol:laptop:{SSHA512}") and "phone" not in text, text
    assert other not in text and other.replace("-", "") not in text

    # fetchmail with the remaining app password: every message, byte-exact (LF form).
    fm = Fetchmail(tmp_path / "fetchmail", server.port, ACCOUNT[0], other)
    r = fm.run()
    assert r.returncode == 0, f"fetchmail with an app password: {fm.describe(r)}"
    got = sorted(hash_path(f) for f in fm.take())
    assert got == sorted((len(canonical_lf(m)), sha(canonical_lf(m))) for m in messages.values()), "fetchmail: not byte-exact"

    # Deleting the user deletes their app passwords.
    r = run(postie_bin, "user", "del", ACCOUNT[0], *store)
    assert r.returncode == 0, r.stderr
    assert "carol:" not in sidecar.read_text()
    assert_no_secret_in_log(server, password, other)


def test_app_passwords_with_postgres(pgdb, postie, tmp_path, monkeypatch):
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 16)
    pgdb.add_user(*ACCOUNT)
    messages = {}
    for i, (label, data) in enumerate(list(corpus().items())[:4]):
        path = tmp_path / f"m{i}.eml"
        path.write_bytes(data)
        pgdb.import_message(path, ACCOUNT[0])
        messages[label] = data
    server = pgdb.serve(postie)
    store = ["--store", "postgres", "--database-url-file", str(pgdb.url_file)]

    password, other = check_cycle(pgdb.binary, store, server.host, server.port, ACCOUNT[0], messages)
    stored = pgdb.psql("SELECT user_name, name, password FROM app_passwords")
    assert "laptop" in stored and "{SSHA512}" in stored and other.replace("-", "") not in stored
    pgdb.postie("user", "del", ACCOUNT[0], "--store", "postgres")
    assert pgdb.psql("SELECT count(*) FROM app_passwords").strip() == "0"
    assert_no_secret_in_log(server, password, other)


def test_mfa_refuses_the_account_password_and_takes_the_app_password(postie_bin, postie, tmp_path, monkeypatch):
    """`mfa=yes` on one user, then `--require-mfa` for all: the account password fails like a
    wrong one (USER/PASS and AUTH PLAIN), the log says why, and the app password logs in."""
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 16)
    passwd = tmp_path / "users"
    store = ["--passwd-file", str(passwd)]
    for user, extra in ((ACCOUNT[0], ["--extra", "mfa=yes"]), ("dave", [])):
        r = run(postie_bin, "user", "add", user, *extra, *store, input=ACCOUNT[1] + "\n")
        assert r.returncode == 0, r.stderr
    template = str(tmp_path / "mail" / "%u")
    messages = dict(list(corpus().items())[:3])
    for user in (ACCOUNT[0], "dave"):
        md = Maildir(Path(template.replace("%u", user)))
        for data in messages.values():
            md.deliver(data)
    want = sorted(canonical_crlf(m) for m in messages.values())
    carol = add_app_password(postie_bin, store, ACCOUNT[0], "phone")
    dave = add_app_password(postie_bin, store, "dave", "phone")

    server = postie.start(passwd=passwd, maildir=template, extra=["--auth-failure-delay", "0"])
    refused(server.host, server.port, ACCOUNT[0], ACCOUNT[1])
    assert len(server.log_lines(r"Login failed: user=<carol>, method=(USER|PLAIN), .*reason=account password not allowed \(mfa\)")) == 2, server.log_tail()
    assert sorted(poplib_messages(server.host, server.port, ACCOUNT[0], carol)) == want
    assert server.log_lines(r"Login: user=<carol>, method=USER, .*app_password=<phone>")
    # dave has no mfa=yes: his account password works, until the server requires MFA.
    assert sorted(poplib_messages(server.host, server.port, "dave", ACCOUNT[1])) == want
    server.stop()

    strict = postie.start(passwd=passwd, maildir=template, extra=["--auth-failure-delay", "0", "--require-mfa"])
    refused(strict.host, strict.port, "dave", ACCOUNT[1])
    assert strict.log_lines(r"Login failed: user=<dave>, .*reason=account password not allowed \(mfa\)")
    assert sorted(poplib_messages(strict.host, strict.port, "dave", dave)) == want
    assert_no_secret_in_log(server, carol, dave, ACCOUNT[1])
    assert_no_secret_in_log(strict, carol, dave, ACCOUNT[1])
