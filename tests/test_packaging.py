"""Packaging: one import namespace, ``cronhive``, whatever else is on the path.

The wheel holds only ``cronhive/`` (and its dist-info); every module imports
as ``cronhive.…`` from a directory holding decoy packages named like the
repository's folders (``api``, ``shared``, ``worker``, ``scheduler``), and the
core never imports the command-line application.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("api", "scheduler", "worker", "shared")


def all_modules() -> list[str]:
    """Every module of the distribution, from the packaging's own folder map."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = setuptools["package-dir"]
    modules = set()
    for package in setuptools["packages"]:
        parent, _, leaf = package.rpartition(".")
        folder = REPO / folders[package] if package in folders else REPO / folders[parent] / leaf
        modules.add(package)
        modules.update(f"{package}.{path.stem}" for path in folder.glob("*.py") if path.stem != "__init__")
    return sorted(modules)


def test_the_wheel_holds_only_the_cronhive_package(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("cronhive-*.whl")
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"cronhive"}
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("cronhive/__init__.py", "cronhive/api/__main__.py", "cronhive/scheduler/__main__.py",
                   "cronhive/worker/__main__.py", "cronhive/cli/__init__.py"):
        assert module in names
    # the dashboard's templates and every asset it serves ship inside the package
    dashboard = REPO / "api" / "ui"
    for path in [*dashboard.glob("templates/*.html"), *dashboard.rglob("static/**/*.*")]:
        assert f"cronhive/api/ui/{path.relative_to(dashboard).as_posix()}" in names, path


def test_every_module_imports_beside_decoy_packages(tmp_path: Path) -> None:
    for name in FOLDERS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('decoy package {name} imported')\n")
    modules = [m for m in all_modules() if not m.endswith("__main__")]
    assert len(modules) > 30
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n"
              "    importlib.import_module(name)\n"
              f"assert not {{'api', 'shared', 'worker', 'scheduler'}} & set(sys.modules), sorted(sys.modules)\n"
              "print('ok', len(sys.modules))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
    cli = Path(sys.executable).with_name("cronhive")
    helped = subprocess.run([str(cli), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "usage: cronhive" in helped.stdout


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_processes_import_only_the_core_and_the_core_never_imports_the_cli() -> None:
    processes = {"api": "cronhive.api", "scheduler": "cronhive.scheduler", "worker": "cronhive.worker"}
    for folder, package in processes.items():
        others = [other for other in processes.values() if other != package] + ["cronhive.cli"]
        for path in (REPO / folder).rglob("*.py"):
            for module in imported_modules(path):
                assert not any(module == o or module.startswith(o + ".") for o in others), f"{path}: {module}"
    for path in (REPO / "shared").rglob("*.py"):
        if "cli" in path.relative_to(REPO / "shared").parts:
            continue
        for module in imported_modules(path):
            for forbidden in (*processes.values(), "cronhive.cli"):
                assert not (module == forbidden or module.startswith(forbidden + ".")), f"{path}: {module}"


def test_nothing_imports_the_old_top_level_names() -> None:
    for folder in (*FOLDERS, "tests", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            if ".venv" in path.parts:
                continue
            for module in imported_modules(path):
                assert module.split(".", 1)[0] not in FOLDERS, f"{path} imports {module}"


def test_the_public_handler_api() -> None:
    from cronhive import HandlerContext, handler
    from cronhive.handlers import HandlerContext as Context
    from cronhive.handlers import handler as register

    assert handler is register and HandlerContext is Context
