"""Password schemes against Dovecot's own `doveadm pw`.

- Every hash Postie makes (Tests/Interop/postie_made_hashes.txt, which the Swift test
  StoredPasswordTests.postieMadeHashesMatchTheInteropFixtures proves Postie still makes
  byte for byte) is accepted by `doveadm pw -t` for the right password only.
- The doveadm fixtures committed in Tests/PasswordsTests/DovecotFixtures.swift still mean
  what they say to this machine's Dovecot (accepted, or refused).
- A live server logs in users whose hashes doveadm has just made, for every scheme and encoding.

doveadm (Debian package dovecot-core) is required: missing, the tests fail, never skip.
"""

from __future__ import annotations

import poplib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from postiekit import Maildir

HERE = Path(__file__).resolve().parent
POSTIE_MADE = HERE / "postie_made_hashes.txt"
SWIFT_FIXTURES = HERE.parent / "PasswordsTests" / "DovecotFixtures.swift"

PASSWORD = "correct horse"
# DES-CRYPT reads only the first eight characters, so the wrong password differs early.
WRONG = "Correct horse"

SCHEMES = [
    "PLAIN", "CLEAR", "CLEARTEXT", "CRYPT", "DES-CRYPT", "MD5", "MD5-CRYPT", "SHA256-CRYPT", "SHA512-CRYPT",
    "BLF-CRYPT", "SHA", "SHA1", "SHA256", "SHA512", "SMD5", "SSHA", "SSHA256", "SSHA512", "PLAIN-MD5", "LDAP-MD5",
    "PBKDF2", "ARGON2I", "ARGON2ID", "CRAM-MD5", "HMAC-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256",
]
SUFFIXES = ["", ".B64", ".BASE64", ".HEX"]
SCHEME_NAMES = [s + e for s in SCHEMES for e in SUFFIXES]


@pytest.fixture(scope="module")
def doveadm() -> str:
    path = shutil.which("doveadm")
    if path is None:
        pytest.fail("doveadm not found: install dovecot-core (scripts/test does)", pytrace=False)
    return path


def dovecot_accepts(doveadm: str, stored: str, password: str) -> bool:
    """`doveadm pw -t`: exit status 0 when the password matches the stored hash."""
    result = subprocess.run([doveadm, "pw", "-t", stored, "-p", password], capture_output=True, timeout=60)
    return result.returncode == 0


def scheme_of(stored: str) -> str:
    return stored[1:stored.index("}")].upper() if stored.startswith("{") else "CRYPT"


def postie_made_hashes() -> list[str]:
    lines = POSTIE_MADE.read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def swift_raw_strings(text: str) -> list[str]:
    """The #"..."# literals of `text`, with the escapes the fixtures use (\\#t, \\#r, \\#n)."""
    escapes = {"t": "\t", "r": "\r", "n": "\n"}
    return [re.sub(r"\\#([trn])", lambda m: escapes[m.group(1)], s) for s in re.findall(r'#"(.*?)"#', text)]


def swift_array(name: str) -> list[str]:
    """The string literals of `let NAME ... = [ ... ]` in DovecotFixtures.swift."""
    source = SWIFT_FIXTURES.read_text()
    match = re.search(r"^let " + re.escape(name) + r"\b.*?= \[\n(.*?)^\]", source, re.S | re.M)
    assert match, f"{name} not found in {SWIFT_FIXTURES}"
    return swift_raw_strings(match.group(1))


def swift_pairs(name: str) -> list[tuple[str, str]]:
    items = swift_array(name)
    assert len(items) % 2 == 0
    return list(zip(items[0::2], items[1::2]))


# MARK: - Postie's hashes in Dovecot


def test_postie_made_hashes_cover_every_scheme_and_encoding():
    assert [scheme_of(h) for h in postie_made_hashes()] == SCHEME_NAMES


@pytest.mark.parametrize("stored", postie_made_hashes(), ids=scheme_of)
def test_dovecot_accepts_what_postie_makes(doveadm, stored):
    assert dovecot_accepts(doveadm, stored, PASSWORD), f"doveadm pw -t refuses Postie's {stored!r}"
    assert not dovecot_accepts(doveadm, stored, WRONG), f"doveadm pw -t accepts a wrong password for {stored!r}"


# MARK: - The Swift fixtures still hold for this Dovecot


def test_swift_fixtures_cover_every_scheme_and_encoding():
    assert sorted(scheme_of(h) for h in swift_array("doveadmHashes")) == sorted(SCHEME_NAMES)


def test_swift_fixtures_are_accepted_by_dovecot(doveadm):
    fixtures = swift_array("doveadmHashes") + swift_array("doveadmGuessedEncodings")
    fixtures += [h for _, h in swift_pairs("doveadmAccepts")]
    refused = [h for h in fixtures if not dovecot_accepts(doveadm, h, PASSWORD)]
    assert not refused


def test_swift_rejected_fixtures_are_refused_by_dovecot(doveadm):
    accepted = [(why, h) for why, h in swift_pairs("doveadmRejects") if dovecot_accepts(doveadm, h, PASSWORD)]
    assert not accepted


# MARK: - A live server with fresh doveadm hashes


def test_postie_logs_in_users_with_fresh_doveadm_hashes(doveadm, postie, tmp_path):
    users = {}
    for i, name in enumerate(SCHEME_NAMES):
        made = subprocess.run([doveadm, "pw", "-s", name, "-p", PASSWORD], capture_output=True, text=True,
                              timeout=60, check=True)
        users[f"user{i}"] = made.stdout.strip()
    passwd = tmp_path / "passwd"
    passwd.write_text("".join(f"{u}:{h}\n" for u, h in users.items()))
    template = str(tmp_path / "mail" / "%u")
    for u in users:
        Maildir(Path(template.replace("%u", u))).create()
    server = postie.make(passwd=passwd, maildir=template).start()

    # Successful logins only: failed ones are deliberately delayed by the brute-force defence,
    # and the Swift tests check wrong passwords for every scheme.
    refused = []
    for u, stored in users.items():
        client = poplib.POP3(server.host, server.port, timeout=30)
        try:
            client.user(u)
            client.pass_(PASSWORD)
            client.quit()
        except poplib.error_proto as e:
            refused.append(f"{stored}: {e}")
            client.close()
    assert not refused, server.log_tail(40)
