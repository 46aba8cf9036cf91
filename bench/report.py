"""The printed table and the ours/peer ratios."""

from __future__ import annotations

from typing import Any

OURS = "cronhive"
LATENESS_KEYS = ("p50", "p99", "max")


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """cronhive ÷ peer for each herd figure (below 1: cronhive is ahead); null while either is missing."""
    ours = results.get("herd") or {}
    table = {}
    for name, peer in (results.get("peers") or {}).items():
        row = {f"start_lateness_{key}": _ratio(_lateness(ours, key), _lateness(peer, key)) for key in LATENESS_KEYS}
        row["all_started"] = _ratio(ours.get("all_started_s"), peer.get("all_started_s"))
        table[name] = row
    return table


def ceiling_fractions(results: dict[str, Any]) -> dict[str, Any]:
    """cronhive's runs per second — the herd's (N ÷ time until all started) and the scale
    window's (fires/s) — and each as a fraction of the store's insert and update rates."""
    ceiling = results.get("store_ceiling") or {}
    herd = results.get("herd") or {}
    scale = results.get("scale") or {}
    herd_rate = (herd["n"] / herd["all_started_s"]) if herd.get("all_started_s") and herd.get("n") else None
    scale_rate = scale.get("fires_per_s")
    out: dict[str, Any] = {"herd_runs_per_s": round(herd_rate, 1) if herd_rate else None,
                           "scale_runs_per_s": scale_rate}
    for name, value in (("herd", herd_rate), ("scale", scale_rate)):
        for key, short in (("insert_docs_per_s", "insert"), ("update_docs_per_s", "update"),
                           ("run_path_floor_runs_per_s", "floor")):
            out[f"{name}_fraction_of_{short}"] = round(value / ceiling[key], 4) if value and ceiling.get(key) else None
    return out


def _lateness(section: dict[str, Any], key: str) -> float | None:
    return (section.get("start_lateness_ms") or {}).get(key)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0:
        return None
    return round(ours / theirs, 3)


def render(results: dict[str, Any]) -> str:
    lines = [f"cronhive bench — profile {results['profile']['name']}, herd of {results['profile']['herd_jobs']} jobs, "
             f"{results['profile']['worker_processes']} worker processes × {results['profile']['worker_threads']} threads",
             "",
             "herd: handler start − slot (ms), and time until all N started (s)"]
    header = f"{'system':<14}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'all started s':>15}{'started':>10}  note"
    lines += [header, "-" * len(header)]
    rows = [(OURS, results.get("herd") or {}), *(results.get("peers") or {}).items()]
    for name, section in rows:
        lines.append(_row(name, section))
    lines += ["", "ratios cronhive ÷ peer (below 1: cronhive ahead)"]
    header = f"{'peer':<14}{'p50':>10}{'p99':>10}{'max':>10}{'all started':>15}"
    lines += [header, "-" * len(header)]
    for name, row in (results.get("ratios") or {}).items():
        lines.append(f"{name:<14}" + "".join(f"{_fmt(row[f'start_lateness_{key}'], 3):>10}" for key in LATENESS_KEYS)
                     + f"{_fmt(row['all_started'], 3):>15}")
    herd = results.get("herd") or {}
    lines += ["", f"herd: MongoDB commands per run {herd.get('mongo_ops_per_run')}, documents written per run "
              f"{herd.get('mongo_docs_written_per_run')}"]
    for section in ("store_ceiling", "scale", "failover"):
        lines += ["", f"{section}: " + _flat(_headline(section, results.get(section) or {}))]
    lines += ["", *render_api(results.get("api") or {})]
    lines += ["", f"machine: {results['machine'].get('cores')} cores, {results['machine'].get('memory')}, "
              f"{results['machine'].get('cpu')}" if results.get("machine") else "",
              f"took {results.get('duration_s')} s"]
    return "\n".join(lines)


def _row(name: str, section: dict[str, Any]) -> str:
    lateness = section.get("start_lateness_ms") or {}
    started = section.get("started")
    started_text = f"{started}/{section.get('n')}" if started is not None else "-"
    return (f"{name:<14}" + "".join(f"{_fmt(lateness.get(key), 1):>10}" for key in LATENESS_KEYS)
            + f"{_fmt(section.get('all_started_s'), 2):>15}{started_text:>10}  {_note(section)}")


def _note(section: dict[str, Any]) -> str:
    if section.get("pending"):
        return f"pending: {section['pending']}"
    if section.get("error"):
        return f"error: {section['error'].splitlines()[0][:100]}"
    if section.get("skipped"):
        return f"skipped: {section['skipped']}"
    if section.get("incomplete"):
        return f"INCOMPLETE within {section.get('bound_s')} s"
    return ""


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


#: what the table prints of the scale and failover sections (the JSON has every detail)
HEADLINE_KEYS = {
    "store_ceiling": ("insert_docs_per_s", "update_docs_per_s", "bulk_update_docs_per_s", "find_one_per_s",
                      "run_path_floor_runs_per_s", "runs_update_docs_per_s", "jobs_update_docs_per_s",
                      "herd_runs_per_s", "herd_fraction_of_insert", "herd_fraction_of_floor", "scale_runs_per_s",
                      "scale_fraction_of_insert", "scale_fraction_of_floor"),
    "scale": ("jobs", "window_s", "offered_per_s", "fires_per_s", "lateness_p99_ms", "publish_lateness_p99_ms",
              "mongo_ops_per_run", "mongo_docs_written_per_run", "publishes_per_run", "scheduler_cpu_s_per_1k_fires",
              "scheduler_rss_mb"),
    "failover": ("kills", "takeover_s", "lost", "doubled", "executed_ratio", "expected_slots", "not_executed",
                 "mongo_ops_per_executed_run"),
}
NOTE_KEYS = ("pending", "error", "skipped")


def _headline(section: str, values: dict[str, Any]) -> dict[str, Any]:
    keys = HEADLINE_KEYS[section] + NOTE_KEYS
    return {key: values[key] for key in keys if key in values}


def _flat(section: dict[str, Any]) -> str:
    parts = []
    for key, value in section.items():
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def render_api(api: dict[str, Any]) -> list[str]:
    """The ``api`` section: requests/s and latency per endpoint."""
    server = api.get("server") or {}
    title = f"api: {api.get('clients')} clients, {api.get('duration_s')} s"
    if server:
        title += (f"; gunicorn {server.get('worker_class')} {server.get('workers')} workers x "
                  f"{server.get('threads')} threads")
    note = " ".join(f"{key}: {api[key]}" for key in NOTE_KEYS if api.get(key))
    lines = [title + (f"  ({note})" if note else "")]
    header = (f"{'endpoint':<10}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'requests':>10}"
              f"  | alone:{'ms':>7}{'api cpu':>9}{'store cpu':>11}")
    lines += [header, "-" * len(header)]
    solo = api.get("solo") or {}
    for name, row in (api.get("endpoints") or {}).items():
        alone = solo.get(name) or {}
        lines.append(f"{name:<10}{_fmt(row.get('requests_per_s'), 1):>9}{_fmt(row.get('p50_ms'), 1):>10}"
                     f"{_fmt(row.get('p99_ms'), 1):>10}{_fmt(row.get('max_ms'), 1):>10}{row.get('requests', 0):>10}"
                     f"  |{_fmt(alone.get('latency_ms'), 1):>13}{_fmt(alone.get('api_cpu_ms'), 2):>9}"
                     f"{_fmt(alone.get('store_cpu_ms'), 2):>11}")
    latency = api.get("latency_ms") or {}
    lines.append(f"{'all':<10}{_fmt(api.get('requests_per_s'), 1):>9}{_fmt(latency.get('p50'), 1):>10}"
                 f"{_fmt(latency.get('p99'), 1):>10}{_fmt(latency.get('max'), 1):>10}{api.get('requests') or 0:>10}")
    lines.append(f"5xx: {api.get('errors_5xx')}, unexpected: {api.get('unexpected')}, "
                 f"CPU s in the window: {api.get('cpu_s')}")
    return lines
