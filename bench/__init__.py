"""cronhive's benchmarks (issue 6): cronhive against Celery beat, periodiq and APScheduler 3.

Run with ``make bench`` (quick profile) or ``make bench-full``; see bench/README.md.
This package imports nothing at import time: the peers' virtualenv imports
``bench.recorder`` and the ``bench.peers.*_app`` modules from it.
"""
