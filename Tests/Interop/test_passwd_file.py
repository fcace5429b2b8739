"""The passwd-file: edits (appended in place or replaced atomically) take effect without a
restart, and every password scheme and the file format are read as Dovecot writes them.
"""

from __future__ import annotations

import threading
import time

from conftest import note
from kits.mail import ALICE
from kits.pop3 import POP3Raw


def try_login_fresh(env, user, password, source: str | None = None) -> str:
    c = POP3Raw(env.host, env.port, source=source, timeout=40)
    try:
        r = c.try_login(user, password)
        if r.startswith("+OK"):
            c.cmd("QUIT")
        return r
    finally:
        c.close()


def wait_for_login_result(env, user, password, want_ok: bool, timeout: float = 20.0) -> float:
    """Polls until the login result flips; returns when the first attempt that saw the
    change was started (failed attempts are slowed by the server, so that is not counted)."""
    t0 = time.monotonic()
    while True:
        started = time.monotonic()
        r = try_login_fresh(env, user, password)
        if r.startswith("+OK") == want_ok:
            return started - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"after editing the passwd-file, login as {user} still answers {r!r} after {timeout}s")
        time.sleep(0.2)


def test_passwd_file_changes_take_effect_without_restart(env):
    assert try_login_fresh(env, "dave", "dave-pw").startswith("-ERR [AUTH]")
    # In-place append, as `echo >> passwd` does.
    with open(env.passwd.path, "a") as f:
        f.write("dave:{PLAIN}dave-pw\n")
    env.passwd.entries["dave"] = "{PLAIN}dave-pw"
    w1 = wait_for_login_result(env, "dave", "dave-pw", True)
    # Atomic replace, as editors and config management do: change alice's password, drop dave.
    env.passwd.remove("dave").add(ALICE[0], "a-new-password", scheme="SHA512-CRYPT").write(atomic=True)
    w2 = wait_for_login_result(env, "dave", "dave-pw", False)
    wait_for_login_result(env, ALICE[0], "a-new-password", True)
    assert try_login_fresh(env, *ALICE).startswith("-ERR [AUTH]"), "alice's old password still works"
    note(f"passwd-file reload: append seen after {w1:.2f}s, replace after {w2:.2f}s")


def test_password_schemes_and_file_format(env_factory):
    users = {"s512": ("SHA512-CRYPT", "pw-512"), "s256": ("SHA256-CRYPT", "pw-256"), "blf": ("BLF-CRYPT", "pw-blf"),
             "plain": ("PLAIN", "pw-plain")}

    def prefill(e):
        e.passwd.header = "# comment line\n\n# another: with colons:\n\n"
        for u, (scheme, pw) in users.items():
            e.passwd.add(u, pw, scheme=scheme, extra=":1001:1001:Gecos Name:/home/x:/bin/false:userdb_quota_rule=*:storage=1G")
        e.passwd.write()

    e = env_factory(prefill=prefill)
    for u, (scheme, pw) in users.items():
        r = try_login_fresh(e, u, pw)
        assert r.startswith("+OK"), f"{scheme} user {u}: correct password got {r!r} (hash {e.passwd.entries[u]})"
    # Wrong passwords in parallel, each from its own address: failed logins are delayed.
    results: dict[str, str] = {}

    def wrong(i: int, u: str, pw: str) -> None:
        try:
            results[u] = try_login_fresh(e, u, pw + "x", source=f"127.0.0.{30 + i}")
        except Exception as ex:
            results[u] = f"exception {ex!r}"

    threads = [threading.Thread(target=wrong, args=(i, u, pw)) for i, (u, (_, pw)) in enumerate(users.items())]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    for u, (scheme, _) in users.items():
        assert results.get(u, "").startswith("-ERR [AUTH]"), f"{scheme} user {u}: wrong password got {results.get(u)!r}"
