"""SASL on the wire (RFC 5034 AUTH) as the tests speak it with a POP3Raw: PLAIN, a full
SCRAM exchange with scramp's client, Base64, and the CAPA SASL line.

Needs the PyPI package `scramp` for SCRAM; missing, it is a failure (need_scramp), never a skip.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

import pytest

try:
    import scramp
except ImportError:  # reported by the tests that need it, as a failure
    scramp = None


def b64e(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def need_scramp():
    if scramp is None:
        pytest.fail("the PyPI package scramp is missing (pip install scramp; scripts/test must install it)",
                    pytrace=False)


def capa_value(lines: list[str], key: str) -> str | None:
    for l in lines:
        if l == key or l.startswith(key + " "):
            return l[len(key):].strip()
    return None


def sasl_list(lines: list[str]) -> list[str] | None:
    v = capa_value(lines, "SASL")
    return None if v is None else v.split()


def sasl_plain(c, user: str, password: str, authzid: str = "", initial: bool = True) -> str:
    msg = f"{authzid}\0{user}\0{password}"
    if initial:
        return c.cmd(f"AUTH PLAIN {b64e(msg)}")
    r = c.cmd("AUTH PLAIN")
    if r != "+ ":
        return r
    return c.cmd(b64e(msg))


@dataclass
class ScramResult:
    reply: str  # the final status line (+OK or -ERR)
    server_first: str | None = None
    server_final: str | None = None
    steps: list[str] = field(default_factory=list)


def scram_login(c, mech: str, user: str, password: str, *, initial: bool = True) -> ScramResult:
    """A full SCRAM exchange (RFC 5802) with scramp's client over AUTH (RFC 5034).

    The server's final message (v=...) comes as a last continuation that the client answers
    with an empty line (RFC 4422 section 5, item 5: no additional data with success in POP3).
    scramp's set_server_final raises if the server signature is wrong."""
    need_scramp()
    client = scramp.ScramClient([mech], user, password)
    first = client.get_client_first()
    res = ScramResult("")
    if initial:
        r = c.cmd(f"AUTH {mech} {b64e(first)}")
    else:
        r = c.cmd(f"AUTH {mech}")
        res.steps.append(r)
        assert r == "+ ", f"AUTH {mech} without initial response: expected an empty challenge '+ ', got {r!r}"
        r = c.cmd(b64e(first))
    res.steps.append(r)
    if not r.startswith("+ "):
        res.reply = r
        return res
    res.server_first = b64d(r[2:]).decode("utf-8")
    client.set_server_first(res.server_first)
    r = c.cmd(b64e(client.get_client_final()))
    res.steps.append(r)
    if not r.startswith("+ "):
        res.reply = r
        return res
    res.server_final = b64d(r[2:]).decode("utf-8")
    client.set_server_final(res.server_final)  # raises ScramException on a bad server signature
    res.reply = c.cmd("")
    res.steps.append(res.reply)
    return res


SERVER_FIRST_RX = re.compile(r"^r=([!-+\--~]+),s=([A-Za-z0-9+/]+=*),i=(\d+)$")
