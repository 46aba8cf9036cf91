"""The peers cronhive is measured against, on the same RabbitMQ and MongoDB-wire store.

Harness side (run in the main venv by `bench.run`): `celery_beat`, `periodiq_peer`,
`apscheduler3` — each exposes ``run(profile, services) -> dict``.
Peer side (run by bench/.venv-peers' interpreter): `celery_app`, `periodiq_app`,
`apscheduler_app` — they read their ``BENCH_*`` environment and import only the
peer's own packages and `bench.recorder`.
"""
