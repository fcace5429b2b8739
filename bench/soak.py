#!/usr/bin/env python3
"""Soak test (issue 22): a long mixed load on one `postie serve` while the server is killed
(SIGKILL) and restarted at random, then every message accounted for by its Message-ID.

Load, all on loopback:
- LMTP deliveries of uniquely numbered messages to 20 users (the message counts as delivered
  only after its 250 reply);
- POP3 sessions over plain text, STLS and implicit TLS that RETR some messages and DELE the
  ones they retrieved (a message counts as downloaded once its bytes arrived, before DELE);
- slow clients (a byte every few seconds), abusive ones (pipelined garbage, over-long lines,
  never reading replies) and brute-force noise (wrong passwords from 127.0.0.9).

Every few seconds the sampler records the server's RSS, open descriptors and the latency of
a probe login. At the end the mailboxes are drained and each delivered Message-ID must be
either still on the server or downloaded by a client (none lost), and none may be on the
server twice or downloaded by two sessions whose QUIT both succeeded (none duplicated).

    bench/soak --duration 30m [--kill-every 120] [--postie BIN] [--out DIR]

Prints the accounting and the trend of RSS and descriptors per server lifetime, and writes
samples.csv, summary.json and soak.png (RSS, descriptors, latency over time) to DIR.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import poplib
import random
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

USERS = [f"user{i:02d}" for i in range(20)]
PASSWORD = "soak-pw"
MSGID = re.compile(rb"^Message-ID: <soak-(\d+)@postie\.test>", re.M | re.I)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


class Server:
    """`postie serve` with POP3 (plain + STLS), implicit TLS, LMTP and metrics; restartable on
    the same ports."""

    def __init__(self, binary: Path, root: Path):
        self.binary, self.root = binary, root
        self.port, self.tls_port, self.lmtp_port = free_port(), free_port(), free_port()
        self.cert, self.key = root / "cert.pem", root / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(self.key), "-out", str(self.cert)],
                       check=True, capture_output=True)
        hashed = subprocess.run([str(binary), "pw", "hash", "--scheme", "SHA512-CRYPT"], input=PASSWORD + "\n", capture_output=True,
                                text=True, check=True).stdout.strip().splitlines()[-1]
        (root / "passwd").write_text("".join(f"{u}:{hashed}::::::\n" for u in USERS))
        self.proc: subprocess.Popen | None = None
        self.lifetimes: list[dict] = []

    def start(self) -> None:
        args = [str(self.binary), "serve", "--listen", f"127.0.0.1:{self.port}", "--listen-tls", f"127.0.0.1:{self.tls_port}",
                "--listen-lmtp", f"127.0.0.1:{self.lmtp_port}", "--passwd-file", str(self.root / "passwd"),
                "--maildir", f"{self.root}/mail/%u", "--tls-cert", str(self.cert), "--tls-key", str(self.key),
                "--trusted-network", "127.0.0.1/32", "--idle-timeout", "60", "--log-level", "warning"]
        with open(self.root / "postie.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(64).startswith(b"+OK"):
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("postie did not start; see postie.log")
        self.lifetimes.append({"pid": self.proc.pid, "start": time.monotonic(), "samples": []})

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def usage(self) -> tuple[int, int] | None:
        """RSS in KiB and open descriptors, or None between lifetimes."""
        try:
            pid = self.proc.pid
            rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
            return rss, len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration, AttributeError):
            return None


class Ledger:
    """What the clients saw, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.delivered: set[int] = set()
        self.downloaded: dict[int, int] = {}  # id -> sessions whose QUIT with its DELE got +OK
        self.seen: set[int] = set()  # every id whose bytes a client received
        self.errors: dict[str, int] = {}
        self.counts = {"lmtp_ok": 0, "lmtp_fail": 0, "pop_ok": 0, "pop_in_use": 0, "pop_err": 0, "pop_fail": 0, "abuse": 0, "brute": 0, "slow": 0}

    def note_error(self, text: str) -> None:
        with self.lock:
            key = re.sub(r"\d+", "N", text)[:120]
            self.errors[key] = self.errors.get(key, 0) + 1

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n


def message(n: int, rng: random.Random) -> bytes:
    body = "".join(f"line {i} {'x' * rng.randrange(0, 70)}\r\n" for i in range(rng.randrange(3, 200)))
    if rng.random() < 0.1:
        body += ".leading dot\r\n..two\r\n"
    return (f"From: soak@postie.test\r\nTo: someone@postie.test\r\nSubject: soak {n}\r\n"
            f"Message-ID: <soak-{n}@postie.test>\r\n\r\n{body}").encode()


def deliverer(server: Server, ledger: Ledger, stop: threading.Event, counter, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with smtplib.LMTP("127.0.0.1", server.lmtp_port, timeout=30) as c:
                c.ehlo("soak")
                for _ in range(rng.randrange(1, 20)):
                    if stop.is_set():
                        break
                    n = next(counter)
                    user = rng.choice(USERS)
                    refused = c.sendmail("soak@postie.test", [user], message(n, rng))
                    if not refused:
                        with ledger.lock:
                            ledger.delivered.add(n)
                        ledger.add("lmtp_ok")
        except (OSError, smtplib.SMTPException):
            ledger.add("lmtp_fail")
            time.sleep(0.2)
        time.sleep(rng.random() * 0.05)


def pop_session(server: Server, mode: str) -> poplib.POP3:
    context = ssl.create_default_context(cafile=str(server.cert))
    if mode == "implicit":
        p = poplib.POP3_SSL("127.0.0.1", server.tls_port, timeout=30, context=context)
    else:
        p = poplib.POP3("127.0.0.1", server.port, timeout=30)
        if mode == "stls":
            p.stls(context=context)
    return p


def retriever(server: Server, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        mode = rng.choice(["plain", "stls", "implicit"])
        got: list[int] = []
        try:
            p = pop_session(server, mode)
            p.user(rng.choice(USERS))
            p.pass_(PASSWORD)
            count = len(p.list()[1])
            for number in rng.sample(range(1, count + 1), min(count, rng.randrange(0, 15))):
                data = b"\r\n".join(p.retr(number)[1])
                m = MSGID.search(data)
                if m:
                    n = int(m.group(1))
                    with ledger.lock:
                        ledger.seen.add(n)
                    if rng.random() < 0.8:
                        p.dele(number)
                        got.append(n)
            p.quit()
            with ledger.lock:
                for n in got:
                    ledger.downloaded[n] = ledger.downloaded.get(n, 0) + 1
            ledger.add("pop_ok")
        except poplib.error_proto as e:
            # [IN-USE]: another retriever has the mailbox, as POP3 intends.
            in_use = "IN-USE" in str(e)
            ledger.add("pop_in_use" if in_use else "pop_err")
            if not in_use:
                ledger.note_error(f"{mode}: {e}")
            time.sleep(0.05)
        except (OSError, ssl.SSLError, EOFError) as e:
            ledger.add("pop_fail")
            ledger.note_error(f"{mode}: {type(e).__name__}: {e}")
            time.sleep(0.2)


def abuser(server: Server, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                kind = rng.randrange(4)
                if kind == 0:  # pipelined garbage, never reading
                    s.sendall(b"CAPA\r\nNOOP\r\nXYZZY\r\n" * 2000)
                elif kind == 1:  # an over-long line
                    s.sendall(b"USER " + b"A" * 100_000 + b"\r\n")
                elif kind == 2:  # binary noise
                    s.sendall(bytes(rng.randrange(256) for _ in range(4096)))
                else:  # slow drip
                    ledger.add("slow")
                    for byte in b"USER x\r\n":
                        if stop.is_set():
                            break
                        s.sendall(bytes([byte]))
                        time.sleep(rng.uniform(1, 4))
                ledger.add("abuse")
        except OSError:
            time.sleep(0.2)


def brute(server: Server, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=30, source_address=("127.0.0.9", 0)) as s:
                f = s.makefile("rb")
                f.readline()
                s.sendall(f"USER {rng.choice(USERS)}\r\nPASS wrong{rng.randrange(10**6)}\r\n".encode())
                f.readline()
                f.readline()
                ledger.add("brute")
        except OSError:
            time.sleep(0.5)
        time.sleep(rng.uniform(0.5, 2))


def probe_latency(server: Server) -> float | None:
    start = time.monotonic()
    try:
        p = poplib.POP3("127.0.0.1", server.port, timeout=30)
        p.user(USERS[0])
        p.pass_(PASSWORD)
        p.stat()
        p.rset()
        p.quit()
        return (time.monotonic() - start) * 1000
    except (OSError, poplib.error_proto):
        return None


def drain(server: Server, ledger: Ledger) -> tuple[dict[int, int], list[str]]:
    """Every message left on the server (id -> copies), reading each mailbox whole."""
    left: dict[int, int] = {}
    problems = []
    for user in USERS:
        for attempt in range(20):
            try:
                p = pop_session(server, "plain")
                p.user(user)
                p.pass_(PASSWORD)
                for line in p.list()[1]:
                    number = int(line.split()[0])
                    m = MSGID.search(b"\r\n".join(p.top(number, 0)[1]))
                    if m:
                        left[int(m.group(1))] = left.get(int(m.group(1)), 0) + 1
                    else:
                        problems.append(f"{user} message {number} has no soak Message-ID")
                p.quit()
                break
            except (OSError, poplib.error_proto) as e:
                if attempt == 19:
                    problems.append(f"{user}: cannot drain: {e}")
                time.sleep(1)
    return left, problems


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (units per hour) of (seconds, value) points."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    return 0.0 if var == 0 else sum((p[0] - mx) * (p[1] - my) for p in points) / var * 3600


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postie", type=Path, required=True)
    ap.add_argument("--duration", type=parse_duration, default=parse_duration("30m"))
    ap.add_argument("--kill-every", type=parse_duration, default=120.0, help="mean seconds between SIGKILLs (0: never)")
    ap.add_argument("--retrievers", type=int, default=6)
    ap.add_argument("--deliverers", type=int, default=2)
    ap.add_argument("--abusers", type=int, default=3)
    ap.add_argument("--sample-every", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="postie-soak-"))
    out = args.out or Path("bench/results") / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    server = Server(args.postie.resolve(), root)
    server.start()
    log(f"soak: {args.duration:.0f} s, SIGKILL every ~{args.kill_every:.0f} s, seed {args.seed}, work dir {root}")

    ledger, stop = Ledger(), threading.Event()
    counter_lock = threading.Lock()
    state = {"n": 0}

    def next_id(_=None):
        with counter_lock:
            state["n"] += 1
            return state["n"]

    class Counter:
        def __next__(self):
            return next_id()

    threads = []
    for i in range(args.deliverers):
        threads.append(threading.Thread(target=deliverer, args=(server, ledger, stop, Counter(), args.seed + i), daemon=True))
    for i in range(args.retrievers):
        threads.append(threading.Thread(target=retriever, args=(server, ledger, stop, args.seed + 100 + i), daemon=True))
    for i in range(args.abusers):
        threads.append(threading.Thread(target=abuser, args=(server, ledger, stop, args.seed + 200 + i), daemon=True))
    threads.append(threading.Thread(target=brute, args=(server, ledger, stop, args.seed + 300), daemon=True))
    for t in threads:
        t.start()

    samples = []
    kills = 0
    began = time.monotonic()
    next_kill = began + (rng.uniform(0.5, 1.5) * args.kill_every if args.kill_every else float("inf"))
    next_sample = began
    while time.monotonic() - began < args.duration:
        now = time.monotonic()
        if now >= next_kill:
            server.kill()
            kills += 1
            time.sleep(rng.uniform(0, 1))
            server.start()
            next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * args.kill_every
        if now >= next_sample:
            usage = server.usage()
            latency = probe_latency(server)
            if usage:
                t = now - began
                samples.append({"t": round(t, 1), "pid": server.proc.pid, "rss_kib": usage[0], "fds": usage[1],
                                "probe_ms": None if latency is None else round(latency, 1)})
                server.lifetimes[-1]["samples"].append((t, usage[0], usage[1]))
            next_sample = now + args.sample_every
        time.sleep(0.1)

    stop.set()
    for t in threads:
        t.join(timeout=60)
    left, problems = drain(server, ledger)
    server.stop()

    delivered = ledger.delivered
    lost = sorted(n for n in delivered if n not in left and n not in ledger.seen)
    on_server_twice = sorted(n for n, c in left.items() if c > 1)
    deleted_and_left = sorted(n for n, c in ledger.downloaded.items() if n in left)
    double_downloads = sorted(n for n, c in ledger.downloaded.items() if c > 1)
    unknown = sorted(n for n in left if n not in delivered)

    lifetimes = []
    for life in server.lifetimes:
        pts = life["samples"]
        # The second half of the lifetime: start-up growth (thread pools, allocator arenas,
        # caches) is over by then, so what is left of a slope is a trend.
        steady = [p for p in pts if pts and p[0] >= (pts[0][0] + pts[-1][0]) / 2]
        lifetimes.append({"pid": life["pid"], "samples": len(pts),
                          "rss_kib_first_last": [pts[0][1], pts[-1][1]] if pts else None,
                          "rss_slope_kib_per_hour": round(slope([(p[0], p[1]) for p in steady]), 1),
                          "fds_first_last": [pts[0][2], pts[-1][2]] if pts else None,
                          "fds_slope_per_hour": round(slope([(p[0], p[2]) for p in steady]), 1)})
    latencies = sorted(s["probe_ms"] for s in samples if s["probe_ms"] is not None)

    def pct(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    summary = {
        "duration_s": round(args.duration), "seed": args.seed, "kills": kills, "counts": ledger.counts,
        "delivered": len(delivered), "downloaded_and_deleted": len(ledger.downloaded), "left_on_server": len(left),
        "lost": lost, "on_server_twice": on_server_twice, "deleted_but_still_on_server": deleted_and_left,
        "downloaded_twice_with_ok_quit": double_downloads, "not_delivered_but_on_server": unknown,
        "problems": problems, "client_errors": ledger.errors, "probe_latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": latencies[-1] if latencies else None},
        "lifetimes": lifetimes,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / "samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t", "pid", "rss_kib", "fds", "probe_ms"])
        w.writeheader()
        w.writerows(samples)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
        for life in server.lifetimes:
            pts = life["samples"]
            if pts:
                axes[0].plot([p[0] / 60 for p in pts], [p[1] / 1024 for p in pts], color="tab:blue")
                axes[1].plot([p[0] / 60 for p in pts], [p[2] for p in pts], color="tab:green")
        axes[2].plot([s["t"] / 60 for s in samples if s["probe_ms"] is not None],
                     [s["probe_ms"] for s in samples if s["probe_ms"] is not None], ".", color="tab:red", markersize=3)
        axes[0].set_ylabel("RSS (MiB)")
        axes[1].set_ylabel("open descriptors")
        axes[2].set_ylabel("probe login (ms)")
        axes[2].set_xlabel("minutes (each line: one server lifetime between SIGKILLs)")
        fig.suptitle(f"postie soak: {args.duration / 60:.0f} min, {kills} SIGKILLs")
        fig.tight_layout()
        fig.savefig(out / "soak.png", dpi=90)
    except ImportError:
        log("matplotlib missing: no plot (pip install matplotlib)")

    log(f"delivered {len(delivered)}, downloaded+deleted {len(ledger.downloaded)}, left {len(left)}, kills {kills}")
    log(f"counts {ledger.counts}")
    log(f"lost {len(lost)}, on server twice {len(on_server_twice)}, deleted but still there {len(deleted_and_left)}, "
        f"downloaded twice {len(double_downloads)}, unknown {len(unknown)}, problems {len(problems)}")
    for text, n in sorted(ledger.errors.items(), key=lambda kv: -kv[1])[:8]:
        log(f"client errors: {n} x {text}")
    log(f"probe login p50 {pct(0.5)} ms, p99 {pct(0.99)} ms")
    for life in lifetimes:
        log(f"pid {life['pid']}: {life['samples']} samples, RSS {life['rss_kib_first_last']} KiB "
            f"({life['rss_slope_kib_per_hour']:+} KiB/h), fds {life['fds_first_last']} ({life['fds_slope_per_hour']:+}/h)")
    log(f"results in {out}")
    bad = lost or on_server_twice or deleted_and_left or double_downloads or unknown or problems
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
