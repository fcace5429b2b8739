"""The Dovecot fixture itself: plain POP3, STLS, POP3S and the shared passwd-file."""

import poplib

from kits.tls import client_context, make_pki


def test_dovecot_serves_plain_stls_and_pop3s(dovecot, tmp_path):
    pki = make_pki(tmp_path / "pki")
    d = dovecot({"alice": "pw-alice", "bob": "pw-bob"}, cert=pki.a.cert, key=pki.a.key)
    d.maildir("alice").deliver(b"Subject: one\r\n\r\nhello\r\n")
    d.fix_ownership()

    p = poplib.POP3(d.host, d.port, timeout=10)
    assert "STLS" in p.capa()
    p.stls(context=client_context(pki.cafile))
    p.user("alice")
    p.pass_("pw-alice")
    count, size = p.stat()
    assert count == 1 and size == len(b"Subject: one\r\n\r\nhello\r\n")
    assert len(p.uidl()[1]) == 1
    p.quit()

    q = poplib.POP3_SSL(d.host, d.tls_port, context=client_context(pki.cafile), timeout=10)
    q.user("bob")
    q.pass_("pw-bob")
    assert q.stat() == (0, 0)
    q.quit()


def test_dovecot_without_tls_offers_no_stls(dovecot):
    d = dovecot({"carol": "pw-carol"})
    assert d.tls_port is None
    p = poplib.POP3(d.host, d.port, timeout=10)
    assert "STLS" not in p.capa()
    p.user("carol")
    p.pass_("pw-carol")
    assert p.stat() == (0, 0)
    p.quit()
    d.stop()
    d.start()
    p = poplib.POP3(d.host, d.port, timeout=10)
    p.user("carol")
    p.pass_("pw-carol")
    p.quit()
