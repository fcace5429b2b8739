"""Deleted-mail retention under faults and concurrency (issue 18), on Maildirs:

* SIGKILL at random moments of a QUIT that deletes many messages with retention on: after
  each restart every message is in the mailbox or in the retention area, never lost and never
  in both, and the outcome matches how far the UPDATE had got on disk when it was killed.
* `postie mailbox export` while a session deletes: the copy is the mailbox before that QUIT
  or after it; the exported Maildir, served by a second Postie, keeps every UIDL; the mbox
  export's X-UIDL headers and messages are checked with Python's mailbox module.

Deterministic choices come from a seeded RNG (POSTIE_FAULT_SEED); the kill moment itself
depends on timing.
"""

from __future__ import annotations

import mailbox
import os
import random
import subprocess
import threading
import time

from conftest import note
from kits.mail import ALICE, PasswdFile, canonical_crlf, numbered_message, sha
from kits.pop3 import busy_wait, login_within, read_quit_reply, snapshot
from kits.retention import (MailboxCLI, area_files, area_records, cur_bases, pop_login, pop_view, restored_count,
                            tombstones)

SEED = int(os.environ.get("POSTIE_FAULT_SEED", "1939"))
KILLS = int(os.environ.get("POSTIE_RETENTION_KILLS", "25"))
MESSAGES = 200


def bases_by_uid(md) -> dict[int, str]:
    """UID -> base name of the messages in `postie-uidlist` (lines `UID SIZE[,...] BASE`)."""
    out = {}
    for line in (md / "postie-uidlist").read_text().splitlines()[1:]:
        parts = line.split(" ")
        if len(parts) == 3 and parts[0].isdigit():
            out[int(parts[0])] = parts[2]
    return out


def stage_on_disk(md, bases: set[str], records_before: list[dict]) -> str:
    """How far the killed UPDATE deleting the messages `bases` had got, read from the Maildir at
    rest: "before" (nothing written), "records" (retention records written, before the commit
    point), "moving" (committed, some files still in cur/), "done" (every file in the area)."""
    tomb, area, cur = tombstones(md), set(area_files(md)), cur_bases(md)
    assert not bases & area & cur, "a message file is both in cur/ and in the retention area"
    if not bases & tomb:
        assert bases <= cur and not bases & area, "an uncommitted deletion moved files"
        old = {(r["base"], r["deleted_at"], r["uidl"]) for r in records_before}
        new = {r["base"] for r in area_records(md) if r["base"] in bases and (r["base"], r["deleted_at"], r["uidl"]) not in old}
        return "records" if new else "before"
    assert bases <= tomb, "the commit point tombstoned only some of the deleted messages"
    assert bases <= area | cur, "a committed message file is in neither cur/ nor the retention area"
    recorded = {r["base"] for r in area_records(md)}
    assert bases <= recorded, "a committed deletion without a retention record (its file would be unlinked)"
    return "done" if bases <= area else "moving"


def test_sigkill_during_a_retaining_quit_loses_nothing(env_factory, postie_bin):
    rng = random.Random(SEED + 18)
    e = env_factory(extra=["--deleted-retention", "7d"], start=False)
    md = e.maildir("alice")
    contents = set()
    for i in range(MESSAGES):
        data = numbered_message(i, rng, size=rng.choice([3000, 6000, 12000]))
        md.deliver(data)
        contents.add(sha(canonical_crlf(data)))
    e.server.start()
    cli = MailboxCLI(postie_bin, e.passwd.path, e.template)

    stages = {"before": 0, "records": 0, "moving": 0, "done": 0}
    ok_replies = 0
    undeletes = 0
    everything: dict[str, str] | None = None
    pending = None  # (victims, stage, QUIT answered +OK, round)
    lo = hi = quit_time = 0.0  # the kill window, in seconds after QUIT was sent
    t0 = time.monotonic()
    for r in range(KILLS + 2):  # round 0 calibrates, rounds 1..KILLS kill, the last checks
        if r > 0:
            e.restart()
        c, _ = login_within(e.host, e.port, ALICE, 30)
        if everything is None:
            everything = snapshot(c)  # UIDL -> content hash
            assert set(everything.values()) == contents and len(everything) == MESSAGES
        live = set(c.listing("UIDL").values())
        listed = cli.deleted("alice")
        retained = {m["uidl"] for m in listed}
        where = f"round {r} (seed {SEED})"
        assert len(retained) == len(listed), f"{where}: mailbox deleted lists a UIDL twice"
        assert not live & retained, f"{where}: in the mailbox and retained at once: {sorted(live & retained)[:5]}"
        lost = set(everything) - live - retained
        assert not lost, f"{where}: lost (neither in the mailbox nor retained): {sorted(lost)[:5]}"
        assert live | retained == set(everything), f"{where}: unknown UIDLs {sorted(live | retained - set(everything))}"
        assert all(m["address"] == "127.0.0.1" for m in listed), f"{where}: a record without the client address"
        if pending:
            victims, stage, ok, pr = pending
            if stage in ("before", "records"):
                assert victims <= live, f"round {pr}: killed {stage} the commit point, yet messages were deleted"
                assert not ok, f"round {pr}: QUIT answered +OK but the UPDATE had not committed"
            else:
                assert victims <= retained, f"round {pr}: killed after the commit point ({stage}), " \
                                            f"{len(victims - retained)} deleted messages are not retained"
            if ok:
                assert stage == "done", f"round {pr}: +OK to QUIT before every file was in the area ({stage})"
        if r == KILLS + 1:
            c.quit()
            c.close()
            break

        if len(live) < 90:
            assert c.quit().startswith("+OK")
            c.close()
            assert restored_count(cli.undelete("alice", "--all")) == len(retained)
            undeletes += 1
            c, _ = login_within(e.host, e.port, ALICE, 30)
            nums = {u: n for n, u in c.listing("UIDL").items()}
            assert set(nums) == set(everything), f"{where}: after undelete --all the mailbox is not whole"
        else:
            nums = {u: n for n, u in c.listing("UIDL").items()}
        victims = set(rng.sample(sorted(nums), rng.randint(30, min(80, len(nums) - 5))))
        by_uid = bases_by_uid(md.path)  # UIDLs are %08x of the UID, then of UIDVALIDITY
        bases = {by_uid[int(u[:8], 16)] for u in victims}
        records_before = area_records(md.path)
        c.send(b"".join(b"DELE %d\r\n" % nums[u] for u in sorted(victims)))
        for _ in victims:
            rep = c.reply()
            assert rep.startswith("+OK"), f"{where}: DELE got {rep!r}"
        if r == 0:
            t = time.perf_counter()
            rep = c.cmd("QUIT")
            quit_time = time.perf_counter() - t
            assert rep.startswith("+OK"), rep
            hi = max(1.5 * quit_time, 0.001)
            ok = True
        else:
            c.send(b"QUIT\r\n")
            delay = rng.uniform(lo, hi)
            busy_wait(delay)
            e.server.kill()
            rep = read_quit_reply(c)
            ok = rep is not None and rep.startswith("+OK")
            assert rep is None or ok, f"{where}: QUIT got {rep!r}"
        e.server.kill()
        c.close()
        stage = stage_on_disk(md.path, bases, records_before)
        if r > 0:
            stages[stage] += 1
            ok_replies += ok
            # Close the window in on the UPDATE: a kill before it moves the low end up, one
            # after it the high end down (halfway, timing varies); a window too narrow widens.
            if stage == "before":
                lo = (lo + delay) / 2
            elif stage == "done":
                hi = (hi + delay) / 2
            if hi - lo < 0.0005:
                lo, hi = max(lo - 0.001, 0.0), hi + 0.002
        pending = (victims, stage, ok, r)

    # Everything comes back byte-exact with its UIDL.
    undone = cli.undelete("alice", "--all")
    c, _ = login_within(e.host, e.port, ALICE, 30)
    final = snapshot(c)
    c.quit()
    c.close()
    assert final == everything, f"after undelete --all ({restored_count(undone)} restored): the mailbox differs " \
                                f"from the original ({len(final)} vs {len(everything)} messages)"
    assert area_files(md.path) == {}
    note(f"retention SIGKILL: {KILLS} kills during QUITs deleting 30-80 of {MESSAGES} messages, seed {SEED}: "
         f"before the UPDATE {stages['before']}, records written but not committed {stages['records']}, "
         f"committed and moving {stages['moving']}, done {stages['done']} (+OK received {ok_replies}); "
         f"mid-commit {stages['records'] + stages['moving']}; calibrated QUIT {quit_time * 1000:.1f} ms, "
         f"final window {lo * 1000:.1f}-{hi * 1000:.1f} ms; {undeletes} undelete --all; {time.monotonic() - t0:.1f}s")


def test_export_during_a_deleting_session_is_before_or_after_its_quit(env_factory, postie, postie_bin, tmp_path):
    rng = random.Random(SEED + 4)
    e = env_factory(extra=["--deleted-retention", "7d"], start=False)
    for i in range(40):
        e.maildir("alice").deliver(numbered_message(i, rng))
    e.server.start()
    cli = MailboxCLI(postie_bin, e.passwd.path, e.template)
    original = pop_view(e.host, e.port, *ALICE)
    order = list(original)
    before, after = set(order), set(order[20:])

    deleted = threading.Event()
    outcome: dict[str, object] = {}

    def session():
        try:
            p = pop_login(e.host, e.port, *ALICE)
            for n in range(1, 21):
                p.dele(n)
            deleted.set()
            time.sleep(1.0)
            outcome["quit"] = p.quit()
        except Exception as exc:  # reported by the main thread
            outcome["error"] = exc
            deleted.set()

    t = threading.Thread(target=session)
    t.start()
    assert deleted.wait(30)
    export_md = tmp_path / "export" / "alice"
    mbox_path = tmp_path / "alice.mbox"
    exports = [subprocess.Popen([str(postie_bin), "mailbox", "export", "alice", "--to", target, *cli.store],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for target in (f"maildir:{export_md}", f"mbox:{mbox_path}")]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in exports]
    t.join(30)
    assert "error" not in outcome, f"the deleting session failed: {outcome.get('error')!r}"
    assert outcome["quit"].startswith(b"+OK")
    for out, err, rc in results:
        assert rc == 0, f"mailbox export exited {rc}:\n{out}\n{err}"
    assert cli.deleted_uidls("alice") == before - after

    # The exported Maildir, served by a second Postie, has the original UIDLs and octets.
    own = PasswdFile(tmp_path / "second.passwd").add(*ALICE, scheme="PLAIN")
    own.write()
    second = postie.start(passwd=own.path, maildir=str(tmp_path / "export" / "%u"), name="second")
    exported = pop_view(second.host, second.port, *ALICE)
    state = set(exported)
    assert state in (before, after), \
        f"the export holds {len(state)} messages: neither the mailbox before the QUIT (40) nor after it (20)"
    assert exported == {u: original[u] for u in order if u in state}, "exported messages differ from the originals"
    uidlist = (export_md / "dovecot-uidlist").read_text()
    assert all(f" P{u}" in uidlist for u in state), f"dovecot-uidlist does not record the UIDLs:\n{uidlist[:500]}"
    assert f"exported {len(state)} messages" in results[0][0]

    # A second export into the same Maildir adds nothing.
    again = cli.export("alice", f"maildir:{export_md}")
    assert pop_view(second.host, second.port, *ALICE) == exported, f"a second export changed the copy: {again.stdout}"

    # The mbox: X-UIDL first, then the message (LF line ends).
    box = mailbox.mbox(str(mbox_path), create=False)
    got = {}
    for key in box.keys():
        raw = box.get_bytes(key)
        uidl = box[key]["X-UIDL"]
        assert raw.startswith(b"X-UIDL: %s\n" % uidl.encode()), f"mbox message does not start with X-UIDL: {raw[:80]!r}"
        got[uidl] = raw[len(b"X-UIDL: \n") + len(uidl):]
    mbox_state = set(got)
    assert mbox_state in (before, after), f"the mbox export holds {len(mbox_state)} messages, neither state"
    for u, body in got.items():
        want = original[u].replace(b"\r\n", b"\n")
        assert body in (want, want + b"\n"), f"mbox message {u} differs from the original"
    r = cli.export("alice", f"mbox:{mbox_path}", check=False)
    assert r.returncode == 73, f"export over an existing mbox: exit {r.returncode}, want 73"
    note(f"retention export: the concurrent Maildir export saw the mailbox "
         f"{'after' if state == after else 'before'} the QUIT, the mbox export "
         f"{'after' if mbox_state == after else 'before'} it; re-served with every UIDL")
