"""Sign-in with OAuth 2.0 bearer tokens (issue 17): SASL OAUTHBEARER (RFC 7628) and XOAUTH2 with
curl, tokens checked locally against a JWKS file (signed JWTs) or by a local RFC 7662
introspection endpoint; refusals with their reasons in the log; key rotation without a
restart; `mfa=yes` and `--require-mfa`; no token or password in any log line.

Debian's fetchmail (6.4.37) has no OAUTHBEARER or XOAUTH2 (fetchmail 6.5 added them) and
getmail6 offers XOAUTH2 for IMAP only, so the real clients here are curl and mpop (a
fetchmail-like POP3 downloader whose GNU SASL build has both mechanisms), beside Postie's own
client (`postie check --login-method`)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from kits.mail import ALICE, BOB, corpus, Maildir, make_passwd
from kits.oauth import AUDIENCE, ISSUER, IntrospectionEndpoint, SigningKey, claims, write_jwks
from kits.tls import start_tls_server
from kits.tools import curl
from test_tls import assert_received

CLAIM = "preferred_username"


def jwks_server(postie, tmp_path, pki, *keys: SigningKey, extra: list[str] | None = None, passwd=None):
    jwks = write_jwks(tmp_path / "jwks.json", *keys)
    args = ["--oauth2-jwks", str(jwks), "--oauth2-issuer", ISSUER, "--oauth2-audience", AUDIENCE,
            "--oauth2-username-claim", CLAIM] + (extra or [])
    return start_tls_server(postie, tmp_path, pki, extra=args, passwd=passwd), jwks


def curl_list(srv, pki, user: str, token: str, *, implicit: bool = True, message: int | None = None):
    if implicit:
        base = [f"pop3s://localhost:{srv.tls}/{message or ''}", "--resolve", f"localhost:{srv.tls}:127.0.0.1"]
    else:
        base = [f"pop3://127.0.0.1:{srv.plain}/{message or ''}", "--ssl-reqd"]
    args = base + ["--cacert", pki.cafile, "--user", f"{user}:", "--oauth2-bearer", token]
    return curl(args, timeout=30)


def download_all(srv, pki, user: str, token: str, **kw) -> list[bytes]:
    r = curl_list(srv, pki, user, token, **kw)
    assert r.returncode == 0, f"curl LIST: exit {r.returncode}: {r.stderr.decode()}"
    sizes = {int(l.split()[0]): int(l.split()[1]) for l in r.stdout.decode().split("\r\n")[:-1]}
    got = []
    for n in sorted(sizes):
        r = curl_list(srv, pki, user, token, message=n, **kw)
        assert r.returncode == 0, f"curl RETR {n}: exit {r.returncode}: {r.stderr.decode()}"
        assert len(r.stdout) == sizes[n], f"RETR {n}: {len(r.stdout)} octets, LIST said {sizes[n]}"
        got.append(r.stdout)
    return got


def assert_no_secrets(srv, *secrets: str) -> None:
    text = srv.server.log_text()
    for secret in secrets:
        assert secret not in text, f"a secret ({secret[:12]}...) is in the server log"
        # The signature part alone, too: a log line must not hold any piece of a token.
        for piece in secret.split(".")[1:]:
            assert len(piece) < 16 or piece not in text, "a piece of a token is in the server log"


def test_curl_downloads_byte_exact_with_a_token_over_stls_and_pop3s(postie, tmp_path, pki):
    key = SigningKey("k1")
    srv, _ = jwks_server(postie, tmp_path, pki, key)
    md = Maildir(srv.maildir_path("alice")).create()
    expected = dict(corpus())
    for data in expected.values():
        md.deliver(data)
    token = key.sign(claims("alice"))
    for implicit in (True, False):
        assert_received(expected, download_all(srv, pki, "alice", token, implicit=implicit), "crlf",
                        f"curl OAUTHBEARER {'pop3s' if implicit else 'STLS'}")
    logins = srv.server.log_lines(r"pop3-login: Info: Login: user=<alice>, method=OAUTHBEARER,.*credential=token")
    assert len(logins) >= 2 * (len(expected) + 1), srv.server.log_tail()
    assert_no_secrets(srv, token)
    # curl prefers OAUTHBEARER whenever it is offered (7.88 ignores AUTH=XOAUTH2 then): a
    # server offering only XOAUTH2 makes it send that.
    srv.server.stop()
    only = tmp_path / "xoauth2-only"
    only.mkdir()
    srv2, _ = jwks_server(postie, only, pki, key, extra=["--auth-mechanisms", "XOAUTH2"])
    md2 = Maildir(srv2.maildir_path("alice")).create()
    for data in expected.values():
        md2.deliver(data)
    assert_received(expected, download_all(srv2, pki, "alice", token), "crlf", "curl XOAUTH2")
    assert srv2.server.log_lines(r"Login: user=<alice>, method=XOAUTH2,.*credential=token"), srv2.server.log_tail()
    assert_no_secrets(srv2, token)


def run_mpop(tmp: Path, name: str, port: int, implicit: bool, cafile, user: str, token_file: Path,
             mechanism: str) -> tuple[subprocess.CompletedProcess, list[bytes]]:
    """mpop into a fresh Maildir, keeping the mail on the server; returns what it delivered."""
    out = tmp / f"mpop-{name}"
    for sub in ("cur", "new", "tmp"):
        (out / sub).mkdir(parents=True)
    rc = tmp / f"mpoprc-{name}"
    rc.write_text(f"""account {name}
host localhost
port {port}
tls on
tls_starttls {'off' if implicit else 'on'}
tls_trust_file {cafile}
auth {mechanism}
user {user}
passwordeval cat {token_file}
delivery maildir {out}
keep on
received_header off
uidls_file {tmp / f'mpop-{name}.uidls'}
""")
    rc.chmod(0o600)
    r = subprocess.run(["mpop", "-C", str(rc), "-q", name], capture_output=True, timeout=120)
    got = [p.read_bytes() for p in sorted((out / "new").iterdir())] + [p.read_bytes() for p in sorted((out / "cur").iterdir())]
    return r, got


def test_mpop_downloads_byte_exact_with_oauthbearer_and_xoauth2(postie, tmp_path, pki):
    key = SigningKey("k1", "ES256")
    srv, _ = jwks_server(postie, tmp_path, pki, key)
    md = Maildir(srv.maildir_path("alice")).create()
    expected = dict(corpus())
    for data in expected.values():
        md.deliver(data)
    token_file = tmp_path / "alice-token"
    token = key.sign(claims("alice"))
    token_file.write_text(token + "\n")
    for name, port, implicit, mechanism in [("pop3s-oauthbearer", srv.tls, True, "oauthbearer"),
                                            ("stls-xoauth2", srv.plain, False, "xoauth2")]:
        r, got = run_mpop(tmp_path, name, port, implicit, pki.cafile, "alice", token_file, mechanism)
        assert r.returncode == 0, f"mpop {name}: exit {r.returncode}: {r.stderr.decode()}\n{srv.server.log_tail()}"
        # Without its Received header, mpop's Maildir file is the message with LF line ends.
        assert_received(expected, got, "lf", f"mpop {name}")
    bad = tmp_path / "expired-token"
    bad.write_text(key.sign(claims("alice", lifetime=-300)) + "\n")
    r, got = run_mpop(tmp_path, "expired", srv.tls, True, pki.cafile, "alice", bad, "oauthbearer")
    assert r.returncode != 0 and not got
    assert_no_secrets(srv, token, bad.read_text().strip())


def test_refused_tokens_fail_with_their_reason_logged(postie, tmp_path, pki):
    key, other = SigningKey("k1"), SigningKey("k1")  # the same kid, another key: a forgery
    ec = SigningKey("e1", "ES256")
    # No failure delay: eight refusals in a row would otherwise take a minute.
    srv, _ = jwks_server(postie, tmp_path, pki, key, ec, extra=["--auth-failure-delay", "0"])
    Maildir(srv.maildir_path("alice")).create()
    now = int(time.time())
    cases = {
        "expired": (key.sign(claims("alice", lifetime=-120)), r"expired"),
        "wrong audience": (key.sign(claims("alice", audience="another-service")), r"audience"),
        "wrong issuer": (key.sign(claims("alice", issuer="https://evil.test/")), r"issuer"),
        "other key": (other.sign(claims("alice")), r"signature"),
        "unknown kid": (key.sign(claims("alice"), kid="k9"), r"unknown key|kid"),
        "not yet valid": (key.sign(claims("alice", not_before=now + 3600)), r"not yet valid|nbf"),
        "unknown user": (key.sign(claims("nobody")), r"user unknown"),
    }
    for label, (token, _) in cases.items():
        r = curl_list(srv, pki, "alice" if label != "unknown user" else "nobody", token)
        assert r.returncode != 0, f"{label}: curl logged in"
    failures = srv.server.log_lines(r"pop3-login: Info: Login failed: .*method=OAUTHBEARER")
    assert len(failures) >= len(cases), srv.server.log_tail()
    import re
    for label, (_, reason) in cases.items():
        assert any(re.search(reason, l) for l in failures), f"{label}: no failure line says {reason!r}:\n" + "\n".join(failures)
    # A valid ES256 token still works after all that (the failures were delayed, not locked out).
    assert curl_list(srv, pki, "alice", ec.sign(claims("alice"))).returncode == 0
    assert_no_secrets(srv, *(t for t, _ in cases.values()))


def test_rotating_the_jwks_file_takes_effect_without_a_restart(postie, tmp_path, pki):
    old, new = SigningKey("2026-11"), SigningKey("2026-12", "ES256")
    srv, jwks = jwks_server(postie, tmp_path, pki, old)
    Maildir(srv.maildir_path("alice")).create()
    assert curl_list(srv, pki, "alice", old.sign(claims("alice"))).returncode == 0
    assert curl_list(srv, pki, "alice", new.sign(claims("alice"))).returncode != 0
    write_jwks(jwks, new)
    time.sleep(1.1)  # the file's identity is checked at most once a second
    r = curl_list(srv, pki, "alice", new.sign(claims("alice")))
    assert r.returncode == 0, f"the new key's token was refused after rotation: {r.stderr.decode()}\n{srv.server.log_tail()}"
    assert curl_list(srv, pki, "alice", old.sign(claims("alice"))).returncode != 0, "the retired key still works"
    assert srv.server.alive()


def test_introspection_endpoint_active_and_inactive_tokens(postie, tmp_path, pki):
    active, inactive = "opaque-active-4f1c9a", "opaque-revoked-77d0e2"
    endpoint = IntrospectionEndpoint("postie", "client-s3cret", {
        active: {"active": True, CLAIM: "alice", "exp": int(time.time()) + 600, "iss": ISSUER, "aud": AUDIENCE},
        inactive: {"active": False},
    })
    try:
        creds = tmp_path / "oauth2-client"
        creds.write_text("postie\nclient-s3cret\n")
        creds.chmod(0o600)
        srv = start_tls_server(postie, tmp_path, pki, extra=[
            "--oauth2-introspection-url", endpoint.url, "--oauth2-client-credentials", str(creds),
            "--oauth2-username-claim", CLAIM])
        md = Maildir(srv.maildir_path("alice")).create()
        expected = dict(list(corpus().items())[:3])
        for data in expected.values():
            md.deliver(data)
        assert_received(expected, download_all(srv, pki, "alice", active), "crlf", "curl with an introspected token")
        assert curl_list(srv, pki, "alice", inactive).returncode != 0
        assert endpoint.bad_credentials == 0
        assert srv.server.log_lines(r"Login failed: user=<alice>, method=OAUTHBEARER.*inactive")
        # An active token is cached: the downloads above asked the endpoint about it once.
        assert endpoint.requests <= 3, f"{endpoint.requests} introspection requests"
        assert_no_secrets(srv, active, inactive, "client-s3cret")
    finally:
        endpoint.close()


def test_mfa_user_and_require_mfa_refuse_the_account_password(postie, tmp_path, pki):
    key = SigningKey("k1")
    pw = make_passwd(tmp_path)
    pw.add("carol", "carol-pw-1", scheme="PLAIN", extra="::::::mfa=yes")
    pw.write()
    srv, _ = jwks_server(postie, tmp_path, pki, key, passwd=pw.path)
    for user in ("alice", "bob", "carol"):
        Maildir(srv.maildir_path(user)).create()
    base = [f"pop3s://localhost:{srv.tls}/", "--resolve", f"localhost:{srv.tls}:127.0.0.1", "--cacert", pki.cafile]
    assert curl(base + ["--user", "carol:carol-pw-1"]).returncode != 0
    assert srv.server.log_lines(r"Login failed: user=<carol>, method=\w+, .*reason=account password not allowed \(mfa\)")
    assert curl_list(srv, pki, "carol", key.sign(claims("carol"))).returncode == 0
    assert curl(base + ["--user", f"{BOB[0]}:{BOB[1]}"]).returncode == 0
    srv.server.stop()
    srv2, _ = jwks_server(postie, tmp_path / "again" if (tmp_path / "again").mkdir() is None else tmp_path, pki, key,
                          extra=["--require-mfa"], passwd=pw.path)
    base2 = [f"pop3s://localhost:{srv2.tls}/", "--resolve", f"localhost:{srv2.tls}:127.0.0.1", "--cacert", pki.cafile]
    assert curl(base2 + ["--user", f"{BOB[0]}:{BOB[1]}"]).returncode != 0
    assert curl_list(srv2, pki, "bob", key.sign(claims("bob"))).returncode == 0
    assert_no_secrets(srv, "carol-pw-1", BOB[1])
    assert_no_secrets(srv2, BOB[1])


def test_postie_check_logs_in_with_a_token(postie, postie_bin, tmp_path, pki):
    key = SigningKey("k1")
    srv, _ = jwks_server(postie, tmp_path, pki, key)
    Maildir(srv.maildir_path("alice")).create().deliver(b"Subject: hi\r\n\r\nbody\r\n")
    token_file = tmp_path / "token"
    token_file.write_text(key.sign(claims("alice")) + "\n")
    for method in ("OAUTHBEARER", "XOAUTH2"):
        r = subprocess.run([str(postie_bin), "check", "127.0.0.1", "--port", str(srv.plain), "--tls-port", str(srv.tls),
                            "--ca-file", str(pki.cafile), "--user", "alice", "--password-file", str(token_file),
                            "--login-method", method], capture_output=True, text=True, timeout=60)
        # 1 is a WARNING (the test certificate expires within 30 days); the login itself worked.
        assert r.returncode in (0, 1) and "'login'=" in r.stdout, f"postie check {method}: {r.returncode}\n{r.stdout}\n{r.stderr}"
        assert srv.server.log_lines(rf"Login: user=<alice>, method={method},.*credential=token")
