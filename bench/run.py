"""The runner: ``python -m bench [--profile quick|full] [--only ...] [--peers ...]``.

Starts the services (bench.services), runs cronhive's scenarios (bench.scenarios)
and the peers' herds (bench.peers) one after another — never two systems at
once on the 2 cores — then writes results/latest.json and prints the table.
A scenario that raises NotImplementedError is reported ``pending``; any other
failure is reported as that section's ``error`` and the run goes on; the exit
code is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine, report, results
from bench.procs import raise_on_sigterm
from bench.profiles import PROFILES, Profile
from bench.services import BENCH_DIR, Services, started

log = logging.getLogger("bench")

#: cronhive's scenarios, in run order: section -> module exposing run(profile, services)
CRONHIVE_SCENARIOS = {
    "store_ceiling": "bench.scenarios.store_ceiling",
    "herd": "bench.scenarios.cronhive_herd",
    "scale": "bench.scenarios.cronhive_scale",
    "failover": "bench.scenarios.cronhive_failover",
    "api": "bench.scenarios.cronhive_api",
}
#: the peers, in run order: name -> module exposing run(profile, services)
PEERS = {
    "celery-beat": "bench.peers.celery_beat",
    "periodiq": "bench.peers.periodiq_peer",
    "apscheduler3": "bench.peers.apscheduler3",
}
SECTIONS = ("store_ceiling", "herd", "peers", "scale", "failover", "api")
DEFAULT_OUTPUT = BENCH_DIR / "results" / "latest.json"
WORKDIR = BENCH_DIR / "work"

Scenario = Callable[[Profile, Services], dict[str, Any]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run cronhive's benchmarks and its peers', print the table, write the JSON results.")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers to run (default: all)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the JSON results")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.only = _names(args.only, SECTIONS, "section")
    args.peers = _names(args.peers, tuple(PEERS), "peer")
    return args


def _names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown {what}(s): {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def load(module: str) -> Scenario:
    return importlib.import_module(module).run


def run_section(label: str, scenario: Scenario, profile: Profile, services: Services,
                empty: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Run one scenario; returns (its section, whether it failed)."""
    log.info("%s: running", label)
    began = time.monotonic()
    try:
        section = scenario(profile, services)
    except NotImplementedError as exc:
        log.info("%s: pending (%s)", label, exc)
        return {**empty, "pending": str(exc) or "not implemented yet"}, False
    except Exception as exc:
        log.error("%s: failed: %s", label, exc)
        log.debug("%s", traceback.format_exc())
        return {**empty, "error": f"{type(exc).__name__}: {exc}"}, True
    log.info("%s: done in %.0f s", label, time.monotonic() - began)
    return section, False


def fresh_workdir() -> Path:
    """This run's scratch directory (the previous run's is removed)."""
    workdir = WORKDIR / "latest"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return workdir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # its connection errors are reported as one line below
    raise_on_sigterm()
    profile = PROFILES[args.profile]
    began = time.monotonic()
    output: dict[str, Any] = {
        "profile": profile.describe(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    workdir = fresh_workdir()
    try:
        failed = run_all(args, profile, output, workdir)
    except RuntimeError as exc:  # a service missing or unreachable: one clear line, no traceback wall
        log.error("%s", exc)
        return 2
    except (KeyboardInterrupt, SystemExit):
        log.error("interrupted: every process the bench started is stopped, its queues deleted; no results written")
        raise
    output["ratios"] = report.ratios(output)
    output["store_ceiling"] = {**output["store_ceiling"], **report.ceiling_fractions(output)}
    output["duration_s"] = round(time.monotonic() - began, 1)
    output = {key: output[key] for key in
              ("store_ceiling", "herd", "scale", "failover", "api", "peers", "ratios", "machine", "profile",
               "started_at", "duration_s")}
    results.write_json(output, args.output)
    print(report.render(output))
    print(f"\nresults: {args.output}   logs: {workdir}")
    return 1 if failed else 0


def run_all(args: argparse.Namespace, profile: Profile, output: dict[str, Any], workdir: Path) -> bool:
    """Start the services and run every selected section into ``output``; True if any failed."""
    failed = False
    with started(workdir, need_peers="peers" in args.only and bool(args.peers)) as services:
        output["machine"] = machine.describe(services)
        for section in SECTIONS:
            if section == "peers":
                output["peers"], section_failed = run_peers(args.peers if "peers" in args.only else [], profile, services)
            elif section in args.only:
                output[section], section_failed = run_section(
                    f"cronhive {section}", load(CRONHIVE_SCENARIOS[section]), profile, services,
                    results.EMPTY[section](profile))
            else:
                output[section], section_failed = {**results.EMPTY[section](profile), "skipped": "not selected"}, False
            failed |= section_failed
    return failed


def run_peers(names: list[str], profile: Profile, services: Services) -> tuple[dict[str, Any], bool]:
    """The selected peers' herds, one after another, in `PEERS` order."""
    peers: dict[str, Any] = {}
    failed = False
    for name in (name for name in PEERS if name in names):
        peers[name], peer_failed = run_section(f"peer {name}", load(PEERS[name]), profile, services,
                                               results.empty_peer(profile))
        failed |= peer_failed
    return peers, failed
