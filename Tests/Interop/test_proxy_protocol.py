"""The PROXY protocol (HAProxy's proxy-protocol.txt) v1 and v2 from a trusted proxy: the
header's address is logged and decides access; valid edge forms are accepted; untrusted peers
and malformed headers are refused.
"""

from __future__ import annotations

import re
import socket

from kits.launcher import HOST
from kits.mail import ALICE, BOB
from kits.pop3 import POP3Raw, received_until_close
from kits.tls import (
    client_context,
    proxy_v1,
    proxy_v2,
    PROXY_V2_SIGNATURE,
    start_tls_server,
)

PLAINTEXT_REFUSED = "-ERR [AUTH] Plaintext authentication disallowed"


# --------------------------------------------------------------------------
# 8. PROXY protocol
# --------------------------------------------------------------------------


def test_proxy_protocol_v1_and_v2_from_a_trusted_proxy(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False,
                           extra_listens={"proxy": "proxy deny=198.51.100.66"},
                           extra=["--proxy-from", "127.0.0.1/32", "--trusted-network", "203.0.113.0/24"])
    port = srv.extra_ports["proxy"]
    ctx = client_context(pki.cafile)

    def via_proxy(header: bytes) -> POP3Raw:
        c = POP3Raw(HOST, port, read_greeting=False)
        c.sock.settimeout(0.3)
        try:
            early = c.sock.recv(100)
        except socket.timeout:
            early = b""
        c.sock.settimeout(10)
        assert early == b"", f"the server spoke before the PROXY header: {early!r}"
        c.send(header)
        c.greeting = c.readline()
        assert c.greeting.startswith(b"+OK"), f"after {header[:40]!r}: {c.greeting!r}"
        return c

    # v1 from an untrusted client address: plaintext login refused (the header's address
    # decides), STLS works.
    with via_proxy(proxy_v1("198.51.100.7", "192.0.2.1", 40001, 110)) as c:
        assert c.cmd(f"USER {ALICE[0]}").startswith(PLAINTEXT_REFUSED)
        c.ok("STLS")
        c.starttls(ctx)
        c.login(*ALICE)
        c.ok("QUIT")
    # v2 IPv4 from a trusted network: plaintext login allowed.
    with via_proxy(proxy_v2("203.0.113.9", "192.0.2.1", 40002, 110)) as c:
        c.login(*BOB)
        c.ok("QUIT")
    # v2 IPv6.
    with via_proxy(proxy_v2("2001:db8::7", "2001:db8::1", 40003, 110)) as c:
        c.ok("STLS")
        c.starttls(ctx)
        c.login(*BOB)
        c.ok("QUIT")
    # v2 LOCAL (the proxy's own health check): the peer's address is used.
    with via_proxy(proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0x0)) as c:
        c.ok("QUIT")
    srv.server.wait_log(r"Disconnected: Logged out", count=3)
    for ip, user in (("198.51.100.7", "alice"), ("203.0.113.9", "bob"), ("2001:db8::7", "bob")):
        lines = srv.server.log_lines(rf"Login: user=<{user}>, method=USER, rip={re.escape(ip)}, ")
        assert lines, f"no login logged with rip={ip} (the PROXY header's address)"
    # Access control uses the proxied address too.
    assert received_until_close(port, proxy_v1("198.51.100.66", "192.0.2.1", 40004, 110)) == b"", \
        "a denied client behind the proxy got a greeting"
    # A PROXY header on a listener without `proxy` is just a bad command from the peer.
    with POP3Raw(HOST, srv.plain) as c:
        r = c.cmd(proxy_v1("192.0.2.99", "192.0.2.1", 1, 2).decode().rstrip("\r\n"))
        assert r.startswith("-ERR"), f"PROXY line on a plain listener got {r!r}"
    assert not srv.server.log_lines(r"rip=192\.0\.2\.99"), "a plain listener honoured a PROXY header"


def test_proxy_protocol_v1_valid_edge_forms(postie, tmp_path, pki):
    """Valid v1 headers from HAProxy's proxy-protocol.txt section 2.1 that must be accepted:
    `PROXY UNKNOWN\\r\\n` (the proxy cannot tell the client's address; use the peer's) and
    single-digit ports ("a 16-bit unsigned integer expressed in decimal, 0 to 65535")."""
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, extra_listens={"proxy": "proxy"},
                           extra=["--proxy-from", "127.0.0.1/32"])
    port = srv.extra_ports["proxy"]
    headers = {
        "UNKNOWN": b"PROXY UNKNOWN\r\n",
        "UNKNOWN with addresses": b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        "one-digit destination port": b"PROXY TCP4 198.51.100.21 192.0.2.1 40001 1\r\n",
        "one-digit source port": b"PROXY TCP4 198.51.100.22 192.0.2.1 7 110\r\n",
    }
    problems = []
    for label, header in headers.items():
        with POP3Raw(HOST, port, read_greeting=False, timeout=5) as c:
            c.send(header)
            try:
                got = c.sock.recv(200)
            except (socket.timeout, ConnectionResetError):
                got = b""
        if not got.startswith(b"+OK"):
            problems.append(f"{label} ({header!r}) got {got!r}")
    refusals = srv.server.log_lines(r"malformed PROXY protocol header")
    assert not problems, "valid PROXY v1 headers refused: " + "; ".join(problems) + f"; log: {refusals}"
    assert srv.server.log_lines(r"rip=198\.51\.100\.21,")


MALFORMED = {
    "bad v1 address": b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n",
    "v1 without CRLF": b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\n",
    "v1 too long": b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    "v1 wrong family": b"PROXY TCP6 192.0.2.1 127.0.0.1 1 2\r\n",
    "v1 bad port": b"PROXY TCP4 192.0.2.1 127.0.0.1 70000 2\r\n",
    "no header": b"USER alice\r\n",
    "http": b"GET / HTTP/1.0\r\n\r\n",
    "v2 bad version": PROXY_V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12),
    "v2 bad family": PROXY_V2_SIGNATURE + b"\x21\x99\x00\x0c" + bytes(12),
    "v2 short addresses": PROXY_V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),
}


def test_proxy_protocol_untrusted_and_malformed_headers_are_refused(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, extra_listens={"proxy": "proxy"},
                           extra=["--proxy-from", "127.0.0.9/32"])
    port = srv.extra_ports["proxy"]
    # From 127.0.0.1, not a trusted proxy: closed with no greeting, header or not.
    for header in (proxy_v1("198.51.100.7", "192.0.2.1", 40001, 110), proxy_v2("198.51.100.7", "192.0.2.1", 1, 2)):
        got = received_until_close(port, header, source="127.0.0.1")
        assert got == b"", f"an untrusted peer's PROXY header was answered: {got[:100]!r}"
    assert not srv.server.log_lines(r"rip=198\.51\.100\.7,"), "the untrusted header's address was used"
    # From the trusted proxy: a good header works, malformed ones are refused.
    with POP3Raw(HOST, port, source="127.0.0.9", read_greeting=False) as c:
        c.send(proxy_v1("198.51.100.8", "192.0.2.1", 40002, 110))
        assert c.reply().startswith("+OK")
        c.ok("QUIT")
    srv.server.wait_log(r"rip=198\.51\.100\.8,")
    for label, header in MALFORMED.items():
        got = received_until_close(port, header, source="127.0.0.9")
        assert got == b"", f"malformed PROXY header ({label}) was answered with {got[:100]!r}"
    assert srv.server.alive()
