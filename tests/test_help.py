"""Every command's ``--help``: it prints its usage and a description that is whole sentences, not a docstring's
first line cut mid-sentence."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Commands that take no options (``python -m segserve.protogen [OUT_DIR]``).
NOT_ARGPARSE = {"segserve.protogen"}


def commands() -> list[str]:
    """Every module run as ``python -m``: those with a ``__main__`` guard, and packages' ``__main__.py``."""
    found = []
    for folder in ("benchmarks", "loadtests", "training", "src/segserve"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "__main__.py" or 'if __name__ == "__main__":' in path.read_text():
                parts = path.relative_to(ROOT / "src" if folder.startswith("src") else ROOT).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
    return [m for m in found if m not in NOT_ARGPARSE]


COMMANDS = commands()


def test_the_commands_are_found():
    assert {"segserve.cli", "segserve.history", "training.train", "training.compare", "loadtests.bench"} <= set(
        COMMANDS
    )


def description(help_text: str) -> str:
    """The paragraph argparse prints between the usage and the first argument group."""
    paragraphs = [p for p in help_text.split("\n\n") if p.strip()]
    assert paragraphs[0].startswith("usage: "), help_text[:200]
    return " ".join(paragraphs[1].split())


# runpy warns when the module was imported already (by another test in this worker); --help reads no state.
@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")
@pytest.mark.parametrize("module", COMMANDS)
def test_help_describes_the_command_in_whole_sentences(module, monkeypatch):
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exc.value.code == 0
    text = description(out.getvalue())
    assert not text.endswith(":") and not text.startswith("options"), text
    assert text[-1] in ".)`", f"{module}: the description stops mid-sentence: {text[-80:]!r}"
