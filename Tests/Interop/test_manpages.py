"""Manual pages and shell completions: generated from the command definitions
(scripts/manpages), committed in docs/man and contrib/completions, and kept current: a
command or flag added without regenerating them fails here."""
import filecmp
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def regenerated(postie_bin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manpages")
    env = dict(os.environ, POSTIE_BIN=str(postie_bin))
    r = subprocess.run([str(REPO / "scripts" / "manpages"), "--check", str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def subcommands(postie_bin, words=()):
    """Every command path below `words`, from the SUBCOMMANDS section of --help."""
    text = subprocess.run([str(postie_bin), *words, "--help"], capture_output=True, text=True, timeout=60).stdout
    found = []
    if "SUBCOMMANDS:" in text:
        for line in text.split("SUBCOMMANDS:", 1)[1].splitlines()[1:]:
            if not line.strip():
                break  # the list ends at the blank line before "See 'postie help ...'"
            if m := re.match(r" {2}([a-z][a-z0-9-]*)\b", line):
                name = m.group(1)
                if name == "help":
                    continue
                found.append((*words, name))
                found += subcommands(postie_bin, (*words, name))
    return found


def test_committed_pages_and_completions_are_current(regenerated):
    for committed, fresh in ((REPO / "docs" / "man", regenerated / "man"),
                             (REPO / "contrib" / "completions", regenerated / "completions")):
        names = sorted(p.name for p in fresh.iterdir())
        assert names == sorted(p.name for p in committed.iterdir()), \
            f"{committed} lists other files than a fresh run: run scripts/manpages"
        _, mismatch, errors = filecmp.cmpfiles(committed, fresh, names, shallow=False)
        assert not mismatch and not errors, f"stale in {committed}: {mismatch + errors}: run scripts/manpages"


def test_every_subcommand_has_a_page_that_renders_cleanly(postie_bin):
    paths = subcommands(postie_bin)
    assert ("serve",) in paths and ("mailbox", "undelete") in paths, paths
    pages = REPO / "docs" / "man"
    for words in [()] + paths:
        page = pages / ("-".join(("postie", *words)) + ".1")
        assert page.is_file(), f"no page for postie {' '.join(words)}"
        r = subprocess.run(["groff", "-mandoc", "-ww", "-z", str(page)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", f"{page.name}: {r.stderr}"
    text = subprocess.run(["man", "-l", str(pages / "postie-serve.1")], capture_output=True, text=True,
                          env=dict(os.environ, MANWIDTH="100", MAN_KEEP_FORMATTING="0"), timeout=60).stdout
    plain = re.sub(r".\x08", "", text)
    assert "postie serve" in plain and "--login-timeout" in plain, plain[:2000]
    assert "postie-mailbox-undelete(1)" in re.sub(r".\x08", "", subprocess.run(
        ["man", "-l", str(pages / "postie-mailbox.1")], capture_output=True, text=True, timeout=60).stdout)


def complete(line: str) -> list[str]:
    """What bash offers for `line` (the cursor at its end) with contrib/completions/postie.bash."""
    words = line.split(" ")
    script = f"""
source {REPO / 'contrib' / 'completions' / 'postie.bash'}
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({' '.join(repr(w) for w in words)})
COMP_CWORD={len(words) - 1}
_postie postie {words[-1]!r} {words[-2]!r}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    bash = shutil.which("bash")
    assert bash, "bash is missing"
    r = subprocess.run([bash, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completion_offers_commands_and_flags():
    assert complete("postie ser") == ["serve"]
    assert "--login-timeout" in complete("postie serve --login-t")
    assert "undelete" in complete("postie mailbox und")
    for script in ("postie.bash", "_postie", "postie.fish"):
        assert (REPO / "contrib" / "completions" / script).stat().st_size > 1000
    r = subprocess.run(["bash", "-n", str(REPO / "contrib" / "completions" / "postie.bash")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
