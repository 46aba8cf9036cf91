"""``python -m bench``: run the benchmarks, print the table, write results/latest.json."""

from bench.run import main

raise SystemExit(main())
