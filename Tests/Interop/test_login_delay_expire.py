"""LOGIN-DELAY and EXPIRE (RFC 2449 sections 6.5, 6.7, 8.1.1): global and per-user values,
overrides, defaults and bad settings.
"""

from __future__ import annotations

import re
import time

from kits.authenv import (
    assert_auth_error,
    assert_logged_in,
    fields,
    login_reply,
    serve,
    write_yaml,
)
from kits.launcher import HOST, free_port
from kits.mail import ALICE, BOB
from kits.sasl import capa_value
from kits.tools import run_postie


# --------------------------------------------------------------------------
# 6. LOGIN-DELAY and EXPIRE (RFC 2449 sections 6.5, 6.7, 8.1.1)
# --------------------------------------------------------------------------


def test_login_delay_global(postie, tmp_path):
    # 10 s: the refusals below must all come within the delay even on a slow machine.
    srv = serve(postie, tmp_path, users={"carol": ("carol-pw", "PLAIN")}, config={"login_delay": 10})
    with srv.conn() as c:
        caps = c.capa()
        assert capa_value(caps, "LOGIN-DELAY") == "10 USER", caps
        assert_logged_in(c, c.login(*BOB), BOB[0], "first login")
        t0 = time.monotonic()  # the server's clock started before its +OK
        assert capa_value(c.capa(), "LOGIN-DELAY") == "10"
        c.quit()
    for via in ("USER", "AUTH"):
        r = login_reply(srv, *BOB, via=via)
        assert r.startswith("-ERR [LOGIN-DELAY]"), f"second login within the delay via {via}: {r!r}"
    srv.wait_log(r"Login refused: user=<bob>, method=USER, .*reason=login delay")
    srv.wait_log(r"Login refused: user=<bob>, method=PLAIN, .*reason=login delay")
    # Per user: alice is not delayed by bob's login.
    assert login_reply(srv, *ALICE).startswith("+OK")
    # A failed login does not start the clock.
    assert_auth_error(login_reply(srv, "carol", "wrong"), "carol wrong password")
    assert login_reply(srv, "carol", "carol-pw").startswith("+OK"), "carol's first good login was delayed"
    assert login_reply(srv, "carol", "carol-pw").startswith("-ERR [LOGIN-DELAY]")
    # After the delay bob may log in again.
    time.sleep(max(0.0, 10.2 - (time.monotonic() - t0)))
    r = login_reply(srv, *BOB)
    assert r.startswith("+OK"), f"bob still refused after the delay: {r!r}"


def test_login_delay_per_user(postie, tmp_path):
    srv = serve(postie, tmp_path, users={"dave": ("dave-pw", "PLAIN", fields(login_delay=30)),
                                         "erin": ("erin-pw", "SHA512-CRYPT", fields(login_delay=0))})
    with srv.conn() as c:
        assert capa_value(c.capa(), "LOGIN-DELAY") == "0 USER"
        assert_logged_in(c, c.login("dave", "dave-pw"), "dave", "dave")
        assert capa_value(c.capa(), "LOGIN-DELAY") == "30", "dave's own LOGIN-DELAY after login"
        c.quit()
    r = login_reply(srv, "dave", "dave-pw")
    assert r.startswith("-ERR [LOGIN-DELAY]"), f"dave's second login: {r!r}"
    m = re.search(r"(\d+) seconds", r)
    assert m and 25 <= int(m.group(1)) <= 30, f"wait time in {r!r}"
    for _ in range(2):
        with srv.conn() as c:
            assert_logged_in(c, c.login(*BOB), BOB[0], "bob (no delay)")
            assert capa_value(c.capa(), "LOGIN-DELAY") == "0"
            c.quit()


def test_login_delay_global_overridden_by_user_zero(postie, tmp_path):
    srv = serve(postie, tmp_path, users={"fast": ("fast-pw", "PLAIN", fields(login_delay=0))},
                config={"login_delay": 60})
    for _ in range(2):
        with srv.conn() as c:
            assert_logged_in(c, c.login("fast", "fast-pw"), "fast", "user with login_delay=0")
            assert capa_value(c.capa(), "LOGIN-DELAY") == "0"
            c.quit()
    assert login_reply(srv, *BOB).startswith("+OK")
    assert login_reply(srv, *BOB).startswith("-ERR [LOGIN-DELAY]")


def test_expire_global_and_per_user(postie, tmp_path):
    srv = serve(postie, tmp_path, config={"expire": 30},
                users={"keep": ("keep-pw", "PLAIN", fields(expire="NEVER")),
                       "short": ("short-pw", "PLAIN", fields(expire=5))})
    with srv.conn() as c:
        assert capa_value(c.capa(), "EXPIRE") == "30 USER", "EXPIRE before login"
    for user, pw, want in ((BOB[0], BOB[1], "30"), ("keep", "keep-pw", "NEVER"), ("short", "short-pw", "5")):
        with srv.conn() as c:
            assert_logged_in(c, c.login(user, pw), user, user)
            caps = c.capa()
            assert capa_value(caps, "EXPIRE") == want, f"{user}: CAPA after login {caps}"
            c.quit()


def test_expire_and_login_delay_defaults(postie, tmp_path):
    srv = serve(postie, tmp_path)
    with srv.conn() as c:
        caps = c.capa()
        assert capa_value(caps, "EXPIRE") == "NEVER USER" and capa_value(caps, "LOGIN-DELAY") == "0 USER", caps


def test_bad_login_delay_and_expire_settings_are_refused(postie_bin, tmp_path):
    (tmp_path / "passwd").write_text("bob:{PLAIN}x\n")
    for settings, key in (({"login_delay": -1}, "login_delay"), ({"expire": "sometimes"}, "expire")):
        cfg = write_yaml(tmp_path / f"{key}.yaml", settings)
        r = run_postie(postie_bin, ["serve", "--listen", f"{HOST}:{free_port()}", "--passwd-file", str(tmp_path / "passwd"),
                                    "--maildir", str(tmp_path / "%u"), "--config", str(cfg)], timeout=20)
        assert r.returncode != 0 and key.encode() in r.stderr, f"{settings}: exit {r.returncode}: {r.stderr!r}"
