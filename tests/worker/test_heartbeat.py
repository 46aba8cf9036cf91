"""Worker heartbeats (`cronhive.heartbeats`, `worker.heartbeat.WorkerHeartbeat`): written
while the process runs, alive until they expire (the clock moved, not slept), removed on
a clean stop; `GET /workers` serves them. A real worker process's heartbeat is shown by
the dashboard's browser tests (tests/ui)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from cronhive import heartbeats
from cronhive.store import MongoStore
from cronhive.worker.heartbeat import WorkerHeartbeat
from tests.worker.conftest import FakeClock

START = datetime(2026, 3, 26, 10, tzinfo=UTC)


def middleware(store: MongoStore, clock: FakeClock, name: str = "host-a:101") -> WorkerHeartbeat:
    return WorkerHeartbeat(store, clock, worker=name, queue="cronhive.runs", handlers=["noop", "sleep"],
                           interval_s=3600)


def test_a_beat_reports_the_process_and_expires_unless_renewed(store: MongoStore) -> None:
    heartbeats.ensure_indexes(store)
    clock = FakeClock(START)
    beat = middleware(store, clock)
    beat.threads = 4
    beat.before_process_message(None, None)
    beat.before_process_message(None, None)
    beat.after_process_message(None, None)
    assert beat.beat_once()
    (alive,) = heartbeats.alive(store, clock.now())
    assert alive.view() == {
        "worker": "host-a:101", "hostname": "host-a", "pid": 101, "queue": "cronhive.runs", "threads": 4,
        "handlers": ["noop", "sleep"], "in_progress": 1, "processed": 1, "started_at": "2026-03-26T10:00:00Z",
        "seen_at": "2026-03-26T10:00:00Z", "expires_at": "2026-03-26T10:00:15Z",
    }
    assert heartbeats.alive(store, clock.advance(heartbeats.HEARTBEAT_TTL_S - 1))
    assert heartbeats.alive(store, clock.advance(2)) == []  # three beats missed: not alive
    assert beat.beat_once()
    (again,) = heartbeats.alive(store, clock.now())
    assert again.started_at == START and again.seen_at == clock.now()


def test_a_clean_stop_removes_the_heartbeat_and_threads_come_from_the_worker(store: MongoStore) -> None:
    clock = FakeClock(START)
    first, second = middleware(store, clock, "host-a:1"), middleware(store, clock, "host-b:2")
    first.after_worker_boot(None, SimpleNamespace(worker_threads=8))
    second.after_worker_boot(None, SimpleNamespace(worker_threads=2))
    try:
        assert [b.worker for b in _wait_alive(store, clock, 2)] == ["host-a:1", "host-b:2"]
        assert [b.threads for b in heartbeats.alive(store, clock.now())] == [8, 2]
    finally:
        first.before_worker_shutdown(None, None)
    assert [b.worker for b in heartbeats.alive(store, clock.now())] == ["host-b:2"]
    second.before_worker_shutdown(None, None)
    assert heartbeats.alive(store, clock.now()) == []


def _wait_alive(store: MongoStore, clock: FakeClock, count: int) -> list[heartbeats.WorkerBeat]:
    from tests.services import wait_for

    return wait_for(lambda: (beats := heartbeats.alive(store, clock.now())) and len(beats) == count and beats, 10,
                    f"{count} heartbeats")


def test_get_workers_serves_the_live_heartbeats(client, store: MongoStore) -> None:  # type: ignore[no-untyped-def]
    now = store.server_time()
    heartbeats.beat(store, middleware(store, FakeClock(now)).report(), now)
    heartbeats.beat(store, middleware(store, FakeClock(now), "dead:9").report(), now - timedelta(minutes=5))
    for base in ("/api/v1/cron", "/api/v1/cron/api/v1/cron"):
        response = client.get(f"{base}/workers")
        assert response.status_code == 200
        assert [worker["worker"] for worker in response.get_json()["data"]] == ["host-a:101"]
