"""Shared helpers of the interop suite (imported as `kits.<module>`; conftest.py puts
Tests/Interop on sys.path).

    pop3       the one raw POP3 client (POP3Raw: strict framing, STLS, implicit TLS, wire bytes)
    scripted   the one scripted POP3 server, for tests of Postie's client side
    launcher   the one server launcher (`postie serve` on loopback: start, wait, log, stop)
    mail       canonical forms, the message corpus, Maildir, passwd-file, the suite's users
    tls        certificates, client contexts, a server with STLS/POP3S, s_client, PROXY headers
    tools      curl, fetchmail, doveadm pw
    dovecot    Debian's Dovecot as the real server for client-side tests
    pg         a throwaway PostgreSQL (also a command: `python3 Tests/Interop/kits/pg.py start DIR`)
"""
