"""The cronhive worker: Dramatiq workers that execute runs (SPEC §5).

``python -m cronhive.worker --processes N --threads N`` (what ``cronhive worker`` runs)
starts the ``dramatiq`` CLI on `worker.broker` (its ``setup`` is the worker
process's start step). Each message names a run; the work around the handler
call lives in Dramatiq middleware (`worker.middleware`):

* `RunLifecycle` decides whether the run may start (`worker.decisions`), takes
  the job's lease (or the run's own, under ``allow``) with a new fencing token,
  marks the run ``running``, sets the per-job time limit, and afterwards records
  the outcome, schedules a retry or dead-letters the message;
* `LeaseKeeper` (`worker.keeper`) renews the leases of running attempts;
* `Maintenance` (`worker.maintenance`) reaps runs whose worker died and enforces
  the run history retention.

The actor body (`worker.actor`) only looks the handler up and calls it.
"""
