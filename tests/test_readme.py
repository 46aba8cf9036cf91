"""The README's quick start and configuration table stay true to the code."""

from __future__ import annotations

from pathlib import Path

from cronhive.settings import VARIABLES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quick_start_is_make_up_and_make_test() -> None:
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make up" in quick and "make test" in quick


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    documented = {line.split("`")[1] for line in rows}
    assert set(VARIABLES) <= documented, sorted(set(VARIABLES) - documented)


def test_makefile_has_the_quick_start_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("up:", "test:"):
        assert any(line.startswith(target) for line in makefile.splitlines()), target


def test_ci_runs_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
