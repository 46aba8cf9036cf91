"""``--help`` of every ``cronhive`` command prints its help and starts nothing.

Each command runs as the installed console script in a session of its own, with
MongoDB and RabbitMQ pointed at dead ports and the API, metrics and embedded
MongoDB on free ports: a command that started anything would either not exit
(a server) or fail on the dead services — never exit 0 with its usage text. After
it exits, no process of its session may remain and nothing may listen on its ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import services
from tests.cli.conftest import CLIENT_ENV, CRONHIVE, REPO

#: a command that starts nothing is back well within this
EXIT_WITHIN_S = 20.0

JOBS_COMMANDS = ("list", "get", "create", "update", "delete", "trigger", "runs")

CASES = [
    (("up", "--help"), "usage: cronhive up"),
    (("up", "-h"), "usage: cronhive up"),
    (("up", "--no-restart", "--help"), "usage: cronhive up"),
    (("api", "--help"), "usage: cronhive api"),
    (("api", "-h"), "usage: cronhive api"),
    (("api", "--workers", "3", "--help"), "usage: cronhive api"),
    (("scheduler", "--help"), "usage: cronhive scheduler"),
    (("scheduler", "-h"), "usage: cronhive scheduler"),
    (("worker", "--help"), "usage: cronhive worker"),
    (("worker", "-h"), "usage: cronhive worker"),
    (("jobs", "--help"), "usage: cronhive jobs"),
    (("apply", "--help"), "usage: cronhive apply"),
    (("export", "--help"), "usage: cronhive export"),
    (("--help",), "usage: cronhive COMMAND"),
    *[(("jobs", command, "--help"), f"usage: cronhive jobs {command}") for command in JOBS_COMMANDS],
]


def session_members(sid: int) -> list[int]:
    """Pids of live processes in session ``sid`` (field 6 of /proc/<pid>/stat)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def dead_services_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in CLIENT_ENV}
    env.update({
        "MONGODB_URI": f"mongodb://127.0.0.1:{services.free_port()}",
        "MONGODB_TIMEOUT_MS": "500",
        "RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{services.free_port()}/%2F",
        "API_HOST": "127.0.0.1",
        "API_PORT": str(services.free_port()),
        "METRICS_PORT": str(services.free_port()),
        "EMBEDDED_MONGODB_PORT": str(services.free_port()),
        "DATA_DIR": str(tmp_path / "data"),
        "RUNS_QUEUE": "cronhive.test.help.runs",
    })
    return env


@pytest.mark.parametrize(("argv", "usage"), CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_help_prints_usage_and_starts_nothing(argv: tuple[str, ...], usage: str, tmp_path: Path) -> None:
    assert_prints_and_starts_nothing([str(CRONHIVE), *argv], usage, dead_services_env(tmp_path))


#: the processes run as modules (`python -m`, as the Dockerfile and the Compose file do)
MODULE_CASES = [(module, flag) for module in ("cronhive.api", "cronhive.scheduler", "cronhive.worker")
                for flag in ("--help", "-h")]


@pytest.mark.parametrize(("module", "flag"), MODULE_CASES, ids=[f"{m} {f}" for m, f in MODULE_CASES])
def test_the_process_modules_answer_help_themselves(module: str, flag: str, tmp_path: Path) -> None:
    usage = f"usage: cronhive {module.rsplit('.', 1)[1]}"
    assert_prints_and_starts_nothing([sys.executable, "-m", module, flag], usage, dead_services_env(tmp_path))


def assert_prints_and_starts_nothing(command: list[str], usage: str, env: dict[str, str]) -> None:
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"`{' '.join(command)}` did not exit within {EXIT_WITHIN_S} s: it started something")
    finally:
        leftovers = session_members(process.pid)
        if leftovers:
            os.killpg(process.pid, signal.SIGKILL)

    assert process.returncode == 0, err
    assert out.startswith(usage), out
    assert leftovers == [], f"processes left behind by `{' '.join(command)}`: {leftovers}"
    for port in (env["API_PORT"], env["METRICS_PORT"], env["EMBEDDED_MONGODB_PORT"]):
        assert not listening(int(port))
    assert not Path(env["DATA_DIR"]).exists()  # `up` did not even prepare the embedded MongoDB


def test_process_helps_list_their_environment(tmp_path: Path) -> None:
    env = dead_services_env(tmp_path)
    for command, variable in (("api", "API_WORKERS"), ("scheduler", "LEADER_LEASE_S")):
        completed = subprocess.run([str(CRONHIVE), command, "--help"], env=env, cwd=REPO, capture_output=True,
                                   text=True, timeout=EXIT_WITHIN_S)
        assert completed.returncode == 0
        assert "environment" in completed.stdout and variable in completed.stdout


def test_scheduler_refuses_arguments_without_starting(tmp_path: Path) -> None:
    began = time.monotonic()
    completed = subprocess.run([str(CRONHIVE), "scheduler", "--leader"], env=dead_services_env(tmp_path), cwd=REPO,
                               capture_output=True, text=True, timeout=EXIT_WITHIN_S)
    assert completed.returncode == 2
    assert "takes no arguments" in completed.stderr
    assert time.monotonic() - began < EXIT_WITHIN_S


def test_up_refuses_unknown_options_without_starting(tmp_path: Path) -> None:
    completed = subprocess.run([str(CRONHIVE), "up", "--restart-never"], env=dead_services_env(tmp_path), cwd=REPO,
                               capture_output=True, text=True, timeout=EXIT_WITHIN_S)
    assert completed.returncode == 2
    assert "unrecognized arguments: --restart-never" in completed.stderr
    assert not (tmp_path / "data").exists()
