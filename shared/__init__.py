"""cronhive's common code: settings, errors, domain, store, leases and cron math.

`api/`, `scheduler/` and `worker/` import from here and never from each other.
"""
