"""contrib/grafana/postie.json: an importable Grafana dashboard whose every query names a metric
that a real `postie serve --metrics` (with TLS and LMTP) exports, and whose PromQL parses
(promtool checks each query as a recording rule). Tools: promtool (Debian package `prometheus`)."""

from __future__ import annotations

import json
import re
import smtplib

from conftest import REPO
from kits.launcher import HOST, free_port, wait_port
from kits.mail import ALICE, Maildir
from kits.metrics import QUICK_CONFIG, Scrape, wait_metrics
from kits.pop3 import POP3Raw
from kits.tls import client_context, start_tls_server
from kits.tools import need, run

DASHBOARD = REPO / "contrib" / "grafana" / "postie.json"

# What the issue asks the dashboard to show, and a metric each topic must use.
TOPICS = {
    "sessions": "pop3_sessions_active",
    "logins by result": "pop3_logins_total",
    "lockouts": "pop3_lockouts_total",
    "bytes retrieved": "pop3_sent_bytes_total",
    "RETR latency": "pop3_retr_duration_seconds_bucket",
    "LMTP deliveries": "lmtp_deliveries_total",
    "certificate expiry": "pop3_tls_certificate_expiry_seconds",
}

# PromQL words that are not metric names: operators and modifiers (functions and aggregations
# are recognised by the "(" after them).
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "offset", "bool", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery durations
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # dashboard variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                out.append((f"panel {p['title']!r}", t["expr"]))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            assert m, f"variable {v['name']}: not label_values(SELECTOR, LABEL): {q}"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def test_metric_name_parser():
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(pop3_retr_duration_seconds_bucket'
                        '{job=~"$job",instance=~"a|b"}[$__rate_interval])))') == {"pop3_retr_duration_seconds_bucket"}
    assert metric_names('sum by (result) (rate(lmtp_deliveries_total[5m])) / ignoring(result) '
                        'group_left sum(rate(lmtp_recipients_total{result="accepted"}[5m] offset 1d))') == {
        "lmtp_deliveries_total", "lmtp_recipients_total"}
    assert metric_names("min by (certificate) (pop3_tls_certificate_expiry_seconds) < 14 * 86400 and up") == {
        "pop3_tls_certificate_expiry_seconds", "up"}


def test_dashboard_is_an_importable_grafana_model():
    d = json.loads(DASHBOARD.read_text())
    for key in ("uid", "title", "schemaVersion", "panels", "templating"):
        assert key in d, f"the dashboard has no {key!r}"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables.get("datasource", {}).get("type") == "datasource" and variables["datasource"]["query"] == "prometheus", \
        "the data source must be a `datasource` template variable of type prometheus"
    ids = []
    for p in d["panels"]:
        ids.append(p["id"])
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]), f"panel {p['title']!r}: gridPos incomplete"
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']!r} has no query"
        for ds in [p["datasource"]] + [t["datasource"] for t in p["targets"]]:
            assert ds == {"type": "prometheus", "uid": "${datasource}"}, f"panel {p['title']!r}: data source {ds}"
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    used = set().union(*(metric_names(q) for _, q in queries(d)))
    missing = {topic: name for topic, name in TOPICS.items() if name not in used}
    assert not missing, f"the dashboard lacks panels for {missing}"


def test_every_query_is_valid_promql(tmp_path):
    """promtool parses each query (variables replaced by what Grafana would put there)."""
    promtool = need("promtool")
    d = json.loads(DASHBOARD.read_text())
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (where, q) in enumerate(queries(d)):
        expr = q.replace("$__rate_interval", "5m").replace("$job", ".*").replace("$instance", ".*")
        rules += [f"      - record: dashboard:query{i}", f"        expr: {json.dumps(expr)}"]
    f = tmp_path / "dashboard-rules.yml"
    f.write_text("\n".join(rules) + "\n")
    r = run([promtool, "check", "rules", f])
    assert r.returncode == 0, f"promtool rejects a dashboard query:\n{r.stdout}{r.stderr}\n---\n{f.read_text()}"


def test_every_metric_in_the_dashboard_is_exported(postie, tmp_path, pki):
    """A real server with TLS, LMTP and metrics, after a delivery, a login and a RETR: every
    metric name in every query is there."""
    mport, lport = free_port(), free_port()
    srv = start_tls_server(postie, tmp_path, pki, config=QUICK_CONFIG, name="grafana",
                           extra=["--metrics", f"{HOST}:{mport}", "--listen-lmtp", f"{HOST}:{lport}"])
    wait_port(lport)
    Maildir(srv.maildir_path("alice")).create()
    with smtplib.LMTP(HOST, lport, timeout=30) as c:
        assert c.ehlo()[0] == 250
        c.sendmail("sender@example.org", ["alice"], b"Subject: dashboard\r\n\r\nhello\r\n")
    with POP3Raw(HOST, srv.tls, tls=client_context(pki.cafile)) as c:
        c.login(*ALICE)
        c.retr(1)
        c.top(1, 0)
        c.ok("QUIT")
    sc: Scrape = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 1
                              and sc.get("lmtp_deliveries_total", result="delivered") >= 1)
    # The RETR histogram counts RETRs (TOP is not one).
    assert sc.get("pop3_retr_duration_seconds_count") == 1, sc.text
    assert 0 < sc.get("pop3_retr_duration_seconds_sum") < 10, sc.text
    exported = {name for name, _ in sc.samples}
    d = json.loads(DASHBOARD.read_text())
    problems = []
    for where, q in queries(d):
        for name in sorted(metric_names(q)):
            if name not in exported:
                family = sc.family_of(name)
                problems.append(f"{where}: {name} is not exported" + (f" (family {family} is: "
                                "use a _bucket/_sum/_count series)" if family else ""))
    assert not problems, "\n".join(problems) + "\n---\n" + sc.text
