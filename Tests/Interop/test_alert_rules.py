"""The alert rules in contrib/prometheus/: `promtool check rules` / `promtool test rules`, and
every series they use exported by the server, from the start.

Tools: promtool (Debian package `prometheus`). A missing tool fails the test.
"""

from __future__ import annotations

import re

from conftest import REPO
from kits.launcher import free_port, HOST
from kits.metrics import E, QUICK_CONFIG, scrape, start_metrics_server, wait_metrics
from kits.pop3 import POP3Raw
from kits.tls import make_pki, start_tls_server
from kits.tools import need, run

RULES = REPO / "contrib" / "prometheus" / "postie-rules.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "postie-rules.test.yml"


# --------------------------------------------------------------------------
# b. Alert rules
# --------------------------------------------------------------------------


def test_promtool_check_rules():
    promtool = need("promtool")
    r = run([promtool, "check", "rules", RULES])
    assert r.returncode == 0 and "SUCCESS" in r.stdout, f"promtool check rules:\n{r.stdout}{r.stderr}"


def test_promtool_unit_tests_of_the_rules():
    promtool = need("promtool")
    r = run([promtool, "test", "rules", RULE_TESTS], timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, f"promtool test rules:\n{r.stdout}{r.stderr}"


def test_rules_use_only_metrics_the_server_exports(postie, tmp_path):
    """Every pop3_* name in the rules is a family the server exports (with TLS, after a login)."""

    pki = make_pki(tmp_path / "pki")
    mport = free_port()
    srv = start_tls_server(postie, tmp_path, pki, extra=["--metrics", f"{HOST}:{mport}"], name="names")
    with POP3Raw(HOST, srv.plain) as c:
        c.login("bob", "bob-plain-pw")
        c.ok("QUIT")
    sc = wait_metrics(mport, lambda sc: sc.get("pop3_session_duration_seconds_count") >= 1)
    used = set(re.findall(r"\bpop3_[a-z_]+", RULES.read_text()))
    missing = sorted(n for n in used if sc.family_of(n) is None)
    assert not missing, f"the rules use metrics the server does not export: {missing}\n---\n{sc.text}"


def test_alerted_series_exist_from_the_start(postie, tmp_path):
    """increase() and rate() cannot see the jump of a series that appears with its first event
    (Prometheus' "avoid missing metrics"): the first plaintext login after a restart would never
    fire PostiePlaintextLoginAccepted. So every label combination the rules and dashboards use
    must be exported as 0 before any traffic."""
    s, mport = start_metrics_server(postie, tmp_path, QUICK_CONFIG, {"bob": "pw"}, name="fresh")
    sc = scrape(mport)
    want = [E("pop3_logins_total", result=r, mechanism="USER", tls=t)
            for r in ("success", "failure", "refused") for t in ("yes", "no")]
    want += [E("pop3_connections_refused_total", reason=r) for r in ("access", "limit", "lockout")]
    want += [E(n) for n in ("pop3_lockouts_total", "pop3_plaintext_refused_total", "pop3_in_use_refusals_total",
                            "pop3_messages_deleted_total", "pop3_sessions_active")]
    want += [E("pop3_sent_bytes_total", command=c) for c in ("RETR", "TOP")]
    missing = [f"{n}{dict(l)}" for n, l in want if (n, frozenset(l)) not in sc.samples]
    assert not missing, ("series missing before the first event (they must start at 0):\n  "
                         + "\n  ".join(missing) + "\n---\n" + sc.text)
