"""The docs: the site builds with `mkdocs build --strict` (mkdocs.yml turns a broken link, image or anchor and a page
missing from the nav into warnings, which --strict makes fatal), and README.md stays a front page: short, with the
two commands CI and newcomers rely on, and links into docs/ that resolve on GitHub."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024
# [text](target) and ![alt](target), target up to the first space or closing parenthesis
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)")


def test_the_site_builds_strictly_without_a_warning(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", "mkdocs.yml", "--site-dir", tmp_path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0 and not warnings, f"mkdocs build --strict failed ({done.returncode}):\n{log}"
    assert (tmp_path / "index.html").exists()


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, over {README_MAX_BYTES}: move the rest to docs/"
    text = README.read_text()
    for command in ("make serve", "make test"):
        assert command in text, f"README.md no longer shows `{command}`"


def test_readme_links_resolve_in_the_repository():
    broken = []
    for target in LINK.findall(README.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (ROOT / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to files that do not exist: {broken}"
