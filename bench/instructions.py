"""CPU instructions per POP3 session, server side, all processes (issue 21): a figure that does
not move with the machine's noise. Used by `bench/run --instructions` (bench/harness.py).

The servers run under Valgrind's callgrind, which counts every instruction executed by every
process it follows (`--trace-children=yes`: Dovecot's master execs its login, auth and pop3
processes). `perf stat -e instructions` would be cheaper, but the test machine's kernel gives
it no hardware counters (a VM without a PMU), so it is not used.

For each server the same fixed workload runs twice, each time from start to stop: `warmup`
sessions, then `warmup + sessions`. Every traced process writes its count when it exits; the
figure is the difference of the two sums over all processes, divided by `sessions`, so start-up,
shutdown and the first cold sessions cancel out. A session
is the one `postie bench` makes: connect, USER/PASS, STAT, UIDL, RETR 1 and 2, QUIT, rotating
over the users; plain text, implicit TLS with a full handshake each time (as `postie bench`),
and implicit TLS resuming the previous session (as a mail client that polls). The resumed
handshakes are counted: a server that does not resume shows it there.

The client runs outside Valgrind and is not counted. Valgrind 3.19 cannot read the DWARF 5 of
Swift's release binaries, so Postie runs from a copy without debug sections (`objcopy
--strip-debug`); the code is the same.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import probes  # bench/probes.py: the benchmarks' POP3 client


def available() -> str | None:
    """None when callgrind can be used, else why not."""
    for tool in ("valgrind", "objcopy"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (Debian: valgrind, binutils)"
    return None


def stripped_copy(binary: Path, directory: Path) -> Path:
    out = directory / (binary.name + "-nodebug")
    subprocess.run(["objcopy", "--strip-debug", str(binary), str(out)], check=True)
    return out


def callgrind_prefix(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    return ["valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={directory}/cg.%p", "--log-file=" + str(directory / "valgrind.%p.log")]


class Client:
    """Runs sessions one after another: plain, TLS with a full handshake each time, or TLS
    resuming the previous session (`resume`: the ticket or session ID the server gave last
    time, as a mail client that polls keeps it). Counts the handshakes that resumed."""

    def __init__(self, tls_context: ssl.SSLContext | None, resume: bool = False):
        self.tls_context, self.resume = tls_context, resume
        self.last: ssl.SSLSession | None = None
        self.resumed = 0

    def session(self, port: int, user: str, password: str) -> None:
        wrap = None
        if self.tls_context:
            session = self.last if self.resume else None
            wrap = lambda raw: self.tls_context.wrap_socket(raw, server_hostname="localhost", session=session)  # noqa: E731
        c = probes.LineClient("127.0.0.1", port, wrap=wrap)
        try:
            c.command(f"USER {user}")
            c.command(f"PASS {password}")
            c.command("STAT")
            c.multiline("UIDL")
            c.multiline("RETR 1")
            c.multiline("RETR 2")
            c.command("QUIT")
            if self.tls_context:
                # TLS 1.3 tickets arrive after the handshake: by QUIT's answer they are in.
                self.resumed += c.sock.session_reused
                self.last = c.sock.session
        finally:
            c.sock.close()


def totals(directory: Path) -> tuple[int, int]:
    """Sum of `totals:` over every process's callgrind file in `directory`, and how many."""
    total, files = 0, 0
    for path in glob.glob(str(directory / "cg.*")):
        with open(path, "rb") as f:
            for raw in f:
                if raw.startswith(b"totals:"):
                    total += int(raw.split()[1])
                    files += 1
                    break
    return total, files


class _Opener(threading.Thread):
    """Callgrind creates each process's output file at exec, as the user it starts as (root),
    mode 0600, and writes it at exit, by which time Dovecot's processes run as unprivileged
    users that could no longer open it. This opens each new file to them as it appears."""

    def __init__(self, directory: Path):
        super().__init__(daemon=True)
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o1777)
        self.directory, self.done = directory, threading.Event()
        self.start()

    def run(self) -> None:
        seen: set[str] = set()
        while not self.done.wait(0.02):
            for path in glob.glob(str(self.directory / "cg.*")):
                if path not in seen:
                    try:
                        os.chmod(path, 0o666)
                        seen.add(path)
                    except OSError:
                        pass

    def stop(self) -> None:
        self.done.set()
        self.join()


def _traced_processes(directory: Path) -> list[int]:
    """Processes still running under callgrind with their output in `directory` (Dovecot's
    children exit after its master, and write their counts when they do)."""
    marker = f"--callgrind-out-file={directory}/".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _wait_for_exit(directory: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _traced_processes(directory):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes under callgrind did not exit: {_traced_processes(directory)}")
        time.sleep(0.2)


def run(start, stop, directory: Path, port: int, logins: list[tuple[str, str]], sessions: int,
        client: Client) -> tuple[int, int, float]:
    """Starts the server under callgrind (`start(prefix)`), runs `sessions`, stops it (`stop()`:
    SIGTERM, so every process writes its counts) and returns (instructions, processes, seconds)."""
    opener = _Opener(directory)
    start(callgrind_prefix(directory))
    started = time.monotonic()
    try:
        for i in range(sessions):
            client.session(port, *logins[i % len(logins)])
    finally:
        seconds = time.monotonic() - started
        stop()
        _wait_for_exit(directory)
        opener.stop()
    total, files = totals(directory)
    empty = [p for p in glob.glob(str(directory / "cg.*")) if os.path.getsize(p) == 0]
    if empty:
        raise RuntimeError(f"callgrind could not write the counts of {len(empty)} processes: see "
                           f"{directory}/valgrind.*.log")
    return total, files, seconds


def measure(start, stop, directory: Path, port: int, logins: list[tuple[str, str]], sessions: int,
            warmup: int, tls_context: ssl.SSLContext | None, resume: bool = False) -> dict:
    """Instructions per session: a run of `warmup` sessions and one of `warmup + sessions`, each
    from start to stop, and the difference over `sessions`, so start-up, shutdown and the first
    (cold) sessions cancel out. (`callgrind_control -z`/`-d` would avoid the second run, but it
    hangs here on Dovecot's unprivileged processes blocked in epoll_wait.)"""
    base, base_files, _ = run(start, stop, directory / "base", port, logins, warmup,
                              Client(tls_context, resume))
    client = Client(tls_context, resume)
    full, full_files, seconds = run(start, stop, directory / "full", port, logins, warmup + sessions, client)
    if not base_files or not full_files:
        raise RuntimeError(f"callgrind wrote no counts under {directory}")
    return {"sessions": sessions, "warmup": warmup, "per_session": (full - base) // sessions, "instructions": full - base,
            "baseline": base, "processes": [base_files, full_files],
            "seconds_under_valgrind": round(seconds, 1),
            **({"resumed": client.resumed, "handshakes": warmup + sessions} if resume else {})}


def self_costs(directory: Path, inclusive: bool = False) -> collections.Counter:
    """Instructions spent in each function itself (not its callees), over every process's
    callgrind file in `directory`, keyed by (program, function); with `inclusive`, its
    callees' too (a recursive function counts its inner calls again)."""
    costs: collections.Counter = collections.Counter()
    for path in glob.glob(str(directory / "cg.*")):
        names: dict[str, str] = {}
        program, fn, after_call = "?", None, False
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("cmd:"):
                    program = os.path.basename(line.split()[1]) if len(line.split()) > 1 else "?"
                elif line.startswith(("fn=", "cfn=")):
                    m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
                    if m and m.group(2):
                        names[m.group(1)] = m.group(2)
                    if line.startswith("fn=") and m:
                        fn = names.get(m.group(1), m.group(1))
                elif line.startswith("calls="):
                    after_call = True
                elif line[:1].isdigit() or line[:1] in "+-*":
                    if after_call:  # the inclusive cost of a call, counted in the callee
                        after_call = False
                        if not inclusive:
                            continue
                    parts = line.split()
                    if fn is not None and len(parts) >= 2:
                        costs[(program, fn)] += int(parts[1])
    return costs


def demangle(names: list[str]) -> list[str]:
    try:
        out = subprocess.run(["swift", "demangle", "--simplified"], input="\n".join(names),
                             capture_output=True, text=True, timeout=60).stdout.split("\n")
        return out[:len(names)] if len(out) >= len(names) else names
    except (OSError, subprocess.SubprocessError):
        return names


def profile(directory: Path, top: int = 40) -> str:
    """Where the instructions of one session go: per function and per program, the longer
    run's counts minus the shorter one's, divided by the sessions counted."""
    sessions = int((directory / "sessions").read_text())
    delta = self_costs(directory / "full")
    delta.subtract(self_costs(directory / "base"))
    total = sum(delta.values())
    lines = [f"{directory.name}: {total // sessions:,} instructions per session ({sessions} sessions)"]
    programs: collections.Counter = collections.Counter()
    for (program, _), cost in delta.items():
        programs[program] += cost
    lines += [f"  {cost / total:6.1%} {cost // sessions:>10,}  {program}" for program, cost in programs.most_common()]
    lines.append("  by function (self):")
    ranked = [key for key, _ in delta.most_common(top)]
    for key, name in zip(ranked, demangle([fn for _, fn in ranked])):
        lines.append(f"  {delta[key] / total:6.1%} {delta[key] // sessions:>10,}  {key[0]}: {name[:140]}")
    return "\n".join(lines)


def inclusive_profile(directory: Path, pattern: str, top: int = 40) -> str:
    """Per session, the instructions of each function whose demangled name matches `pattern`,
    its callees included."""
    sessions = int((directory / "sessions").read_text())
    delta = self_costs(directory / "full", inclusive=True)
    delta.subtract(self_costs(directory / "base", inclusive=True))
    keys = [key for key, cost in delta.items() if cost > 0]
    names = dict(zip(keys, demangle([fn for _, fn in keys])))
    matching = [key for key in keys if re.search(pattern, names[key])]
    matching.sort(key=lambda key: -delta[key])
    lines = [f"{directory.name}: inclusive instructions per session of functions matching {pattern!r}"]
    for key in matching[:top]:
        lines.append(f"  {delta[key] // sessions:>10,}  {key[0]}: {names[key][:150]}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Where the instructions per session go, from a "
                                     "results folder's callgrind-SERVER-MODE directory (bench/run --instructions).")
    parser.add_argument("directories", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--inclusive", metavar="REGEX",
                        help="instead: functions whose demangled name matches, callees included")
    args = parser.parse_args()
    for d in args.directories:
        print(inclusive_profile(d, args.inclusive, args.top) if args.inclusive else profile(d, args.top))
    sys.exit(0)
