"""cronhive's herd: N jobs due at one minute boundary, 2 worker processes × 8 threads.

To implement (when ``python -m scheduler`` and ``python -m worker`` exist), with
the same parts the peers use so the rows compare like with like:

- subclass `bench.herd.HerdSystem` (see bench/peers/periodiq_peer.py): in ``start``
  insert N jobs (``job_id = bench.herd.job_name(i)``, ``schedule = plan.cron``,
  ``handler = "bench_record"``, ``overlap_policy = "allow"`` or default) through
  ``shared.store.MongoStore`` into a database of its own on ``services.mongodb_uri``,
  then start ``services.main_python -m scheduler`` and
  ``-m worker --processes 2 --threads 8`` with MONGODB_URI, MONGODB_DB,
  RABBITMQ_URL = ``services.rabbitmq_url``, RUNS_QUEUE = ``cronhive.bench.<tag>.runs``,
  HANDLER_MODULES = ``bench.cronhive_handlers`` (records starts exactly like the
  peers' handlers do); ``cleanup`` drops the database and deletes the queue and
  its ``.DQ``/``.XQ``;
- ``result = bench.herd.run_herd(system)``; then add ``publish_lateness_ms`` =
  `bench.stats.summary_ms` of (run ``queued_at`` − ``scheduled_for``) over the
  slot's runs (``queued_at`` is written after RabbitMQ's publisher confirm).

Returns the ``herd`` section: ``n``, ``publish_lateness_ms`` {p50, p99, max},
``start_lateness_ms`` {p50, p99, max}, ``all_started_s`` (+ the extras run_herd adds).
"""

from __future__ import annotations

from typing import Any

from bench.profiles import Profile
from bench.services import Services


def run(profile: Profile, services: Services) -> dict[str, Any]:
    raise NotImplementedError("cronhive's scheduler (issue 3) and workers (issue 4) have not landed yet")
