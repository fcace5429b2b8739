"""`postie fetch` state and accounts: lost state detected and rebuilt, --mark-existing, several
accounts from a config file in parallel with the worst exit code, the password never on the
command line, --delete-larger, --poll and the progress bar.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

from kits.fetch import account, local_messages, msgs, run_fetch, write_password
from kits.launcher import HOST
from kits.mail import ALICE, BOB


# --------------------------------------------------------------------------
# state loss, several accounts, exit codes
# --------------------------------------------------------------------------


def test_lost_state_is_detected_and_rebuilt(env, postie_bin, tmp_path):
    for m in msgs(3):
        env.maildir("alice").deliver(m)
    out = tmp_path / "Maildir"
    pw = write_password(tmp_path, "alice", ALICE[1])
    args = ["--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0], "--password-file", str(pw),
            "--to", f"maildir:{out}", "--keep"]
    code, doc, _, err = run_fetch(postie_bin, args)
    assert code == 0 and account(doc)["fetched"] == 3, err
    state = next(out.glob("postie-fetch-*.state"))
    state.unlink()
    code, doc, _, err = run_fetch(postie_bin, args)
    assert code == 3
    assert "state file" in account(doc)["error"] and "missing" in account(doc)["error"]
    assert "--rebuild-state" in account(doc)["error"]
    assert len(local_messages(out)) == 3
    code, doc, _, err = run_fetch(postie_bin, args + ["--rebuild-state"])
    assert code == 0, err
    assert (account(doc)["fetched"], account(doc)["skipped"]) == (0, 3)
    assert len(local_messages(out)) == 3


def test_mark_existing_then_only_new_mail(env, postie_bin, tmp_path):
    for m in msgs(3):
        env.maildir("alice").deliver(m)
    out = tmp_path / "Maildir"
    args = ["--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0], "--to", f"maildir:{out}"]
    code, doc, _, err = run_fetch(postie_bin, args + ["--mark-existing"], password=ALICE[1])
    assert code == 0 and (account(doc)["marked"], account(doc)["fetched"], account(doc)["deleted"]) == (3, 0, 0), err
    env.maildir("alice").deliver(b"Subject: new\n\nnew one\n")
    code, doc, _, err = run_fetch(postie_bin, args, password=ALICE[1])
    # Without --keep the new message is fetched and deleted; marked ones have no local copy and stay.
    assert code == 0, err
    assert (account(doc)["fetched"], account(doc)["skipped"], account(doc)["deleted"]) == (1, 3, 1)
    assert local_messages(out) == [b"Subject: new\n\nnew one\n"]
    assert len(env.maildir("alice").message_files()) == 3


def test_config_file_several_accounts_in_parallel_worst_exit_code(env, dovecot, postie_bin, tmp_path):
    d = dovecot({"erin": "pw-erin"})
    for m in msgs(2):
        env.maildir("alice").deliver(m)
        d.maildir("erin").deliver(m)
    d.fix_ownership()
    pa = write_password(tmp_path, "alice", ALICE[1])
    pe = write_password(tmp_path, "erin", "pw-erin")
    pb = write_password(tmp_path, "bob", "wrong password")
    cfg = tmp_path / "fetch.yaml"
    cfg.write_text(f"""
accounts:
  - server: {HOST}:{env.port}
    tls: none
    user: {ALICE[0]}
    password-file: {pa}
    to: maildir:{tmp_path}/alice
    keep: true
  - server: {HOST}:{d.port}
    tls: none
    user: erin
    password-file: {pe}
    to: mbox:{tmp_path}/erin.mbox
  - server: {HOST}:{env.port}
    tls: none
    user: {BOB[0]}
    password-file: {pb}
    to: maildir:{tmp_path}/bob
""")
    code, doc, _, err = run_fetch(postie_bin, ["--config", str(cfg)])
    assert code == 2, err
    statuses = [(a["account"].split("@")[0], a["status"], a["fetched"]) for a in doc["accounts"]]
    assert statuses == [(ALICE[0], "ok", 2), ("erin", "ok", 2), (BOB[0], "failed", 0)], statuses
    assert "login as bob failed" in doc["accounts"][2]["error"]
    assert doc["exit_code"] == 2
    # Human output: one line per account.
    r = subprocess.run([str(postie_bin), "fetch", "--config", str(cfg)], capture_output=True, timeout=60)
    assert r.returncode == 2
    assert len(r.stdout.decode().strip().splitlines()) == 3
    assert "skipped 2" in r.stdout.decode().splitlines()[0]


def test_password_never_on_the_command_line(postie_bin, tmp_path):
    r = subprocess.run([str(postie_bin), "fetch", "--server", f"{HOST}:1", "--user", "u", "--to", f"maildir:{tmp_path}/m"],
                       capture_output=True, timeout=30, env={k: v for k, v in os.environ.items() if k != "POSTIE_PASSWORD"})
    assert r.returncode != 0
    assert b"--password-file" in r.stderr and b"POSTIE_PASSWORD" in r.stderr
    r = subprocess.run([str(postie_bin), "fetch", "--password", "x"], capture_output=True, timeout=30)
    assert r.returncode != 0


def test_keep_with_delete_larger_removes_only_big_messages(env, postie_bin, tmp_path):
    small = b"Subject: small\n\n" + b"s" * 300 + b"\n"
    big = b"Subject: big\n\n" + b"b" * 5000 + b"\n"
    env.maildir("alice").deliver(small)
    env.maildir("alice").deliver(big)
    out = tmp_path / "Maildir"
    args = ["--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0], "--to", f"maildir:{out}",
            "--keep", "--delete-larger", "1k"]
    code, doc, _, err = run_fetch(postie_bin, args, password=ALICE[1])
    assert code == 0, err
    assert (account(doc)["fetched"], account(doc)["deleted"]) == (2, 1)
    assert [p.read_bytes() for p in env.maildir("alice").message_files()] == [small]
    assert sorted(local_messages(out)) == sorted([small, big])


def test_poll_fetches_again_until_interrupted(env, postie_bin, tmp_path):
    env.maildir("alice").deliver(b"Subject: first\n\none\n")
    out = tmp_path / "Maildir"
    envv = dict(os.environ, POSTIE_PASSWORD=ALICE[1])
    proc = subprocess.Popen([str(postie_bin), "fetch", "--server", f"{HOST}:{env.port}", "--tls", "none",
                             "--user", ALICE[0], "--to", f"maildir:{out}", "--poll", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=envv)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(l.decode() for l in proc.stdout), daemon=True)
    reader.start()

    def wait_for(cond) -> None:
        deadline = time.monotonic() + 20
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        wait_for(lambda: any("fetched 1" in l for l in lines))
        env.maildir("alice").deliver(b"Subject: second\n\ntwo\n")
        wait_for(lambda: sum("fetched 1" in l for l in lines) >= 2)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        reader.join(timeout=5)
    assert sum("fetched 1," in l and ": ok: " in l for l in lines) == 2, lines
    assert sorted(local_messages(out)) == sorted([b"Subject: first\n\none\n", b"Subject: second\n\ntwo\n"])


def test_progress_bar_only_on_a_terminal(env, postie_bin, tmp_path):
    for m in msgs(3):
        env.maildir("alice").deliver(m)
    envv = dict(os.environ, POSTIE_PASSWORD=ALICE[1])
    args = [str(postie_bin), "fetch", "--server", f"{HOST}:{env.port}", "--tls", "none", "--user", ALICE[0], "--keep"]
    # Not a terminal: only the summary line, nothing on standard error.
    r = subprocess.run(args + ["--to", f"maildir:{tmp_path}/a"], capture_output=True, timeout=60, env=envv)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    assert r.stdout.decode().count("\n") == 1
    # On a terminal (script(1) gives it a pty): a bar that counts up, then erased.
    cmd = " ".join(args + ["--to", f"maildir:{tmp_path}/b"])
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=60, env=envv)
    assert r.returncode == 0, r.stdout
    out = r.stdout.decode()
    assert "[####################] 3/3" in out and "1/3" in out, out
    assert "\r\x1b[K" in out and ": ok: fetched 3" in out
