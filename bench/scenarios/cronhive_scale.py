"""cronhive at scale: many per-minute jobs spread across the minute, for a few minutes.

To implement: ``profile.scale_jobs`` jobs with per-minute schedules spread across
the minute (6-field expressions, seconds first: ``"<s> * * * * *"`` with s = i mod 60),
scheduler + workers as in the herd, run ``profile.scale_duration_s``. Count MongoDB
operations with a pymongo ``CommandListener`` in every process (scheduler and
workers; e.g. a module named by HANDLER_MODULES / a sitecustomize on PYTHONPATH
that registers it and appends counts to a file under BENCH_RECORD_DIR at exit),
publishes from the broker's queue statistics or the scheduler's metrics, scheduler
CPU seconds from ``/proc/<pid>/stat`` and peak RSS from ``/proc/<pid>/status`` (VmHWM).

Returns the ``scale`` section: ``jobs``, ``fires_per_s``, ``lateness_p99_ms``,
``mongo_ops_per_run``, ``publishes_per_run``, ``scheduler_cpu_s_per_1k_fires``,
``scheduler_rss_mb``.
"""

from __future__ import annotations

from typing import Any

from bench.profiles import Profile
from bench.services import Services


def run(profile: Profile, services: Services) -> dict[str, Any]:
    raise NotImplementedError("cronhive's scheduler (issue 3) and workers (issue 4) have not landed yet")
