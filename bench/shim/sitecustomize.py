"""Interpreter start-up hook of the processes a cronhive scenario measures.

A scenario puts ``bench/shim`` first on ``PYTHONPATH`` of the processes it counts
(never of the harness, never of the test suite), so Python imports this module
at start-up (`site`). With ``BENCH_PROBE_DIR`` set it installs `bench.probe`: a
pymongo command listener and an AMQP publish counter, dumped to that directory.
Nothing of cronhive's code is changed or imported here.
"""

import os
import sys

if os.environ.get("BENCH_PROBE_DIR"):
    try:
        from bench import probe

        probe.install(os.environ["BENCH_PROBE_DIR"])
    except Exception as exc:  # never stop the process under test; say why it is not counted
        print(f"bench probe not installed: {type(exc).__name__}: {exc}", file=sys.stderr)
