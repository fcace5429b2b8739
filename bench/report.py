"""The side-by-side table and the latency plot of a harness run (see harness.py).

`python3 bench/report.py RESULTS_DIR` redraws both from a saved results.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (label, how to read it, unit, higher is better?, target on the Postie/Dovecot ratio)
ROWS = [
    ("sessions/s, plain", lambda r: r["sessions_plain"]["sessions_per_second"], "1/s", True, ">= 3.0x"),
    ("sessions/s, TLS (995)", lambda r: r["sessions_tls"]["sessions_per_second"], "1/s", True, ">= 2.0x"),
    ("session p50, plain", lambda r: r["sessions_plain"]["session_latency_ms"]["p50"], "ms", False, ""),
    ("session p99, plain", lambda r: r["sessions_plain"]["session_latency_ms"]["p99"], "ms", False, "<= 1.0x"),
    ("session p99, TLS", lambda r: r["sessions_tls"]["session_latency_ms"]["p99"], "ms", False, ""),
    ("sessions/s, TLS resumed", lambda r: r["sessions_tls_resumed"]["sessions_per_second"], "1/s", True, ""),
    ("TLS handshakes resumed", lambda r: r["sessions_tls_resumed"]["resumed_handshakes"]
     / r["sessions_tls_resumed"]["tls_handshakes"], "share", True, ""),
    ("session errors, plain", lambda r: r["sessions_plain"]["failed_sessions"], "", False, ""),
    ("RETR 70 MB, plain", lambda r: r["retr_plain"]["megabytes_per_second"], "MB/s", True, ">= 1.6x"),
    ("RETR 70 MB, TLS", lambda r: r["retr_tls"]["megabytes_per_second"], "MB/s", True, ">= 1.3x"),
    ("100k mailbox, first STAT+UIDL", lambda r: r["bulk"]["first_s"], "s", False, "<= 0.5x"),
    ("100k mailbox, later STAT+UIDL", lambda r: r["bulk"]["later_s"], "s", False, "<= 0.5x"),
    ("instructions/session, plain", lambda r: r["instructions"]["plain"]["per_session"], "", False, "<= 0.333x"),
    ("instructions/session, TLS", lambda r: r["instructions"]["tls"]["per_session"], "", False, ""),
    ("instructions/session, TLS resumed", lambda r: r["instructions"]["tls_resumed"]["per_session"], "", False, ""),
    ("idle session RSS", lambda r: r["idle"]["per_session_kib"], "KiB", False, "Postie <= 48.8 KiB"),
    ("idle sessions held", lambda r: r["idle"]["sessions"], "", True, ""),
]


def _value(fn, r):
    try:
        v = fn(r)
        return None if v is None else float(v)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def verdict(label: str, target: str, ratio: float | None, postie: float | None) -> str:
    if not target:
        return ""
    if target.startswith("Postie <="):
        limit = float(target.split("<=")[1].split()[0])
        return "" if postie is None else ("met" if postie <= limit else "MISSED")
    if ratio is None:
        return "?"
    op, num = target.split()
    limit = float(num.rstrip("x"))
    ok = ratio >= limit if op == ">=" else ratio <= limit
    return "met" if ok else "MISSED"


def table(results: dict) -> str:
    d, p = results["servers"].get("dovecot", {}), results["servers"].get("postie", {})
    g = results["servers"].get("postie-pg")
    pg_head = f" {'Postie PG':>10} {'PG/D':>7}" if g is not None else ""
    head = f"{'figure':34} {'Dovecot':>10} {'Postie':>10} {'unit':>5} {'P/D':>7}  {'target':18} {'verdict':7}{pg_head}"
    lines = [head, "-" * len(head)]
    for label, fn, unit, _, target in ROWS:
        dv, pv = _value(fn, d), _value(fn, p)
        ratio = pv / dv if (pv is not None and dv) else None
        line = (f"{label:34} {_fmt(dv):>10} {_fmt(pv):>10} {unit:>5} "
                f"{(f'{ratio:.2f}x' if ratio is not None else '-'):>7}  {target:18} "
                f"{verdict(label, target, ratio, pv):7}")
        if g is not None:
            gv = _value(fn, g)
            gratio = gv / dv if (gv is not None and dv) else None
            line += f" {_fmt(gv):>10} {(f'{gratio:.2f}x' if gratio is not None else '-'):>7}"
        lines.append(line.rstrip())
    idle_d = d.get("idle", {}).get("sessions")
    if idle_d is not None:
        lines.append(f"(idle RSS: Dovecot measured over {idle_d} sessions, one process each; "
                     f"Postie over {p.get('idle', {}).get('sessions')}"
                     + (f"; Postie PG over {g.get('idle', {}).get('sessions')}, each holding a PostgreSQL "
                        f"connection whose backend is not counted" if g is not None else "") + ")")
    rounds = len(p.get("sessions_plain", {}).get("rounds", []))
    if rounds > 1:
        lines.append(f"(sessions: {rounds} rounds per server and mode, Dovecot and Postie alternating, both running; "
                     f"sessions/s over all rounds, latency percentiles the median of the rounds')")
    ins = p.get("instructions", {}).get("plain")
    if ins:
        lines.append(f"(instructions: server side, every process, under callgrind; the difference between "
                     f"a run of {ins['sessions']} + warm-up sessions and one of the warm-up alone, "
                     f"divided by {ins['sessions']}; bench/instructions.py)")
    for name, r in sorted(results["servers"].items()):
        resumed = r.get("instructions", {}).get("tls_resumed")
        if resumed:
            lines.append(f"({name}: {resumed['resumed']} of {resumed['handshakes']} handshakes resumed)")
    if results.get("certificate", "rsa") != "rsa":
        lines.append(f"(certificate: {results['certificate']})")
    nodes = (g or {}).get("nodes")
    if nodes:
        lines.append("(Postie PG, plain sessions/s of nodes sharing one database and the same clients: "
                     + ", ".join(f"{n} node{'' if n == '1' else 's'} {v['sessions_per_second']:.0f}"
                                 + (f" ({v['failed_sessions']} failed)" if v['failed_sessions'] else "")
                                 for n, v in nodes.items()) + ")")
    imp = results.get("postgres_import")
    if imp:
        lines.append(f"(Postie PG: {imp['messages']} messages imported with `postie db import` in {imp['seconds']:.1f} s)")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    """Latency percentiles per step and for whole sessions, both servers, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = {"dovecot": "#c0504d", "postie": "#2e75b6", "postie-pg": "#70ad47"}
    pct = ["p50", "p95", "p99", "max"]
    for ax, run in zip(axes, ("sessions_plain", "sessions_tls")):
        steps = None
        for i, (name, r) in enumerate(sorted(results["servers"].items())):
            b = r.get(run)
            if not b:
                continue
            rows = [("session", b["session_latency_ms"])] + [(s["step"], s["latency_ms"]) for s in b["steps"]
                                                             if s["latency_ms"]["count"]]
            steps = steps or [s for s, _ in rows]
            lat = dict(rows)
            for j, q in enumerate(pct):
                xs = [k + (i - 1) * 0.28 for k in range(len(steps))]
                ys = [lat.get(s, {}).get(q) for s in steps]
                ax.scatter(xs, ys, color=colours.get(name, "grey"), marker="o^sx"[j], s=36,
                           label=f"{name} {q}" if True else None)
        if steps:
            ax.set_xticks(range(len(steps)))
            ax.set_xticklabels(steps)
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms, log scale)")
        title = "plain text" if run.endswith("plain") else "implicit TLS (995)"
        ax.set_title(f"{title}: {results.get('clients')} clients, {results.get('duration')} s")
        ax.grid(True, which="both", axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=8, fontsize=8)
    fig.suptitle("Postie vs Dovecot: latency percentiles per step (lower is better)")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(out / "latency.svg")
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    res = json.loads((folder / "results.json").read_text())
    print(table(res))
    plot(res, folder)
