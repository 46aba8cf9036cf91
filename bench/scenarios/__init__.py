"""cronhive's own scenarios — the plug-in point for issue 6's cronhive rows.

Each module exposes ``run(profile: bench.profiles.Profile, services: bench.services.Services) -> dict``
returning its section of results/latest.json, with the keys `bench.results`
lists for it. Until cronhive's scheduler (issue 3) and workers (issue 4) land,
they raise NotImplementedError; the runner then reports the section with null
values and a ``"pending"`` note.
"""
