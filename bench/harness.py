"""Postie against Dovecot, side by side, in one run (issue 7). Started by `bench/run`.

Postie's PostgreSQL store (issue 9) runs as a third server, `postie-pg`: a throwaway
PostgreSQL, the same users, the same mail imported with `postie db import`; its figures are
printed beside the others with their ratio to Dovecot. Its idle sessions are fewer
(--idle-postgres), since each holds a database connection of its own.

Both servers get byte-identical copies of the same Maildirs, the same passwd-file, the
same RSA certificate and the same `postie bench` load. The sessions step runs Dovecot and
Postie side by side and alternates them in short rounds (see `sessions_in_rounds`); the
other steps run one server after the other. The table prints each figure with the
Postie/Dovecot ratio and the target; results go to results.json and the latency plot to
latency.svg (and .png) in the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "Tests" / "Interop"))

import dataset  # noqa: E402
import probes  # noqa: E402
from kits import pg as pgkit  # noqa: E402
from kits.dovecot import DovecotServer, ensure_vmail  # noqa: E402
from kits.launcher import free_port  # noqa: E402

DOVECOT_TUNING = """
service pop3-login {
  service_count = 0
  process_min_avail = 2
}
service pop3 {
  service_count = 0
  process_min_avail = 8
}
service auth {
  client_limit = 20000
}
protocol pop3 {
  mail_max_userip_connections = 100000
}
default_process_limit = 2000
default_client_limit = 20000
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_certificate(directory: Path, kind: str = "rsa") -> tuple[Path, Path]:
    """One self-signed certificate both servers use: RSA-2048, or ECDSA on P-256 (`ecdsa`)."""
    cert, key = directory / "server.pem", directory / "server.key"
    algorithm = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(["openssl", "req", "-x509", *algorithm, "-nodes", "-days", "30",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(5)
                if s.recv(256).startswith(b"+OK"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}")


class Postie:
    """`postie serve` on loopback over Maildirs under `mail` (or the store `store_args` name,
    e.g. `["--mbox", "/spool/%u"]` for bench/mbox.py)."""

    def __init__(self, binary: Path, root: Path, mail: Path, passwd: Path, cert: Path, key: Path,
                 store_args: list[str] | None = None):
        self.binary, self.root, self.mail, self.passwd = binary, root, mail, passwd
        self.store_args = store_args or ["--maildir", f"{mail}/%u"]
        self.cert, self.key = cert, key
        # With --certificate both: the ECDSA certificate and key beside the RSA one.
        self.alt: tuple[Path, Path] | None = None
        self.port, self.tls_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, wrapper: list[str] | None = None, binary: Path | None = None) -> None:
        args = [*(wrapper or []), str(binary or self.binary), "serve",
                "--listen", f"127.0.0.1:{self.port}", "--listen-tls", f"127.0.0.1:{self.tls_port}",
                "--passwd-file", str(self.passwd), *self.store_args,
                "--tls-cert", str(self.cert), "--tls-key", str(self.key), *self.alt_flags(),
                "--max-connections", "20000", "--max-connections-per-ip", "20000",
                "--max-userip-connections", "20000", "--log-level", "warning"]
        out = open(self.root / "postie.log", "ab")
        self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        wait_port(self.port, timeout=120 if wrapper else 30)

    def alt_flags(self) -> list[str]:
        return ["--tls-alt-cert", str(self.alt[0]), "--tls-alt-key", str(self.alt[1])] if self.alt else []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PostiePostgres(Postie):
    """Postie with `--store postgres` on a throwaway PostgreSQL (Tests/Interop/kits/pg.py), the
    same users and the same mail, imported with `postie db import` (the store's MailDelivery)."""

    def __init__(self, binary: Path, root: Path, template: Path, users: dict[str, str], cert: Path, key: Path,
                 max_connections: int):
        super().__init__(binary, root, template, Path("/dev/null"), cert, key)
        root.mkdir(parents=True, exist_ok=True)
        self.pg = pgkit.start(max_connections=max_connections)
        self.url_file = root / "database-url"
        self.url_file.write_text(self.pg.url() + "\n")
        os.chmod(self.url_file, 0o600)
        self._postie("db", "migrate")
        # Users in one statement ({PLAIN}, as in Dovecot's passwd-file here).
        rows = [(u, "{PLAIN}" + pw) for u, pw in users.items()]
        csv = root / "users.csv"
        csv.write_text("".join(f"{u},{pw}\n" for u, pw in rows))
        os.chmod(root, 0o755)
        os.chmod(csv, 0o644)
        self.pg.psql(f"COPY users (name, password) FROM STDIN WITH (FORMAT csv)", stdin_path=csv)
        t = time.monotonic()
        n = 0
        for user_dir in sorted(template.iterdir()):
            files = sorted(str(f) for sub in ("cur", "new") for f in (user_dir / sub).glob("*") if f.is_file())
            for i in range(0, len(files), 2000):
                self._postie("db", "import", "--user", user_dir.name, *files[i:i + 2000])
            n += len(files)
        self.import_seconds = time.monotonic() - t
        self.imported = n
        log(f"postie-pg: imported {n} messages in {self.import_seconds:.1f} s")
        # Settle the database before anything is measured: autovacuum's analyze of the new
        # tables and the checkpoint of the import's WAL would otherwise run during the other
        # servers' timed steps, which come first, on the same two cores.
        t = time.monotonic()
        self.pg.psql("VACUUM ANALYZE")
        self.pg.psql("CHECKPOINT")
        log(f"postie-pg: VACUUM ANALYZE and CHECKPOINT in {time.monotonic() - t:.1f} s")

    def _postie(self, *args: str) -> None:
        r = subprocess.run([str(self.binary), *args, "--database-url-file", str(self.url_file)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"postie {args[0]} {args[1]} failed: {r.stderr[-2000:]}")

    def _serve(self, listen: list[str], log_name: str, wrapper: list[str] | None = None,
               binary: Path | None = None) -> subprocess.Popen:
        args = [*(wrapper or []), str(binary or self.binary), "serve", "--store", "postgres", "--database-url-file", str(self.url_file),
                *listen, "--tls-cert", str(self.cert), "--tls-key", str(self.key), *self.alt_flags(),
                "--max-connections", "20000", "--max-connections-per-ip", "20000",
                "--max-userip-connections", "20000", "--database-pool-size", "20", "--log-level", "warning"]
        out = open(self.root / log_name, "ab")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out.close()
        return proc

    def start(self, wrapper: list[str] | None = None, binary: Path | None = None) -> None:
        self.proc = self._serve(["--listen", f"127.0.0.1:{self.port}", "--listen-tls", f"127.0.0.1:{self.tls_port}"],
                                "postie-pg.log", wrapper, binary)
        wait_port(self.port)

    def nodes(self, count: int) -> list[tuple[subprocess.Popen, int]]:
        """`count` more nodes on the same database, each a `postie serve` on a port of its own."""
        started = []
        for _ in range(count):
            port = free_port()
            started.append((self._serve(["--listen", f"127.0.0.1:{port}"], f"postie-pg-node-{port}.log"), port))
        for _, port in started:
            wait_port(port)
        return started


    def stop(self) -> None:
        super().stop()

    def close(self) -> None:
        self.pg.stop()



def pg_nodes(pg: PostiePostgres, counts: list[int], generator: Path, creds: Path, clients: int, duration: float,
             cert: Path, out: Path) -> dict:
    """Sessions/s (plain, two RETRs each) of 1, 2, 3... nodes serving the one database at once:
    the `clients` load-generator connections and the users are shared among the nodes (each
    user on one node only, as one `postie bench` keeps a user to one session at a time), one
    `postie bench` per node, all started together; the figure is their sum."""
    import threading

    users = [line for line in creds.read_text().splitlines() if line]
    figures: dict = {}
    for count in counts:
        nodes = pg.nodes(count)
        results: list[dict] = [{} for _ in nodes]
        shares = []
        for i in range(count):
            share = out / f"postie-pg-nodes{count}-{i + 1}.credentials"
            share.write_text("".join(line + "\n" for line in users[i::count]))
            shares.append(share)
        try:
            def one(i: int, port: int) -> None:
                connections = clients // count + (1 if i < clients % count else 0)
                results[i] = run_bench(generator, port, "none", shares[i], connections, duration, 2, cert,
                                       out / f"postie-pg-nodes{count}-{i + 1}.json")
            threads = [threading.Thread(target=one, args=(i, port)) for i, (_, port) in enumerate(nodes)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for share in shares:
                share.unlink()
            for proc, _ in nodes:
                proc.send_signal(signal.SIGTERM)
            for proc, _ in nodes:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if any(not r for r in results):
            raise RuntimeError(f"postie-pg: a node's load generator gave no result with {count} nodes")
        figures[str(count)] = {
            "sessions_per_second": sum(r["sessions_per_second"] for r in results),
            "per_node": [round(r["sessions_per_second"], 1) for r in results],
            "failed_sessions": sum(r["failed_sessions"] for r in results),
            "in_use_errors": sum(v for r in results for k, v in r.get("errors", {}).items() if "in-use" in k.lower()),
        }
        log(f"postie-pg: {count} node(s): {figures[str(count)]}")
    return figures


class Dovecot:
    def __init__(self, root: Path, template: Path, users: dict[str, str], cert: Path, key: Path,
                 alt: tuple[Path, Path] | None = None):
        ensure_vmail()
        # Dovecot's own way to serve an ECDSA certificate beside the RSA one.
        alt_conf = f"ssl_alt_cert = <{alt[0]}\nssl_alt_key = <{alt[1]}\n" if alt else ""
        self.server = DovecotServer(root, {}, cert=cert, key=key, ssl="yes", disable_plaintext_auth=False,
                                    ssl_min_protocol="TLSv1.2", ssl_cipher_list=None,
                                    auth_mechanisms="plain login", uidl_format="%08Xu%08Xv",
                                    extra_conf=DOVECOT_TUNING + alt_conf)
        shutil.rmtree(self.server.mail_root)
        dataset.copy(template, self.server.mail_root)
        self.server.passwd_path.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users.items()))
        self.port, self.tls_port = self.server.port, self.server.tls_port

    def start(self, wrapper: list[str] | None = None, binary: Path | None = None) -> None:
        self.server.start(timeout=180 if wrapper else 60, wrapper=wrapper)

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    def stop(self) -> None:
        self.server.stop()


def run_bench(binary: Path, port: int, tls: str, creds: Path, clients: int, duration: float, retr: int,
              cafile: Path, out: Path, extra: list[str] | None = None) -> dict:
    args = [str(binary), "bench", "--server", f"127.0.0.1:{port}", "--tls", tls, "--credentials", str(creds),
            "--clients", str(clients), "--duration", str(duration), "--retr", str(retr), "--json"]
    if tls != "none":
        args += ["--ca-file", str(cafile)]
    args += extra or []
    r = subprocess.run(args, capture_output=True, text=True, timeout=duration * 4 + 120)
    out.write_text(r.stdout)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"postie bench failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def merge_rounds(runs: list[dict]) -> dict:
    """One sessions figure from the `postie bench --json` reports of several rounds against
    one server: counts and times add up (sessions/s is all sessions over all the time), and
    each latency percentile is the median of the rounds' (a percentile of the whole would
    need the samples); the rounds themselves are kept under `rounds`."""
    from statistics import median

    def latency(summaries: list[dict]) -> dict:
        count = sum(l["count"] for l in summaries)
        merged = {"count": count, "max": max(l["max"] for l in summaries),
                  "mean": sum(l["mean"] * l["count"] for l in summaries) / count if count else 0}
        for q in ("p50", "p95", "p99"):
            merged[q] = median(l[q] for l in summaries if l["count"]) if count else 0
        return merged

    first = runs[0]
    total = {k: sum(r[k] for r in runs) for k in ("sessions", "failed_sessions", "stalled_sessions",
                                                   "messages_retrieved", "messages_deleted", "megabytes",
                                                   "elapsed_seconds", "duration_seconds", "ramp_up_seconds",
                                                   "tls_handshakes", "resumed_handshakes")}
    errors: dict = {}
    for r in runs:
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    elapsed = total["elapsed_seconds"]
    steady = elapsed - total["ramp_up_seconds"]
    after_ramp_up = sum(r["sessions_per_second_after_ramp_up"] * (r["elapsed_seconds"] - r["ramp_up_seconds"])
                        for r in runs)
    steps = [{"step": s["step"], "latency_ms": latency([r["steps"][i]["latency_ms"] for r in runs])}
             for i, s in enumerate(first["steps"])]
    return {**{k: first[k] for k in ("clients", "delete_share", "retr", "server", "tls", "resume")}, **total,
            "errors": errors, "steps": steps,
            "sessions_per_second": total["sessions"] / elapsed,
            "sessions_per_second_after_ramp_up": after_ramp_up / steady if steady > 0 else 0,
            "megabytes_per_second": total["megabytes"] / elapsed,
            "session_latency_ms": latency([r["session_latency_ms"] for r in runs]),
            "rounds": [{"sessions_per_second": r["sessions_per_second"],
                        "session_latency_ms": r["session_latency_ms"]} for r in runs]}


# The sessions step's loads: (label, --tls, more flags).
SESSION_LOADS = (("plain", "none", []), ("tls", "implicit", []), ("tls_resumed", "implicit", ["--resume"]))


def sessions_in_rounds(servers: list[tuple[str, object]], generator: Path, creds: Path, cert: Path, out: Path,
                       a) -> dict[str, dict]:
    """The sessions step for servers that run side by side: a warm-up of each, then `a.rounds`
    rounds in which each server gets `a.duration / a.rounds` seconds of the plain load, then of
    the TLS load, the servers' order reversed every other round. A server measured minutes
    after another meets a different machine (this VM's neighbours come and go: Dovecot's own
    rate moved by up to 40 % between runs), which short alternating rounds share out; the
    figures are totals over all rounds (`merge_rounds`). The third load, `tls_resumed`, is the
    TLS one with `postie bench --resume`: each client offers the session the server last gave
    it, as mail clients do. Returns {server: {"sessions_plain": ..., "sessions_tls": ...,
    "sessions_tls_resumed": ...}}."""
    share = a.duration / a.rounds
    for name, s in servers:
        for label, tls, extra in SESSION_LOADS:
            log(f"{name}: warm-up ({label}), {a.clients} clients, {a.warmup}s")
            run_bench(generator, s.port if tls == "none" else s.tls_port, tls, creds, a.clients, a.warmup, 2, cert,
                      out / f"{name}-sessions-{label}-warmup.json", extra)
    # The warm-up's first logins wrote each server's indexes: on the disk now, not mid-round.
    os.sync()
    runs: dict[tuple[str, str], list[dict]] = {}
    for i in range(a.rounds):
        for label, tls, extra in SESSION_LOADS:
            for name, s in (servers if i % 2 == 0 else servers[::-1]):
                port = s.port if tls == "none" else s.tls_port
                r = run_bench(generator, port, tls, creds, a.clients, share, 2, cert,
                              out / f"{name}-sessions-{label}-round{i + 1}.json", extra)
                runs.setdefault((name, label), []).append(r)
                log(f"{name}: sessions ({label}) round {i + 1} of {a.rounds}: {r['sessions_per_second']:.0f}/s")
    merged: dict[str, dict] = {}
    for (name, label), rs in runs.items():
        m = merge_rounds(rs)
        (out / f"{name}-sessions-{label}.json").write_text(json.dumps(m, indent=2))
        merged.setdefault(name, {})[f"sessions_{label}"] = m
    return merged


def count_instructions(name: str, server, work: Path, out: Path, a, cert: Path, spec) -> dict:
    """Instructions per session, plain and implicit TLS, on the server run under callgrind. The
    warm-up logs every user in `--warmup-rounds` times (default 3), so the counted sessions find
    their mailboxes as the timed steps' thousands of sessions do: indexed, and with nothing
    left to record (Postie's first open indexes the mailbox, the second records that cur/ has
    settled, the third reads that back; Dovecot's first logins likewise build its index files)."""
    import ssl as ssl_module

    import instructions
    problem = instructions.available()
    if problem:
        raise RuntimeError(f"--instructions: {problem}")
    logins = [(u, dataset.password(u)) for u in dataset.user_names(spec)]
    context = ssl_module.create_default_context(cafile=str(cert))
    figures: dict = {}
    binary = instructions.stripped_copy(server.binary, work) if name == "postie" else None
    if name == "dovecot":
        # A chrooted login process could not write its counts outside the chroot (the timing
        # steps above ran with the chroot; it costs a chroot(2) per pre-started process).
        with open(server.server.conf_path, "a") as conf:
            conf.write("service pop3-login {\n  chroot =\n}\n")
    for label, tls, resume in (("plain", None, False), ("tls", context, False), ("tls_resumed", context, True)):
        log(f"{name}: counting instructions ({label}), {a.instruction_sessions} sessions under callgrind")
        figures[label] = instructions.measure(
            lambda prefix: server.start(wrapper=prefix, binary=binary), server.stop,
            work / f"callgrind-{name}-{label}", server.tls_port if tls else server.port, logins,
            a.instruction_sessions, warmup=len(logins) * a.warmup_rounds, tls_context=tls, resume=resume)
        # Both runs' counts, per process and function: `python3 bench/instructions.py DIR`
        # prints where the instructions per session go.
        shutil.copytree(work / f"callgrind-{name}-{label}", out / f"callgrind-{name}-{label}", dirs_exist_ok=True)
        (out / f"callgrind-{name}-{label}" / "sessions").write_text(f"{a.instruction_sessions}\n")
        log(f"{name}: {figures[label]}")
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--postie", type=Path, default=REPO / ".build" / "release" / "postie")
    ap.add_argument("--load-generator", type=Path, default=None,
                    help="the binary whose `bench` subcommand makes the load (default: --postie)")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/TIMESTAMP)")
    ap.add_argument("--data", type=Path, default=Path("/var/tmp/postie-bench"), help="cache of generated mail")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--bulk", type=int, default=100_000)
    ap.add_argument("--huge-mb", type=int, default=70)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=15,
                    help="seconds of load per server and step (the sessions step's in --rounds parts)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="the sessions step: rounds of alternating servers that share --duration")
    ap.add_argument("--warmup", type=float, default=2,
                    help="the sessions step: seconds of load per server and mode before the rounds")
    ap.add_argument("--idle", type=int, default=10_000, help="idle sessions held open in Postie")
    ap.add_argument("--idle-dovecot", type=int, default=300,
                    help="idle sessions in Dovecot (one process each: 10,000 would need ~48 GB)")
    ap.add_argument("--idle-postgres", type=int, default=150,
                    help="idle sessions in Postie on PostgreSQL (each holds a database connection)")
    ap.add_argument("--servers", default="dovecot,postie,postie-pg",
                    help="which servers to measure (comma-separated subset of the default)")
    ap.add_argument("--steps", default="sessions,retr,bulk,idle,nodes",
                    help="which measurements to run (comma-separated subset of the default; nodes: the PostgreSQL "
                         "store only)")
    ap.add_argument("--pg-nodes", default="1,2,3",
                    help="the nodes step: how many `postie serve` nodes share the PostgreSQL store in each run")
    ap.add_argument("--certificate", choices=("rsa", "ecdsa", "both"), default="rsa",
                    help="the servers' certificate: RSA-2048 (the default), ECDSA P-256, or both at once (Dovecot's "
                         "ssl_alt_cert, Postie's --tls-alt-cert: each client gets ECDSA when it accepts it)")
    ap.add_argument("--warmup-rounds", type=int, default=3,
                    help="with --instructions: logins per user before the counted sessions")
    ap.add_argument("--instructions", action="store_true",
                    help="also count CPU instructions per session, server side (bench/instructions.py)")
    ap.add_argument("--instruction-sessions", type=int, default=200,
                    help="sessions counted per server and mode with --instructions")
    ap.add_argument("--quick", action="store_true", help="a small smoke run (minutes, not figures)")
    ap.add_argument("--cold-bulk", action="store_true",
                    help="drop the kernel's caches (root) before the first STAT+UIDL of the bulk mailbox, so that it "
                         "reads its files from the disk, as after a reboot")
    a = ap.parse_args()
    if a.instructions:
        a.steps += ",instructions"
    if a.quick:
        a.instruction_sessions = 40
        a.messages, a.bulk, a.huge_mb, a.duration, a.idle, a.idle_dovecot, a.idle_postgres = 5, 2000, 8, 3, 300, 50, 50
        a.rounds, a.warmup = 1, 1

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # Root may raise the hard limit; the servers inherit it. Each idle Postie session
        # holds its socket and its Maildir lock.
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 2 * a.idle + 1000),) * 2)
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * a.idle + 1000:
        a.idle = max(100, (hard - 1000) // 2)
        log(f"open-file limit {hard}: idle sessions reduced to {a.idle}")

    generator = a.load_generator or a.postie
    out = a.out or (HERE / "results" / time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    spec = dataset.Spec(users=a.users, messages=a.messages, bulk=a.bulk, huge_mb=a.huge_mb)
    log(f"mail: {spec.key()} under {a.data} (generated once)")
    template = dataset.build(spec, a.data)

    idle_users = [f"idle{i:05d}" for i in range(1, a.idle + 1)]
    users = {u: dataset.password(u) for u in dataset.all_users(spec) + idle_users}
    work = Path(f"/tmp/postie-bench-{os.getpid()}")
    work.mkdir(mode=0o755)
    os.chmod(work, 0o755)
    cert, key = make_certificate(work, "rsa" if a.certificate == "both" else a.certificate)
    alt = None
    trusted = cert
    if a.certificate == "both":
        (work / "alt").mkdir()
        alt = make_certificate(work / "alt", "ecdsa")
        trusted = work / "trusted.pem"
        trusted.write_bytes(cert.read_bytes() + alt[0].read_bytes())
    creds = work / "credentials"
    creds.write_text("".join(f"{u}:{dataset.password(u)}\n" for u in dataset.user_names(spec)))
    huge_creds = work / "huge-credentials"
    huge_creds.write_text(f"{dataset.HUGE_USER}:{dataset.password(dataset.HUGE_USER)}\n")

    def add_idle_maildirs(mail: Path) -> None:
        for u in idle_users:
            for sub in ("cur", "new", "tmp"):
                (mail / u / sub).mkdir(parents=True, exist_ok=True)

    results: dict = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
                     "certificate": a.certificate,
                     "spec": spec.__dict__, "clients": a.clients, "duration": a.duration, "servers": {}}
    servers = []
    try:
        d = Dovecot(work / "dovecot", template, users, cert, key, alt)
        add_idle_maildirs(d.server.mail_root)
        servers.append(("dovecot", d))
        p_mail = dataset.copy(template, work / "postie" / "mail")
        add_idle_maildirs(p_mail)
        passwd = work / "postie" / "passwd"
        passwd.write_text(d.server.passwd_path.read_text())
        p = Postie(a.postie, work / "postie", p_mail, passwd, cert, key)
        p.alt = alt
        servers.append(("postie", p))
        wanted = set(a.servers.split(","))
        if "postie-pg" in wanted:
            # Started at its turn, after the others: an idle PostgreSQL holding the imported
            # mail beside them cost Postie on Maildir a third of its sessions/s in the full run
            # of 2026-12-03 12:20 (2,351 against 3,526 without it, Dovecot unchanged).
            servers.append(("postie-pg", None))
        servers = [(n, s) for n, s in servers if n in wanted]

        steps = set(a.steps.split(","))

        def sync(name: str) -> None:
            # What the previous server (or the copies made above) left for the kernel to write
            # back, the 100,000 renames of a first open among it, is written now, not during
            # this server's timed steps.
            t = time.monotonic()
            os.sync()
            log(f"{name}: sync took {time.monotonic() - t:.1f} s")

        # Dovecot and Postie on Maildir: the sessions step with both running, in rounds.
        side_by_side = [(n, s) for n, s in servers if s is not None]
        if "sessions" in steps and side_by_side:
            sync(" and ".join(n for n, _ in side_by_side))
            try:
                for name, s in side_by_side:
                    log(f"{name}: starting")
                    s.start()
                    results["servers"][name] = {"rss_start_kib": probes.rss_kib(s.pid)}
                for name, figures in sessions_in_rounds(side_by_side, generator, creds, trusted, out, a).items():
                    results["servers"][name].update(figures)
            finally:
                for _, s in side_by_side:
                    s.stop()

        for i, (name, s) in enumerate(servers):
            if s is None:
                log("postie-pg: starting PostgreSQL and importing the same mail")
                pg_users = {u: users[u] for u in dataset.all_users(spec) + idle_users[:a.idle_postgres]}
                s = PostiePostgres(a.postie, work / "postie-pg", template, pg_users, cert, key,
                                   max_connections=a.idle_postgres + 60)
                s.alt = alt
                servers[i] = (name, s)
                results["postgres_import"] = {"messages": s.imported, "seconds": s.import_seconds}
            r: dict = results["servers"].setdefault(name, {})
            # The PostgreSQL store runs alone (see above), its sessions step too, in the same rounds.
            own = steps & ({"sessions", "retr", "bulk", "idle"} if name == "postie-pg" else {"retr", "bulk", "idle"})
            if own:
                sync(name)
                log(f"{name}: starting")
                s.start()
                r.setdefault("rss_start_kib", probes.rss_kib(s.pid))
            if "sessions" in own:
                r.update(sessions_in_rounds([(name, s)], generator, creds, trusted, out, a)[name])
            for label, tls, port in (("plain", "none", s.port), ("tls", "implicit", s.tls_port)):
                if "retr" not in own:
                    break
                log(f"{name}: RETR of the {a.huge_mb} MB message ({label})")
                r[f"retr_{label}"] = run_bench(generator, port, tls, huge_creds, 1, max(a.duration, 10), 1, trusted,
                                               out / f"{name}-retr-{label}.json")
            if "bulk" in own:
                log(f"{name}: first STAT+UIDL of the {a.bulk}-message mailbox")
                bulk_login = ("127.0.0.1", s.port, dataset.BULK_USER, dataset.password(dataset.BULK_USER))
                if a.cold_bulk:
                    os.sync()
                    Path("/proc/sys/vm/drop_caches").write_text("3\n")
                first, n = probes.stat_uidl(*bulk_login)
                later = sorted(probes.stat_uidl(*bulk_login)[0] for _ in range(3))
                r["bulk"] = {"messages": n, "first_s": first, "later_s": later[1], "cold": a.cold_bulk}
                log(f"{name}: {n} messages, first {first:.2f} s, later {later[1]:.2f} s")
            if "idle" in own:
                count = {"postie": a.idle, "postie-pg": a.idle_postgres}.get(name, a.idle_dovecot)
                log(f"{name}: {count} idle authenticated sessions")
                logins = [(u, dataset.password(u)) for u in idle_users[:count]]
                r["idle"] = probes.idle_sessions("127.0.0.1", s.port, logins, count, s.pid)
                log(f"{name}: {r['idle']}")
            if own:
                s.stop()
            if "nodes" in steps and name == "postie-pg":
                counts = [int(n) for n in a.pg_nodes.split(",")]
                log(f"postie-pg: sessions (plain) on {a.pg_nodes} node(s), {a.clients} clients shared, {a.duration}s")
                r["nodes"] = pg_nodes(s, counts, generator, creds, a.clients, a.duration, trusted, out)
            if "instructions" in steps and name in ("postie", "dovecot"):
                r["instructions"] = count_instructions(name, s, work, out, a, trusted, spec)
            log(f"{name}: done")
    finally:
        for _, s in servers:
            if s is None:
                continue
            s.stop()
            if hasattr(s, "close"):
                s.close()

    (out / "results.json").write_text(json.dumps(results, indent=2))
    import report  # noqa: E402

    table = report.table(results)
    print(table)
    (out / "table.txt").write_text(table + "\n")
    report.plot(results, out)
    log(f"results in {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
