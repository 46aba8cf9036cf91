"""The shape of results/latest.json (issue 6) and how it is written.

Top-level keys: ``store_ceiling`` (the store's own rates, and cronhive's runs/s as
a fraction of them), ``herd``, ``scale``, ``failover``, ``api`` (cronhive), ``peers`` ({name: herd
result}), ``ratios`` ({peer: cronhive / peer}), ``machine``, plus ``profile``,
``started_at``, ``duration_s``. A section that could not be measured keeps
every key with null values and says why in ``"pending"`` (not built yet) or
``"error"`` (it failed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.profiles import Profile
from bench.stats import empty_summary


def empty_herd(profile: Profile) -> dict[str, Any]:
    return {"n": profile.herd_jobs, "publish_lateness_ms": empty_summary(), "start_lateness_ms": empty_summary(),
            "all_started_s": None, "mongo_ops_per_run": None}


def empty_scale(profile: Profile) -> dict[str, Any]:
    return {"jobs": profile.scale_jobs, "fires_per_s": None, "lateness_p99_ms": None, "mongo_ops_per_run": None,
            "mongo_docs_written_per_run": None, "publishes_per_run": None, "scheduler_cpu_s_per_1k_fires": None, "scheduler_rss_mb": None}


def empty_failover(profile: Profile) -> dict[str, Any]:
    return {"kills": profile.failover_kills, "takeover_s": {"median": None, "max": None}, "lost": None,
            "doubled": None, "executed_ratio": None}


def empty_peer(profile: Profile) -> dict[str, Any]:
    return {"n": profile.herd_jobs, "start_lateness_ms": empty_summary(), "all_started_s": None}


def empty_api(profile: Profile) -> dict[str, Any]:
    return {"clients": profile.api_clients, "duration_s": profile.api_duration_s, "requests_per_s": None,
            "latency_ms": empty_summary(), "endpoints": {}, "errors_5xx": None}


def empty_store_ceiling(profile: Profile) -> dict[str, Any]:
    return {"insert_docs_per_s": None, "update_docs_per_s": None, "bulk_update_docs_per_s": None,
            "find_one_per_s": None, "run_path_floor_runs_per_s": None, "runs_update_docs_per_s": None,
            "jobs_update_docs_per_s": None}


EMPTY = {"store_ceiling": empty_store_ceiling, "herd": empty_herd, "scale": empty_scale, "failover": empty_failover, "api": empty_api}


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write atomically: a ``.tmp`` beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
