"""Access lists (deny/allow, global and per listener) before the greeting, and the per-IP
connection limit.

Client source addresses 127.0.0.2 ... 127.0.0.9 stand for different hosts: on Linux every
address in 127.0.0.0/8 is local, so a client socket can bind to one before connecting.
"""

from __future__ import annotations

import re
import time

from kits.launcher import HOST
from kits.pop3 import POP3Raw, received_until_close
from kits.tls import (
    start_tls_server,
)


# --------------------------------------------------------------------------
# 7. Access lists and connection limits
# --------------------------------------------------------------------------


def expect_silent_close(port: int, source: str) -> None:
    data = received_until_close(port, source=source)
    assert data == b"", f"a denied client ({source}) received {data[:100]!r}; it must get no greeting"


def expect_greeting(port: int, source: str) -> None:
    with POP3Raw(HOST, port, source=source, read_greeting=False) as c:
        g = c.reply()
        assert g.startswith("+OK"), f"{source} got {g!r}"
        c.ok("QUIT")


def test_deny_and_allow_before_the_greeting(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, listen_opts="deny=127.0.0.2",
                           extra_listens={"allow": "allow=127.0.0.6/32"},
                           extra=["--deny", "127.0.0.5"])
    factory_port = srv.server.port  # a listener without its own list: the global --deny applies
    expect_silent_close(srv.plain, "127.0.0.2")
    expect_greeting(srv.plain, "127.0.0.1")
    expect_greeting(srv.plain, "127.0.0.5")  # the listener's own list replaces the global one
    expect_silent_close(factory_port, "127.0.0.5")
    expect_greeting(factory_port, "127.0.0.2")
    expect_greeting(srv.extra_ports["allow"], "127.0.0.6")
    expect_silent_close(srv.extra_ports["allow"], "127.0.0.7")
    for ip in ("127.0.0.2", "127.0.0.5", "127.0.0.7"):
        assert srv.server.log_lines(rf"Connection refused by access list: rip={re.escape(ip)},"), \
            f"no access-list refusal logged for {ip}"
    # A denied client cannot talk its way in: bytes sent at once are not answered either.
    assert received_until_close(srv.plain, b"CAPA\r\nUSER alice\r\n", source="127.0.0.2") == b""


def test_max_connections_per_ip(postie, tmp_path, pki):
    srv = start_tls_server(postie, tmp_path, pki, implicit=False, extra=["--max-connections-per-ip", "2"])
    ip = "127.0.0.4"
    c1 = POP3Raw(HOST, srv.plain, source=ip)
    c2 = POP3Raw(HOST, srv.plain, source=ip)
    try:
        assert c1.greeting.startswith(b"+OK") and c2.greeting.startswith(b"+OK")
        with POP3Raw(HOST, srv.plain, source=ip, read_greeting=False) as c3:
            g = c3.reply()
            assert g.startswith("-ERR [SYS/TEMP] Too many connections from your IP address"), \
                f"the third connection from {ip} got {g!r}"
            assert c3.expect_closed() == b"", "the refused connection was not closed"
        expect_greeting(srv.plain, "127.0.0.8")  # other addresses are not affected
        assert c1.capa() and c2.capa()
        c1.ok("QUIT")
        c1.close()
        deadline = time.monotonic() + 30
        while True:  # the slot frees once the server has closed c1
            with POP3Raw(HOST, srv.plain, source=ip, read_greeting=False) as c4:
                g = c4.reply()
                if g.startswith("+OK"):
                    c4.ok("QUIT")
                    break
            assert time.monotonic() < deadline, f"after closing one connection, a new one still gets {g!r}"
            time.sleep(0.1)
    finally:
        c1.close()
        c2.close()
    assert srv.server.log_lines(rf"per-IP connection limit reached: rip={re.escape(ip)},")
