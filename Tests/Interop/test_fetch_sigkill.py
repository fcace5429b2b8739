"""`postie fetch` killed (SIGKILL) at random moments and re-run until done, against Postie and
Dovecot: nothing lost, nothing stored twice, nothing deleted on the server before it was safe
locally.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

from conftest import note
from kits.fetch import expected_local, local_messages, server_messages, write_password
from kits.launcher import HOST
from kits.mail import ALICE, Maildir, numbered_message


# --------------------------------------------------------------------------
# 2. SIGKILL at random moments
# --------------------------------------------------------------------------


def kill_loop(postie_bin: Path, tmp_path: Path, server_md: Maildir, deliver, port: int, user: str, password: str,
              budget: float, seed: int) -> dict:
    """Rounds of: deliver a fresh batch to the server, then run fetch (no --keep) and SIGKILL it
    after a random delay, again and again until a run completes. After every run or kill: no
    message stored twice locally, and every message either still on the server or stored
    locally (so none was deleted before it was safe). Stops starting rounds after `budget` s."""
    rng = random.Random(seed)
    out = tmp_path / f"{user}-Maildir"
    pw = write_password(tmp_path, user, password)
    cmd = [str(postie_bin), "fetch", "--server", f"{HOST}:{port}", "--tls", "none", "--user", user,
           "--password-file", str(pw), "--to", f"maildir:{out}", "--json"]
    want: list[bytes] = []
    deadline = time.monotonic() + budget
    kills = runs = rounds = 0
    while rounds == 0 or time.monotonic() < deadline:
        batch = bulk_messages(30, seed * 1000 + rounds, first=rounds * 1000)
        deliver(batch)
        want += [expected_local(m) for m in batch]
        rounds += 1
        finished = False
        stuck = 0  # kills in a row that stored nothing: on a slow machine, give the next run longer
        while not finished:
            assert time.monotonic() < deadline + 300, f"round {rounds} did not finish ({runs} runs, {kills} kills)"
            runs += 1
            before = len(local_messages(out))
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                _, stderr = proc.communicate(timeout=rng.uniform(0.0, min(10.0, 0.6 * 1.5 ** stuck)))
                assert proc.returncode in (0, 1, 2), (proc.returncode, stderr.decode(errors="replace"))
                finished = proc.returncode == 0
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                kills += 1
            local = local_messages(out)
            stuck = 0 if len(local) > before else stuck + 1
            assert len(local) == len(set(local)), "a message was stored twice locally"
            assert set(local) <= set(want), "something that is not a server message was stored"
            on_server = {expected_local(m) for m in server_messages(server_md)}
            lost = [m for m in want if m not in on_server and m not in local]
            assert not lost, f"{len(lost)} message(s) neither on the server nor stored locally"
        assert sorted(local_messages(out)) == sorted(want)
        assert server_messages(server_md) == []
    return {"rounds": rounds, "runs": runs, "kills": kills, "messages": len(want)}


def bulk_messages(n: int, seed: int, first: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [numbered_message(first + i, rng, size=rng.choice([2000, 20000, 60000, 150000])) for i in range(n)]


def test_sigkill_at_random_moments_against_postie(env, postie_bin, tmp_path):
    md = env.maildir("alice")

    def deliver(batch):
        for m in batch:
            md.deliver(m)

    c = kill_loop(postie_bin, tmp_path, md, deliver, env.port, ALICE[0], ALICE[1], budget=20, seed=1)
    note(f"fetch SIGKILL loop vs postie: {c['rounds']} rounds, {c['messages']} messages, {c['runs']} runs, {c['kills']} SIGKILLs")
    assert c["kills"] >= 10


def test_sigkill_at_random_moments_against_dovecot(dovecot, postie_bin, tmp_path):
    d = dovecot({"carol": "pw-carol"})

    def deliver(batch):
        for m in batch:
            d.maildir("carol").deliver(m)
        d.fix_ownership()

    c = kill_loop(postie_bin, tmp_path, d.maildir("carol"), deliver, d.port, "carol", "pw-carol", budget=20, seed=2)
    note(f"fetch SIGKILL loop vs dovecot: {c['rounds']} rounds, {c['messages']} messages, {c['runs']} runs, {c['kills']} SIGKILLs")
    assert c["kills"] >= 10
