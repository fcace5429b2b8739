"""Fault injection: SIGKILL the server around QUIT and check that the UPDATE
state is all-or-nothing, that nothing else changes, and that UIDLs survive.

Deterministic choices come from a seeded RNG (POSTIE_FAULT_SEED, printed);
the kill moment itself depends on timing.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from conftest import note
from kits.mail import ALICE, canonical_crlf, numbered_message, sha
from kits.pop3 import busy_wait, login_within, POP3Raw, ProtocolError, read_quit_reply, snapshot

SEED = int(os.environ.get("POSTIE_FAULT_SEED", "1939"))
ROUNDS = int(os.environ.get("POSTIE_FAULT_ROUNDS", "30"))
BUDGET = float(os.environ.get("POSTIE_FAULT_BUDGET", "100"))  # seconds for the whole loop
MESSAGES = 300


def uid_numbers(c: POP3Raw) -> dict[str, int]:
    return {u: n for n, u in c.listing("UIDL").items()}


def test_sigkill_around_quit_is_atomic(env_factory):
    rng = random.Random(SEED)
    note(f"fault injection: seed {SEED} (set POSTIE_FAULT_SEED to replay), up to {ROUNDS} rounds")
    e = env_factory(start=False)
    md = e.maildir("alice")
    initial = set()
    for i in range(MESSAGES):
        data = numbered_message(i, rng)
        md.deliver(data)
        initial.add(sha(canonical_crlf(data)))
    e.server.start()

    state: dict[str, str] = {}  # UIDL -> content hash of every message that must be present
    pending: tuple[dict[str, str], bool, int] | None = None  # (subset, +OK received, round)
    delivered: set[str] = set()  # hashes delivered since the last session
    gone: set[str] = set()  # UIDLs of messages deleted so far (RFC 1939: never reused)
    outcomes = {"ok": 0, "no-reply/all-deleted": 0, "no-reply/none-deleted": 0}
    max_delay = None
    streak: list[bool] = []
    quit_time = None
    t0 = time.monotonic()
    last_round = ROUNDS
    r = 0
    while True:
        if r > 0:
            e.restart()
        c, waited = login_within(e.host, e.port, ALICE, 30)
        if waited > 0.5:
            note(f"round {r}: login after the SIGKILL waited {waited:.2f}s for the lock")
        snap = snapshot(c)  # raises on a duplicated UIDL or duplicated content

        problems = []
        if r == 0:
            if set(snap.values()) != initial:
                problems.append(f"first session shows {len(snap)} messages, {len(set(snap.values()) & initial)} "
                                f"of the {len(initial)} delivered byte-exact")
        else:
            for uid, h in state.items():
                if uid not in snap:
                    problems.append(f"UIDL {uid} (never DELEted) is missing")
                elif snap[uid] != h:
                    problems.append(f"UIDL {uid} now has different content")
            subset, ok, pr = pending
            present = [u for u in subset if u in snap]
            for u in present:
                if snap[u] != subset[u]:
                    problems.append(f"DELEted-but-kept UIDL {u} has different content")
            early = False
            if ok:
                outcomes["ok"] += 1
                if present:
                    problems.append(f"round {pr}: QUIT answered +OK but {len(present)} of {len(subset)} "
                                    f"DELEted messages are still there: {present[:5]}")
            elif not present:
                outcomes["no-reply/all-deleted"] += 1
            elif len(present) == len(subset):
                outcomes["no-reply/none-deleted"] += 1
                early = True
            else:
                problems.append(f"round {pr}: killed during QUIT, {len(subset) - len(present)} of {len(subset)} "
                                f"DELEted messages gone and {len(present)} still present: the deletion is not atomic")
            # Keep the kill window around the commit point: widen it after three kills in a
            # row that came before it, narrow it after three in a row that came after it.
            if pr > 0:
                streak.append(early)
                if len(streak) >= 3 and all(streak[-3:]):
                    max_delay *= 1.5
                    streak = []
                elif len(streak) >= 3 and not any(streak[-3:]):
                    max_delay = max(max_delay / 1.5, 0.0002)
                    streak = []
            others = {u: h for u, h in snap.items() if u not in state and u not in subset}
            if set(others.values()) != delivered:
                problems.append(f"unexpected messages {sorted(others)[:5]} (new deliveries: {len(delivered)}, "
                                f"matched {len(set(others.values()) & delivered)})")
            reused = [u for u in others if u in gone]
            if reused:
                problems.append(f"UIDLs of deleted messages reused for new mail: {reused[:5]}")
            gone.update(u for u in subset if u not in snap)
        assert not problems, f"round {r} (seed {SEED}): " + "; ".join(problems)
        state = dict(snap)

        if r >= last_round:
            assert c.quit().startswith("+OK")
            c.close()
            break

        nums = uid_numbers(c)
        k = 30 if r == 0 else rng.randint(1, min(30, len(nums) - 1))
        victims = rng.sample(sorted(nums), k)
        c.send(b"".join(b"DELE %d\r\n" % nums[u] for u in victims))
        for u in victims:
            rep = c.reply()
            assert rep.startswith("+OK"), f"round {r}: DELE {nums[u]} got {rep!r}"
        subset = {u: state.pop(u) for u in victims}

        if r == 0:
            # Calibration: how long does QUIT with 30 deletions take when nothing goes wrong?
            t = time.perf_counter()
            rep = c.cmd("QUIT")
            quit_time = time.perf_counter() - t
            assert rep.startswith("+OK"), f"QUIT got {rep!r}"
            max_delay = max(1.5 * quit_time, 0.001)
            note(f"fault injection: QUIT with 30 deletions took {quit_time * 1000:.2f} ms; kill delays drawn from "
                 f"0..{max_delay * 1000:.2f} ms")
            e.server.kill()
            ok = True
        else:
            delay = rng.uniform(0, max_delay)
            c.send(b"QUIT\r\n")
            busy_wait(delay)
            e.server.kill()
            rep = read_quit_reply(c)
            ok = rep is not None and rep.startswith("+OK")
            if rep is not None and not ok:
                raise ProtocolError(f"round {r}: QUIT got {rep!r}")

        c.close()
        pending = (subset, ok, r)

        delivered = set()
        # A few new messages each round, and enough to keep about MESSAGES in the box.
        for j in range(max(rng.randint(0, 3), MESSAGES - len(state) - len(subset))):
            data = numbered_message(10_000 + r * 100 + j, rng)
            md.deliver(data)
            delivered.add(sha(canonical_crlf(data)))

        r += 1
        if time.monotonic() - t0 > BUDGET and r >= 10 and last_round > r:
            note(f"fault injection: time budget reached, stopping after {r} rounds")
            last_round = r
    note(f"fault injection: {r} kill rounds; QUIT answered +OK (all deleted): {outcomes['ok']}; "
         f"no reply and all deleted: {outcomes['no-reply/all-deleted']}; "
         f"no reply and none deleted: {outcomes['no-reply/none-deleted']}; partial: 0; "
         f"final kill window {max_delay * 1000:.2f} ms; {time.monotonic() - t0:.1f}s")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "client-drop"])
def test_interrupted_session_deletes_nothing(env, how):
    """DELE without a completed QUIT never deletes: server killed, server shut down, client gone."""
    rng = random.Random(SEED + 1)
    md = env.maildir("alice")
    for i in range(20):
        md.deliver(numbered_message(i, rng))
    c = POP3Raw(env.host, env.port)
    c.login(*ALICE)
    before = snapshot(c)
    for n in range(1, 21, 2):
        c.ok(f"DELE {n}")
    if how == "SIGKILL":
        env.server.kill()
        c.close()
    elif how == "SIGTERM":
        env.server.proc.send_signal(signal.SIGTERM)
        try:
            env.server.proc.wait(10)
        except Exception:
            pytest.fail("server did not exit within 10s of SIGTERM with a session open")
        c.close()
    else:
        c.abort()
        time.sleep(0.2)
        env.server.stop()
    env.restart()
    c2, _ = login_within(env.host, env.port, ALICE, 30)
    after = snapshot(c2)
    c2.ok("QUIT")
    c2.close()
    assert after == before, (f"after {how} with 10 DELEs and no QUIT: {len(before)} messages before, "
                             f"{len(after)} after; UIDLs or content changed: "
                             f"{sorted(set(before.items()) ^ set(after.items()))[:4]}")
