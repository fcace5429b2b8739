"""OAuth 2.0 for tests: signing keys, a JWKS file, signed JWTs (RFC 7519) and a local RFC 7662
introspection endpoint. Uses the `cryptography` package for the signatures (the JWS bytes are
put together here: header.payload.signature, base64url without padding, RFC 7515)."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://idp.postie.test/realms/mail"
AUDIENCE = "postie-pop3"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class SigningKey:
    """An RS256 (RSA-2048) or ES256 (P-256) key with its `kid`."""

    def __init__(self, kid: str, alg: str = "RS256"):
        self.kid, self.alg = kid, alg
        if alg == "RS256":
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            self.key = ec.generate_private_key(ec.SECP256R1())
        else:
            raise ValueError(alg)

    def jwk(self) -> dict:
        pub = self.key.public_key().public_numbers()
        if self.alg == "RS256":
            return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": _uint(pub.n), "e": _uint(pub.e)}
        return {"kty": "EC", "kid": self.kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                "x": b64url(pub.x.to_bytes(32, "big")), "y": b64url(pub.y.to_bytes(32, "big"))}

    def sign(self, claims: dict, kid: str | None = None) -> str:
        header = {"alg": self.alg, "typ": "JWT", "kid": kid or self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
        if self.alg == "RS256":
            signature = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input.decode()}.{b64url(signature)}"


def write_jwks(path: Path, *keys: SigningKey) -> Path:
    """Writes the JWKS atomically (a rename, as a key-rotation job would)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": [k.jwk() for k in keys]}))
    tmp.replace(path)
    return path


def claims(user: str, *, claim: str = "preferred_username", lifetime: int = 600, issuer: str = ISSUER,
           audience: str | list[str] = AUDIENCE, not_before: int | None = None, **extra) -> dict:
    now = int(time.time())
    c = {"iss": issuer, "aud": audience, "sub": f"id-{user}", claim: user, "iat": now - 5, "exp": now + lifetime}
    if not_before is not None:
        c["nbf"] = not_before
    c.update(extra)
    return c


class IntrospectionEndpoint:
    """RFC 7662 on 127.0.0.1: POST token=... with HTTP Basic client credentials; `tokens` maps a
    token to the JSON answer (`{"active": false}` for any other). Counts requests."""

    def __init__(self, client_id: str, client_secret: str, tokens: dict[str, dict]):
        self.tokens = tokens
        self.requests = 0
        self.bad_credentials = 0
        expected = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                endpoint.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                if self.headers.get("Authorization") != expected:
                    endpoint.bad_credentials += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                from urllib.parse import parse_qs
                token = parse_qs(body).get("token", [""])[0]
                answer = json.dumps(endpoint.tokens.get(token, {"active": False})).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
