"""SIGHUP re-reads the config file and applies policy without dropping open sessions."""

import signal

from kits.pop3 import POP3Raw


def write_config(path, deny, per_ip):
    path.write_text(
        "deny: [%s]\n" % ", ".join('"%s"' % d for d in deny)
        + "max_connections_per_ip: %d\n" % per_ip
    )


def greeting_or_none(host, port, source):
    """The greeting line, or None if the server closed without one."""
    with POP3Raw(host, port, source=source, read_greeting=False, timeout=5) as c:
        return c.readline_raw() or None


def test_sighup_applies_new_access_list_and_limits_to_new_connections_only(env_factory, tmp_path):
    config = tmp_path / "policy.yaml"
    write_config(config, deny=[], per_ip=50)
    env = env_factory(extra=["--config", str(config)])

    # A session from 127.0.0.2 opened before the reload.
    old = POP3Raw(env.host, env.port, source="127.0.0.2")
    assert old.greeting.startswith(b"+OK")
    old.ok(f"USER {'bob'}")
    old.ok(f"PASS {env.users['bob']}")

    write_config(config, deny=["127.0.0.2/32"], per_ip=1)
    env.server.proc.send_signal(signal.SIGHUP)
    env.server.wait_log("SIGHUP: reloaded policy", timeout=30)

    # New connections from the denied address get no greeting; others still do.
    assert greeting_or_none(env.host, env.port, "127.0.0.2") is None
    assert greeting_or_none(env.host, env.port, "127.0.0.4").startswith(b"+OK")
    # The new per-IP limit (1) applies: a second concurrent connection from one address is refused.
    first = POP3Raw(env.host, env.port, source="127.0.0.5")
    second = greeting_or_none(env.host, env.port, "127.0.0.5")
    assert second is not None and second.startswith(b"-ERR [SYS/TEMP] Too many connections"), second
    first.cmd("QUIT")

    # The session opened before the reload goes on.
    assert old.ok("STAT").startswith("+OK")
    assert old.ok("NOOP").startswith("+OK")
    old.cmd("QUIT")


def test_sighup_with_a_broken_config_keeps_the_old_policy(env_factory, tmp_path):
    config = tmp_path / "policy.yaml"
    write_config(config, deny=[], per_ip=50)
    env = env_factory(extra=["--config", str(config)])
    config.write_text('deny: ["not-a-cidr"]\n')
    env.server.proc.send_signal(signal.SIGHUP)
    env.server.wait_log("configuration not reloaded", timeout=30)
    assert "not-a-cidr" in env.server.log_text()
    assert greeting_or_none(env.host, env.port, "127.0.0.2").startswith(b"+OK")
    assert env.server.alive()
