"""``python -m cronhive.worker`` (what ``cronhive worker`` runs) refuses to start with one clear
log line and a non-zero exit when it cannot work (SPEC §2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.worker.cluster import ROOT


@pytest.mark.parametrize(("overrides", "named"), [
    ({"MONGODB_URI": "mongodb://127.0.0.1:9", "MONGODB_TIMEOUT_MS": "300"}, "mongodb://127.0.0.1:9"),
    ({"HANDLER_MODULES": "tests.worker.no_such_handlers"}, "tests.worker.no_such_handlers"),
], ids=["mongodb-unreachable", "bad-handler-module"])
def test_a_worker_that_cannot_work_exits_with_one_clear_line(overrides: dict[str, str], named: str) -> None:
    env = {**os.environ, "METRICS_PORT": "0", "LOG_LEVEL": "INFO", **overrides}
    result = subprocess.run([sys.executable, "-m", "cronhive.worker"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    event = json.loads(lines[0])
    assert event["level"] == "error" and named in event["event"]
