#!/usr/bin/env python3
"""CPU time per process group over a window, for the figures in docs/performance.md
("Where a session's CPU goes").

    python3 bench/cpu-split.py 10      # run while a benchmark step is under way

Reads user + system time of every process from /proc at the start and the end of the window
and sums the difference per group: `postie serve`, `postie bench` (the load generator),
`postgres`, `dovecot` (all its processes) and `other`; then the machine's busy time from
/proc/stat, and how much of it no live process accounts for (processes that exited during
the window, interrupts). Divide a group's seconds by the sessions made in the window for its
CPU per session.
"""
import os
import sys
import time

from probes import process_stats

DOVECOT = {"pop3", "pop3-login", "auth", "anvil", "log", "config", "stats", "imap-login"}


def group(pid: int) -> str:
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return "other"
    program = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else ""
    if program.startswith("postgres"):
        return "postgres"
    if program.startswith("postie"):
        return "postie " + (argv[1].decode(errors="replace") if len(argv) > 1 else "")
    if program.startswith("dovecot") or program in DOVECOT:
        return "dovecot"
    return "other"


def processes() -> dict:
    """pid -> (clock ticks of user + system time, group)."""
    return {pid: (int(fields[11]) + int(fields[12]), group(pid)) for pid, fields in process_stats()}


def machine() -> tuple:
    """(busy, total) clock ticks of all CPUs (/proc/stat)."""
    ticks = list(map(int, open("/proc/stat").readline().split()[1:9]))
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    seconds = float(sys.argv[1])
    hz = os.sysconf("SC_CLK_TCK")
    before, (busy0, total0) = processes(), machine()
    time.sleep(seconds)
    after, (busy1, total1) = processes(), machine()
    groups: dict = {}
    for pid, (ticks, name) in after.items():
        groups[name] = groups.get(name, 0) + ticks - before.get(pid, (0, name))[0]
    busy = busy1 - busy0
    for name, ticks in sorted(groups.items(), key=lambda item: -item[1]):
        print(f"{name:16s} {ticks / hz:7.2f} s  {100 * ticks / max(1, busy):5.1f} % of busy time")
    print(f"{'machine':16s} {busy / hz:7.2f} s busy of {(total1 - total0) / hz:.2f} s; "
          f"in no live process: {(busy - sum(groups.values())) / hz:.2f} s")


if __name__ == "__main__":
    main()
