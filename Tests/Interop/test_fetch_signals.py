"""`postie fetch --poll` stopped by SIGINT or SIGTERM (issue 22): it finishes the message in
progress, QUITs (so what it stored is deleted on the server), records its state, releases the
account's lock and exits 130 or 143, whatever signal dispositions it inherited: a script that
ran `trap '' INT` (SIGINT ignored) or blocked SIGINT starts it that way, and Ctrl-C must still
stop it. After each stop: nothing lost, nothing stored twice, nothing both stored and left on
the server, and a second fetch starts at once (the lock is free) and finishes the job.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kits.fetch import expected_local, local_messages, server_messages, write_password
from kits.launcher import HOST
from kits.mail import ALICE, numbered_message


def ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def block_sigint_and_sigterm():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


SCENARIOS = {
    # name: (signal, when, preexec_fn)
    "sigint-mid-transfer": (signal.SIGINT, "transfer", None),
    "sigterm-mid-transfer": (signal.SIGTERM, "transfer", None),
    "sigint-ignored-by-parent": (signal.SIGINT, "transfer", ignore_sigint),
    "sigint-blocked-by-parent": (signal.SIGINT, "transfer", block_sigint_and_sigterm),
    "sigterm-during-poll-pause": (signal.SIGTERM, "pause", None),
    "sigint-ignored-during-poll-pause": (signal.SIGINT, "pause", ignore_sigint),
    "sigint-right-after-login": (signal.SIGINT, "login", None),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fetch_poll_stops_cleanly_on_a_signal(env, postie_bin, tmp_path, name):
    sig, when, preexec = SCENARIOS[name]
    rng = random.Random(name)
    md = env.maildir("alice")
    count = 120 if when == "transfer" else 20
    sent = [numbered_message(i, rng, size=rng.choice([20000, 60000, 150000])) for i in range(count)]
    for m in sent:
        md.deliver(m)
    want = sorted(expected_local(m) for m in sent)
    out = tmp_path / "fetched"
    pw = write_password(tmp_path, "alice", ALICE[1])
    base = [str(postie_bin), "fetch", "--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0],
            "--password-file", str(pw), "--to", f"maildir:{out}"]

    proc = subprocess.Popen(base + ["--poll", "3600", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=preexec)
    started = time.monotonic()
    if when == "transfer":
        # Some messages stored, many to go.
        while len(local_messages(out)) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - started < 60, "nothing fetched in 60 s"
            time.sleep(0.01)
        assert len(local_messages(out)) < count, "the whole mailbox was fetched before the signal"
    elif when == "pause":
        # The first round is done (its summary printed); fetch sleeps until the next.
        line = proc.stdout.readline()
        assert b"exit_code" in line or line.strip(), line
        while len(server_messages(md)) > 0:
            assert time.monotonic() - started < 60
            time.sleep(0.05)
        time.sleep(0.3)
    else:
        # As soon as the server has seen the login: before or during the listing.
        env.server.wait_log(r"Login: user=<alice>", timeout=30)
    signalled = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - signalled
    err = stderr.decode(errors="replace")
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    name_of = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}[sig]
    assert f"{name_of} received" in err, err
    assert f"stopped by {name_of}" in err, err
    if when == "pause":
        assert took < 5, f"the --poll pause did not end at once ({took:.1f} s)"

    local = local_messages(out)
    on_server = [expected_local(m) for m in server_messages(md)]
    assert len(local) == len(set(local)), "a message was stored twice"
    assert set(local) <= set(want)
    assert sorted(local + on_server) == want, "a message was lost, or is both stored and left on the server"
    if when == "transfer":
        assert 0 < len(local) < count and "stopped after" in err, (len(local), err)

    # The lock is free at once, and a plain fetch finishes the job without duplicates.
    r = subprocess.run(base, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert sorted(local_messages(out)) == want
    assert server_messages(md) == []


def test_a_second_signal_stops_at_once(env, postie_bin, tmp_path):
    """A second signal does not wait for the message in progress: exit at once, crash-safe as
    after SIGKILL (the message in progress is fetched again by the next run)."""
    rng = random.Random(2)
    md = env.maildir("alice")
    sent = [numbered_message(i, rng, size=150000) for i in range(60)]
    for m in sent:
        md.deliver(m)
    out = tmp_path / "fetched"
    pw = write_password(tmp_path, "alice", ALICE[1])
    base = [str(postie_bin), "fetch", "--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0],
            "--password-file", str(pw), "--to", f"maildir:{out}"]
    proc = subprocess.Popen(base + ["--poll", "3600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while not local_messages(out):
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # two at once would be merged by the kernel into one
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    # Unless the graceful stop was already over when the second came:
    assert b"received again: stopping now" in stderr or b"stopped by SIGINT" in stderr, stderr
    want = sorted(expected_local(m) for m in sent)
    local = local_messages(out)
    assert len(local) == len(set(local))
    r = subprocess.run(base, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert sorted(local_messages(out)) == want
    assert server_messages(md) == []
