"""Deleted-mail retention on Maildirs (issue 18): `postie serve --deleted-retention`,
`postie mailbox deleted|undelete`, the sweep and its metrics, Dovecot Maildirs.

* fetchmail deletes 20 messages; `mailbox deleted` lists them with the client's address;
  `undelete --all` gives them back with their UIDLs and octets, and a fetchmail that still
  remembers them (its .fetchids) fetches nothing twice.
* With a 2 s retention the sweep purges retained mail within seconds and /metrics says so.
* `undelete` while the user is logged in, `--uidl` and `--since`, unknown users (exit 67).
* A Maildir Dovecot indexed (dovecot-uidlist): delete and undelete keep Dovecot's UIDLs, for
  Postie and for Dovecot itself.

SIGKILL during a retaining QUIT and `mailbox export` are in test_retention_faults.py.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import pytest

from conftest import note
from kits.launcher import HOST, free_port, wait_port
from kits.mail import ALICE, canonical_crlf, canonical_lf, numbered_message
from kits.metrics import wait_metrics
from kits.retention import INDEX, MailboxCLI, area_files, pop_login, pop_uidls, pop_view, restored_count
from kits.tools import Fetchmail


def cli_for(postie_bin, e) -> MailboxCLI:
    return MailboxCLI(postie_bin, e.passwd.path, e.template)


def deliver(e, n: int, seed: int, user: str = "alice") -> list[bytes]:
    rng = random.Random(seed)
    md = e.maildir(user)
    msgs = [numbered_message(i, rng) for i in range(n)]
    for m in msgs:
        md.deliver(m)
    return msgs


def parse_time(s: str) -> int:
    assert len(s) == 20 and s.endswith("Z"), f"deleted_at {s!r} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)"
    return int(datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())


# --------------------------------------------------------------------------
# 1. fetchmail deletes, undelete gives back, fetchmail does not fetch twice
# --------------------------------------------------------------------------


def test_fetchmail_deletes_then_undelete_restores_uidls_and_bytes(env_factory, postie_bin):
    e = env_factory(extra=["--deleted-retention", "7d"], start=False)
    msgs = deliver(e, 20, seed=18)
    e.server.start()
    cli = cli_for(postie_bin, e)

    original = pop_view(e.host, e.port, *ALICE)
    assert sorted(original.values()) == sorted(canonical_crlf(m) for m in msgs)

    # The client that keeps mail on the server and remembers UIDLs (.fetchids).
    keeper = Fetchmail(e.tmp / "fetchmail-keep", e.port, *ALICE)
    r = keeper.run()
    assert r.returncode == 0, keeper.describe(r)
    assert sorted(f.read_bytes() for f in keeper.take()) == sorted(canonical_lf(m) for m in msgs)
    assert set(keeper.idfile.read_text().split()) >= set(original), "fetchmail's .fetchids lacks the UIDLs"

    # Another client downloads and deletes everything.
    deleter = Fetchmail(e.tmp / "fetchmail-delete", e.port, *ALICE)
    t0 = int(time.time())
    r = deleter.run(keep=False)
    t1 = int(time.time()) + 1
    assert r.returncode == 0, deleter.describe(r)
    assert sorted(f.read_bytes() for f in deleter.take()) == sorted(canonical_lf(m) for m in msgs), \
        "fetchmail --nokeep did not get the 20 messages byte-exact"
    p = pop_login(e.host, e.port, *ALICE)
    assert p.stat() == (0, 0), "POP3 still shows mail after fetchmail deleted it"
    p.quit()
    assert e.maildir("alice").message_files() == [], "deleted files are still in cur/ or new/"

    listed = cli.deleted("alice")
    assert {m["uidl"] for m in listed} == set(original) and len(listed) == 20, \
        f"mailbox deleted lists {[m['uidl'] for m in listed]}, want the 20 deleted UIDLs"
    by_subject = {canonical_crlf(m).split(b"Subject: ")[1].split(b"\r\n")[0].decode(): m for m in msgs}
    for m in listed:
        assert m["address"] == "127.0.0.1", f"retained {m['uidl']} names client {m['address']!r}"
        assert m["size"] == len(original[m["uidl"]])
        assert t0 <= parse_time(m["deleted_at"]) <= t1, f"deleted_at {m['deleted_at']} outside the fetchmail run"
        body = original[m["uidl"]]
        assert m["subject"] in by_subject and canonical_crlf(by_subject[m["subject"]]) == body, \
            f"retained {m['uidl']}: subject {m['subject']!r} is not that message's"
        assert f"Message-ID: {m['message_id']}".encode() in body, f"message_id {m['message_id']!r} not in the message"
    table = cli.run("deleted", "alice").stdout
    assert table.count("127.0.0.1") == 20, f"the table does not name the client 20 times:\n{table}"

    r = cli.undelete("alice", "--all")
    assert restored_count(r) == 20 and r.stdout.splitlines()[-1] == "20 messages restored for alice"
    assert cli.deleted("alice") == []
    after = pop_view(e.host, e.port, *ALICE)
    assert after == original, "undelete --all did not restore the same UIDLs with byte-identical messages"
    assert not (e.maildir("alice").path / INDEX).exists() and area_files(e.maildir("alice").path) == {}

    r = keeper.run()
    assert r.returncode == 1 and keeper.take() == [], \
        f"fetchmail with its old .fetchids downloaded undeleted mail again: {keeper.describe(r)}"
    note("retention: fetchmail deleted 20, undelete --all gave them back, the keeping fetchmail fetched 0")


# --------------------------------------------------------------------------
# 2. the sweep purges after the retention; metrics
# --------------------------------------------------------------------------


def test_short_retention_is_purged_by_the_sweep_and_counted(env_factory, postie_bin):
    mport = free_port()
    e = env_factory(extra=["--deleted-retention", "2s", "--metrics", f"{HOST}:{mport}"], start=False)
    deliver(e, 6, seed=2)
    e.server.start()
    wait_port(mport)
    cli = cli_for(postie_bin, e)
    s = wait_metrics(mport, lambda sc: True)
    assert s.get("pop3_deleted_purged_messages_total") == 0

    p = pop_login(e.host, e.port, *ALICE)
    sizes = {int(l.split()[0]): int(l.split()[1]) for l in p.list()[1]}
    uidls = pop_uidls(p)
    doomed = [1, 2, 3, 5]
    for n in doomed:
        p.dele(n)
    t_quit = time.monotonic()
    p.quit()
    # Retained first (the files are in the area, or already purged if this machine is slow) ...
    md = e.maildir("alice").path
    in_area = set(area_files(md))
    assert len(e.maildir("alice").message_files()) == 2
    # ... then gone within the retention plus a sweep interval, polled up to 10 s.
    cli.wait_deleted("alice", lambda l: l == [], 10, "retained mail purged by the sweep")
    purged_after = time.monotonic() - t_quit
    assert area_files(md) == {} and not (md / INDEX).exists(), "the sweep left files or records behind"
    want_bytes = sum(sizes[n] for n in doomed)
    s = wait_metrics(mport, lambda sc: sc.get("pop3_deleted_purged_messages_total") == 4
                     and sc.get("pop3_deleted_retained_messages") == 0, timeout=10)
    assert s.get("pop3_deleted_purged_messages_total") == 4
    assert s.get("pop3_deleted_purged_bytes_total") == want_bytes
    assert s.get("pop3_deleted_retained_messages") == 0 and s.get("pop3_deleted_retained_bytes") == 0
    assert s.types.get("pop3_deleted_retained_messages") == "gauge"
    assert s.types.get("pop3_deleted_retained_bytes") == "gauge"
    assert s.types.get("pop3_deleted_purged_messages_total") == "counter"
    e.server.wait_log(r"purged 4 messages \(%d bytes\)" % want_bytes, timeout=5)
    left = pop_view(e.host, e.port, *ALICE)
    assert set(left) == {uidls[4], uidls[6]}
    assert cli.undelete("alice", "--all").stdout.strip() == "0 messages restored for alice"
    note(f"retention 2s: 4 messages purged {purged_after:.1f}s after QUIT ({len(in_area)} seen in the area)")


def test_retained_gauges_count_what_is_kept(env_factory, postie_bin):
    """With a retention longer than the test, the gauges show what is retained at the next sweep
    (every half retention: 2 s for 4s); nothing is purged."""
    mport = free_port()
    e = env_factory(extra=["--deleted-retention", "4s", "--metrics", f"{HOST}:{mport}"], start=False)
    deliver(e, 3, seed=3)
    e.server.start()
    wait_port(mport)
    p = pop_login(e.host, e.port, *ALICE)
    size1 = int(p.list(1).split()[2])
    p.dele(1)
    p.quit()
    s = wait_metrics(mport, lambda sc: sc.get("pop3_deleted_retained_messages") == 1
                     or sc.get("pop3_deleted_purged_messages_total") == 1, timeout=10)
    if s.get("pop3_deleted_purged_messages_total") == 0:
        assert s.get("pop3_deleted_retained_bytes") == size1
    s = wait_metrics(mport, lambda sc: sc.get("pop3_deleted_purged_messages_total") == 1
                     and sc.get("pop3_deleted_retained_messages") == 0, timeout=15)
    assert s.get("pop3_deleted_purged_bytes_total") == size1 and s.get("pop3_deleted_retained_bytes") == 0


def test_sigterm_stops_a_server_with_a_long_retention(env_factory):
    """The sweep pauses up to 5 minutes between passes; SIGTERM must not wait for the pause."""
    e = env_factory(extra=["--deleted-retention", "7d"])
    e.server.wait_log("Deleted mail is kept for")
    t = time.monotonic()
    assert e.server.stop(timeout=8) == 0 and not e.server.notes, \
        f"SIGTERM took {time.monotonic() - t:.1f}s: {e.server.notes}"
    e.server.wait_log("master: Info: Stopped", timeout=1)


# --------------------------------------------------------------------------
# 5. undelete while logged in; --uidl, --since; unknown users
# --------------------------------------------------------------------------


def test_undelete_while_logged_in_and_selections(env_factory, postie_bin):
    e = env_factory(extra=["--deleted-retention", "7d"], start=False)
    deliver(e, 10, seed=5)
    e.server.start()
    cli = cli_for(postie_bin, e)
    original = pop_view(e.host, e.port, *ALICE)
    order = list(original)  # UIDLs in message-number order

    # Group A is deleted, then (in a later second) group B.
    p = pop_login(e.host, e.port, *ALICE)
    for n in (1, 2, 3):
        p.dele(n)
    p.quit()
    at_a = parse_time(cli.deleted("alice")[0]["deleted_at"])
    deadline = time.monotonic() + 5
    while int(time.time()) <= at_a:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    p = pop_login(e.host, e.port, *ALICE)
    now = pop_uidls(p)
    group_b = [now[1], now[2]]
    p.dele(1)
    p.dele(2)
    p.quit()
    group_a = order[:3]
    assert group_b == order[3:5]
    listed = cli.deleted("alice")
    assert [m["uidl"] for m in listed][:3] != group_b and {m["uidl"] for m in listed} == set(order[:5])
    at_b = max(parse_time(m["deleted_at"]) for m in listed if m["uidl"] in group_b)
    assert at_b > at_a

    # A session is open while group A is restored by UIDL: it keeps its list.
    s = pop_login(e.host, e.port, *ALICE)
    before = pop_uidls(s)
    assert list(before.values()) == order[5:]
    r = cli.undelete("alice", "--uidl", group_a[0], group_a[2])
    assert restored_count(r) == 2
    assert pop_uidls(s) == before and s.stat()[0] == 5, "the open session saw undeleted mail"
    body = b"".join(l + b"\r\n" for l in s.retr(1)[1])
    assert body == original[order[5]]
    s.dele(5)  # order[9]
    assert s.quit().startswith(b"+OK"), "QUIT after an undelete in the session failed"
    after = pop_view(e.host, e.port, *ALICE)
    want = {u: original[u] for u in [group_a[0], group_a[2]] + order[5:9]}
    assert after == want, f"next session shows {sorted(after)}, want {sorted(want)}"

    # --uidl with an unknown UIDL: the known ones come back, exit 1 names the other.
    r = cli.undelete("alice", "--uidl", group_a[1], "no-such-uidl", check=False)
    assert r.returncode == 1 and "no retained message with UIDL no-such-uidl" in r.stderr, r.stderr
    assert r.stdout.splitlines() == [l for l in r.stdout.splitlines() if l.startswith(f"restored {group_a[1]} ")] \
        and len(r.stdout.splitlines()) == 1, f"undelete printed {r.stdout!r}"

    # --since the second group's time restores that group only (order[9], deleted later still, too).
    stamp = datetime.fromtimestamp(at_b, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    r = cli.undelete("alice", "--since", stamp)
    assert restored_count(r) == 3 and {l.split()[1] for l in r.stdout.splitlines()[:-1]} == set(group_b) | {order[9]}
    assert cli.deleted("alice") == []
    assert pop_view(e.host, e.port, *ALICE) == original
    # --since as a date and as a duration ago.
    p = pop_login(e.host, e.port, *ALICE)
    p.dele(1)
    p.quit()
    assert restored_count(cli.undelete("alice", "--since", "2999-01-01")) == 0
    assert restored_count(cli.undelete("alice", "--since", "1h")) == 1
    assert pop_view(e.host, e.port, *ALICE) == original


def test_mailbox_commands_refuse_unknown_users_and_bad_selections(env_factory, postie_bin, tmp_path):
    e = env_factory(extra=["--deleted-retention", "7d"])
    cli = cli_for(postie_bin, e)
    for args in (["deleted", "nobody", "--json"], ["undelete", "nobody", "--all"],
                 ["export", "nobody", "--to", f"mbox:{tmp_path / 'x.mbox'}"]):
        r = cli.run(*args, check=False)
        assert r.returncode == 67, f"mailbox {' '.join(args)}: exit {r.returncode}, want 67 (EX_NOUSER):\n{r.stderr}"
        assert "nobody" in r.stderr
    for args in (["undelete", "alice"], ["undelete", "alice", "--all", "--since", "1h"],
                 ["undelete", "alice", "--since", "yesterday"], ["export", "alice", "--to", "tape:/dev/st0"]):
        r = cli.run(*args, check=False)
        assert r.returncode == 64, f"mailbox {' '.join(args)}: exit {r.returncode}, want 64 (usage)"
    assert cli.deleted("alice") == []
    assert not (tmp_path / "x.mbox").exists()


# --------------------------------------------------------------------------
# 6. a Maildir indexed by Dovecot keeps Dovecot's UIDLs through delete and undelete
# --------------------------------------------------------------------------


def dovecot_uidls(port: int, user: str, password: str) -> dict[int, str]:
    p = pop_login(HOST, port, user, password)
    try:
        return pop_uidls(p)
    finally:
        p.quit()


@pytest.mark.parametrize("dovecot_between", [False, True],
                         ids=["postie-only", "dovecot-opened-while-retained"])
def test_dovecot_maildir_delete_and_undelete_keep_dovecot_uidls(dovecot, postie, postie_bin, dovecot_between):
    user, password = "alice", "alice-dovecot-pw"
    d = dovecot(users={user: password}, ssl="no")
    rng = random.Random(6)
    md = d.maildir(user)
    msgs = [numbered_message(i, rng) for i in range(8)]
    for m in msgs:
        md.deliver(m)
    d.fix_ownership()
    from_dovecot = dovecot_uidls(d.port, user, password)
    assert len(from_dovecot) == 8 and (md.path / "dovecot-uidlist").exists()
    uidlist_before = (md.path / "dovecot-uidlist").read_text()
    d.stop()

    template = f"{d.mail_root}/%u"
    s = postie.start(passwd=d.passwd_path, maildir=template, extra=["--deleted-retention", "7d"])
    cli = MailboxCLI(postie_bin, d.passwd_path, template)
    original = pop_view(s.host, s.port, user, password)
    assert list(original) == list(from_dovecot.values()), "Postie does not serve Dovecot's UIDLs"
    assert sorted(original.values()) == sorted(canonical_crlf(m) for m in msgs)

    p = pop_login(s.host, s.port, user, password)
    for n in (2, 5, 8):
        p.dele(n)
    p.quit()
    doomed = {from_dovecot[n] for n in (2, 5, 8)}
    assert cli.deleted_uidls(user) == doomed
    assert set(pop_view(s.host, s.port, user, password)) == set(original) - doomed
    s.stop()
    if dovecot_between:
        # Dovecot shows neither the retained mail nor postie-deleted/ as a folder ...
        d.fix_ownership()
        d.start()
        assert set(dovecot_uidls(d.port, user, password).values()) == set(original) - doomed
        d.stop()

    r = cli.undelete(user, "--all")
    assert restored_count(r) == 3
    assert (md.path / "dovecot-uidlist").read_text() == uidlist_before, "undelete did not restore dovecot-uidlist"
    s = postie.start(passwd=d.passwd_path, maildir=template, extra=["--deleted-retention", "7d"])
    assert pop_view(s.host, s.port, user, password) == original, "undelete changed Dovecot UIDLs or bytes"
    s.stop()
    d.fix_ownership()
    d.start()
    again = dovecot_uidls(d.port, user, password)
    assert again == from_dovecot, f"Dovecot after the undelete: {again}, before: {from_dovecot}"
    log = d.log_tail(400)
    for bad in ("Corrupted", "corrupted", "Error:", "Panic", "Fatal", "reappeared"):
        assert bad not in log, f"Dovecot complained ({bad}) after the undelete:\n{log}"
    d.stop()
    # ... and Postie still serves the original UIDLs after Dovecot's look at the mailbox.
    s = postie.start(passwd=d.passwd_path, maildir=template, extra=["--deleted-retention", "7d"])
    assert pop_view(s.host, s.port, user, password) == original
    if not dovecot_between:
        note("retention: Dovecot Maildir, 3 deleted and undeleted, Dovecot and Postie serve the original UIDLs")
