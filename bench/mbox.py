"""mbox spools: the first and later STAT+UIDL of one big spool, Postie beside Dovecot (issue 20).
Started by `bench/mbox`.

One spool of N messages is generated once (seeded) as Postfix's local(8) writes /var/mail/USER:
`From sender  asctime` lines, Return-Path/X-Original-To/Delivered-To/Received headers before
the message's own, LF line ends, body lines starting `From ` quoted as `>From `, a blank line
after each message. Each server gets a byte-identical copy:

- Postie: `postie serve --mbox SPOOLDIR/%u` (as root, like bench/run), UIDs from its index
  `FILE.postie-uidl`, which the first login writes;
- Dovecot (Debian's dovecot-pop3d): `mail_location = mbox:~/mail:INBOX=SPOOLDIR/%u`, Debian's
  default layout, mail owned by the unprivileged vmail user (Tests/Interop/kits/dovecot.py, the
  kit bench/harness.py uses, with its tuning). Its first login builds its index under
  ~/mail/.imap and may write X-IMAPbase/X-UID headers into the spool; the output says whether
  the spool's bytes changed.

One plain-socket client (bench/probes.py) times connect, USER, PASS, STAT, UIDL (the whole
reply read) and QUIT: the first session on the fresh spool, then K later ones, alternating
between the servers. It checks that both count the same messages and octets and that each
server's UIDL list is the same in every session. It prints figures; it asserts no timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "Tests" / "Interop"))

import dataset  # noqa: E402
from harness import DOVECOT_TUNING, Postie, log, make_certificate  # noqa: E402
from kits.dovecot import DovecotServer  # noqa: E402
from probes import LineClient  # noqa: E402

USER = "spool"
SENDERS = [f"{n}@{d}" for n in ("alice", "bob", "carol", "dave", "erin", "mallory", "newsletter",
                                "billing", "no-reply", "root")
           for d in ("example.net", "example.com", "lists.example.org")]
WORDS = (dataset.LOREM + "invoice meeting agenda attached please review tomorrow regards thanks "
         "quarterly report server outage resolved ticket customer".split())


def body_size(rng: random.Random) -> int:
    """2-20 KB, and one message in 100 between 100 KB and 1 MB (an attachment)."""
    if rng.random() < 0.01:
        return rng.randrange(100 * 1024, 1024 * 1024)
    return rng.randrange(2 * 1024, 20 * 1024)


def generate(path: Path, messages: int, seed: int) -> None:
    """Writes the spool as Postfix local(8) appends each delivery (mailbox.c, mail_copy)."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(6, 14))) for _ in range(4000)]
    base = 1_795_000_000  # November 2026, one delivery a minute
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb", buffering=1 << 20) as f:
        for n in range(1, messages + 1):
            t = base + 60 * n
            sender = SENDERS[rng.randrange(len(SENDERS))]
            rfc822_date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(t - 3))
            head = (f"From {sender}  {time.asctime(time.gmtime(t))}\n"
                    f"Return-Path: <{sender}>\n"
                    f"X-Original-To: {USER}@mail.example.org\n"
                    f"Delivered-To: {USER}@mail.example.org\n"
                    f"Received: from mx.example.net (mx.example.net [192.0.2.{n % 250 + 1}])\n"
                    f"\tby mail.example.org (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\n"
                    f"\tfor <{USER}@mail.example.org>; {rfc822_date}\n"
                    f"Message-ID: <{n}.{rng.getrandbits(48):012x}@example.net>\n"
                    f"Date: {rfc822_date}\n"
                    f"From: {sender.split('@')[0].title()} <{sender}>\n"
                    f"To: {USER}@mail.example.org\n"
                    f"Subject: mbox benchmark message {n}\n"
                    f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n")
            size = body_size(rng)
            body: list[str] = []
            written = 0
            while written < size:
                line = lines[rng.randrange(len(lines))]
                r = rng.random()
                if r < 0.004:
                    line = ">From " + line  # a `From ` line of the sender's, quoted by local(8)
                elif r < 0.006:
                    line = ""
                body.append(line)
                written += len(line) + 1
            f.write(head.encode() + "\n".join(body).encode() + b"\n\n")
    os.replace(tmp, path)


def spool_template(data: Path, messages: int, seed: int) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    path = data / f"mbox-n{messages}-s{seed}"
    if not path.exists():
        log(f"generating {messages} messages into {path}")
        generate(path, messages, seed)
    return path


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def dovecot_headers(path: Path) -> tuple[bool, int]:
    """Whether the first message has X-IMAPbase, and how many X-UID: headers the spool holds."""
    with open(path, "rb") as f:
        data = f.read()
    first = data[:data.find(b"\n\n")]
    return b"\nX-IMAPbase:" in first, data.count(b"\nX-UID: ")


def session(port: int, password: str) -> dict:
    """Connect, USER, PASS, STAT, UIDL, QUIT: seconds (to QUIT's reply), STAT, the UIDLs."""
    t0 = time.perf_counter()
    c = LineClient("127.0.0.1", port)
    c.command(f"USER {USER}")
    c.command(f"PASS {password}")
    t_login = time.perf_counter()
    stat = c.command("STAT").split()
    uidl = c.multiline_data("UIDL")
    c.close()
    t = time.perf_counter()
    uidls = [line.split(b" ", 1)[1] for line in uidl.split(b"\r\n")] if uidl else []
    return {"seconds": t - t0, "login_s": t_login - t0, "count": int(stat[1]), "octets": int(stat[2]),
            "uidls": uidls}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postie", type=Path, default=REPO / ".build" / "release" / "postie")
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5, help="later sessions per server")
    ap.add_argument("--seed", type=int, default=1939)
    ap.add_argument("--data", type=Path, default=Path("/var/tmp/postie-bench"), help="cache of generated spools")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/mbox-TIMESTAMP)")
    a = ap.parse_args()

    template = spool_template(a.data, a.messages, a.seed)
    out = a.out or (HERE / "results" / time.strftime("mbox-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(f"/tmp/postie-mbox-bench-{os.getpid()}")
    work.mkdir(mode=0o755)
    os.chmod(work, 0o755)
    password = dataset.password(USER)
    size = template.stat().st_size
    log(f"spool: {a.messages} messages, {size / 1e6:.1f} MB ({template})")

    d_root = work / "dovecot"
    d_root.mkdir(mode=0o755)
    d_spools = d_root / "mail" / "var-mail"  # INBOX=; the mail root is vmail's (fix_ownership)
    dovecot = DovecotServer(d_root, {}, cert=None, key=None, ssl="no", disable_plaintext_auth=False,
                            ssl_min_protocol="TLSv1.2", ssl_cipher_list=None, auth_mechanisms="plain login",
                            uidl_format="%08Xu%08Xv", extra_conf=DOVECOT_TUNING,
                            mail_location=f"mbox:~/mail:INBOX={d_spools}/%u")
    dovecot.passwd_path.write_text(f"{USER}:{{PLAIN}}{password}::::::\n")
    d_spools.mkdir(parents=True)
    (dovecot.mail_root / USER / "mail").mkdir(parents=True)  # the home and ~/mail, as useradd -m
    d_spool = d_spools / USER
    shutil.copyfile(template, d_spool)
    os.chmod(d_spool, 0o600)

    p_root = work / "postie"
    p_spools = p_root / "var-mail"
    p_spools.mkdir(parents=True)
    p_spool = p_spools / USER
    shutil.copyfile(template, p_spool)
    os.chmod(p_spool, 0o600)
    passwd = p_root / "passwd"
    passwd.write_text(dovecot.passwd_path.read_text())
    cert, key = make_certificate(work)
    postie = Postie(a.postie, p_root, p_spools, passwd, cert, key, store_args=["--mbox", f"{p_spools}/%u"])

    before = digest(template)
    results: dict = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                                 "load_before": os.getloadavg()},
                     "messages": a.messages, "spool_bytes": size, "repeats": a.repeats,
                     "postie": str(a.postie), "dovecot": subprocess.run(["dovecot", "--version"], capture_output=True,
                                                                        text=True).stdout.strip(),
                     "servers": {}}
    servers = {"dovecot": (dovecot, lambda: dovecot.port, d_spool), "postie": (postie, lambda: postie.port, p_spool)}
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    try:
        for name, (server, _, _) in servers.items():
            log(f"{name}: starting")
            server.start()
        for name, (_, port, spool) in servers.items():
            log(f"{name}: first login+STAT+UIDL+QUIT on the fresh spool")
            runs[name].append(session(port(), password))
            log(f"{name}: {runs[name][0]['count']} messages in {runs[name][0]['seconds']:.3f} s")
        for i in range(a.repeats):
            for name, (_, port, _) in servers.items():
                runs[name].append(session(port(), password))
            log(f"later session {i + 1}: " + ", ".join(f"{n} {runs[n][-1]['seconds']:.3f} s" for n in servers))
    finally:
        postie.stop()
        dovecot.stop()

    notes = []
    for name, (_, _, spool) in servers.items():
        first, later = runs[name][0], runs[name][1:]
        changed = digest(spool) != before
        has_base, x_uids = dovecot_headers(spool) if changed else (False, 0)
        results["servers"][name] = {
            "first_s": first["seconds"], "first_login_s": first["login_s"],
            "later_s": [r["seconds"] for r in later], "later_login_s": [r["login_s"] for r in later],
            "later_median_s": statistics.median(r["seconds"] for r in later) if later else None,
            "count": first["count"], "octets": first["octets"],
            "uidls_stable": all(r["uidls"] == first["uidls"] and r["count"] == first["count"] for r in later),
            "uidl_count": len(first["uidls"]), "spool_rewritten": changed,
            "spool_bytes_after": spool.stat().st_size, "x_imapbase": has_base, "x_uid_headers": x_uids,
        }
        if changed:
            notes.append(f"{name} rewrote its spool: {size} -> {spool.stat().st_size} bytes, "
                         f"X-IMAPbase {'added' if has_base else 'absent'}, {x_uids} X-UID headers")
        else:
            notes.append(f"{name} left its spool byte for byte as generated")
    r = results["servers"]
    uids = {n: [u[:8] for u in runs[n][0]["uidls"]] for n in servers}
    results["same_count"] = r["postie"]["count"] == r["dovecot"]["count"] == a.messages
    results["same_octets"] = r["postie"]["octets"] == r["dovecot"]["octets"]
    results["same_uids"] = uids["postie"] == uids["dovecot"]

    def fmt(s: float | None) -> str:
        return "-" if s is None else f"{s:.3f} s"

    def ratio(p: float | None, d: float | None) -> str:
        return "-" if not p or not d else f"{p / d:.2f}x"

    rows = [("first login+STAT+UIDL+QUIT", r["postie"]["first_s"], r["dovecot"]["first_s"]),
            ("  of which login (USER+PASS)", r["postie"]["first_login_s"], r["dovecot"]["first_login_s"]),
            (f"later, median of {a.repeats}", r["postie"]["later_median_s"], r["dovecot"]["later_median_s"]),
            ("  of which login, median", statistics.median(r["postie"]["later_login_s"]) if a.repeats else None,
             statistics.median(r["dovecot"]["later_login_s"]) if a.repeats else None)]
    lines = [f"mbox spool: {a.messages} messages, {size / 1e6:.1f} MB; {os.cpu_count()} CPUs, "
             f"load {results['machine']['load_before'][0]:.2f}; {results['dovecot'] and 'Dovecot ' + results['dovecot']}",
             "",
             f"| {'figure':<30} | {'Postie':>9} | {'Dovecot':>9} | {'P/D':>6} |",
             f"| {'-' * 30} | {'-' * 8}: | {'-' * 8}: | {'-' * 5}: |"]
    for label, p, d in rows:
        lines.append(f"| {label:<30} | {fmt(p):>9} | {fmt(d):>9} | {ratio(p, d):>6} |")
    lines.append("")
    for name in servers:
        lines.append(f"{name}: later sessions " + ", ".join(f"{s:.3f}" for s in r[name]["later_s"]) + " s")
    lines.append(f"STAT: postie {r['postie']['count']} messages {r['postie']['octets']} octets, "
                 f"dovecot {r['dovecot']['count']} messages {r['dovecot']['octets']} octets "
                 f"({'same count' if results['same_count'] else 'COUNTS DIFFER'}, "
                 f"{'same octets' if results['same_octets'] else 'octets differ'})")
    lines.append("UIDL lists stable between sessions: " + ", ".join(
        f"{n} {'yes' if r[n]['uidls_stable'] else 'NO'}" for n in servers))
    lines.append(f"UIDs (first 8 hex digits of each UIDL) the same on both: {'yes' if results['same_uids'] else 'no'}")
    lines.extend(notes)
    table = "\n".join(lines)
    print(table)
    (out / "table.txt").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    log(f"results in {out}")
    shutil.rmtree(work, ignore_errors=True)
    ok = results["same_count"] and all(r[n]["uidls_stable"] for n in servers)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
