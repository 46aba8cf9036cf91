"""cronhive under failover: SIGKILL the leader repeatedly while jobs fire every 2 s.

To implement: ``profile.failover_jobs`` jobs on ``"*/2 * * * * *"`` with
``misfire_policy = "fire_all"``, two schedulers and the workers; kill the leader
(``GET /scheduler`` or the ``leases`` document's holder pid) ``profile.failover_kills``
times with SIGKILL via `bench.procs.Managed.signal_group`, restarting it each
time; takeover = the new holder's first renewal − the kill instant. Lost slots:
expected (job, slot) pairs between first and last slot without a run; doubled:
slots with more than one run or more than one handler start (bench.recorder).

Returns the ``failover`` section: ``kills``, ``takeover_s`` {median, max}, ``lost``, ``doubled``.
"""

from __future__ import annotations

from typing import Any

from bench.profiles import Profile
from bench.services import Services


def run(profile: Profile, services: Services) -> dict[str, Any]:
    raise NotImplementedError("cronhive's scheduler (issue 3) and workers (issue 4) have not landed yet")
