"""The scheduler's Prometheus series (defined in `cronhive.metrics`), behind telling names."""

from __future__ import annotations

from cronhive import metrics


class SchedulerMetrics:
    """Records what the scheduler does; one instance per process (the series are global)."""

    def __init__(self) -> None:
        # exposed from the start, so a standby shows is_leader 0 (and absent() means: no scheduler)
        metrics.declare("scheduler")

    def leadership(self, is_leader: bool, term: int | None) -> None:
        metrics.SCHEDULER_IS_LEADER.set(1 if is_leader else 0)
        if term is not None:
            metrics.SCHEDULER_TERM.set(term)

    def published(self, lateness_ms: float) -> None:
        """A slot's run was confirmed by RabbitMQ, ``lateness_ms`` after its slot (pre-jitter)."""
        metrics.SLOTS_FIRED.inc()
        metrics.FIRE_LATENESS.observe(max(0.0, lateness_ms) / 1000.0)

    def skipped(self, reason: str) -> None:
        metrics.SLOTS_SKIPPED.labels(reason=reason).inc()

    def missed(self, count: int) -> None:
        if count > 0:
            metrics.SLOTS_MISSED.inc(count)

    def slots_missed(self, count: int) -> None:
        """Slots the audit found missed (``cronhive_slots_missed_total``)."""
        if count > 0:
            metrics.SLOTS_MISSED_AUDIT.inc(count)

    def unpublished(self, count: int) -> None:
        """Committed runs not yet confirmed by RabbitMQ (the leader's backlog; 0 on a standby)."""
        metrics.UNPUBLISHED_RUNS.set(count)
