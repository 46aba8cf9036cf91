"""The README's quick start and configuration table stay true to the code."""

from __future__ import annotations

import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def _run_ci_with_fake_tools(tmp_path: Path, lint_exit: int) -> tuple[int, list[str]]:
    """Run `.ci/run` with `make`, `rabbitmqctl` and `rabbitmq-plugins` replaced by
    recorders on PATH (nothing real is built, started or stopped); the management
    probe asks a local stand-in that answers 200."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    fakes = {
        "make": f'echo "make $*" >> {calls}\n[ "$1" = lint ] && exit {lint_exit}\nexit 0',
        "rabbitmqctl": f'echo "rabbitmqctl $*" >> {calls}\nexit 0',
        "rabbitmq-plugins": f'echo "rabbitmq-plugins $*" >> {calls}\nexit 0',
    }
    for name, body in fakes.items():
        tool = bin_dir / name
        tool.write_text(f"#!/usr/bin/env bash\n{body}\n")
        tool.chmod(0o755)
    management = ThreadingHTTPServer(("127.0.0.1", 0), _Overview)
    threading.Thread(target=management.serve_forever, daemon=True).start()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "RABBITMQ_MANAGEMENT_URL": f"http://127.0.0.1:{management.server_address[1]}"}
    try:
        done = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        management.shutdown()
        management.server_close()
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return done.returncode, [line for line in recorded if line.startswith("make ")]


class _Overview(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/overview" else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_ci_runs_make_lint_before_make_test(tmp_path: Path) -> None:
    returncode, makes = _run_ci_with_fake_tools(tmp_path, lint_exit=0)
    assert returncode == 0
    assert makes == ["make lint", "make test"]


def test_ci_fails_when_lint_fails_and_runs_no_test(tmp_path: Path) -> None:
    returncode, makes = _run_ci_with_fake_tools(tmp_path, lint_exit=2)
    assert returncode != 0
    assert makes == ["make lint"]
