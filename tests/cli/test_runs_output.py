"""``cronhive jobs runs`` shows each run's ``output`` (issue 12, item 3): compact JSON in
one cell, cut to 60 characters, marked when the stored output was truncated."""

from __future__ import annotations

from cronhive.cli.jobs import RUN_COLUMNS, render_page


def page(*runs: dict[str, object]) -> dict[str, object]:
    return {"data": list(runs), "pagination": {"page": 1, "limit": 20, "total": len(runs)}}


def test_the_runs_table_has_an_output_column() -> None:
    text = render_page(page(
        {"run_id": "run_a", "status": "succeeded", "output": {"status": 200, "body": "ok"}, "output_truncated": False},
        {"run_id": "run_b", "status": "succeeded", "output": None},
        {"run_id": "run_c", "status": "succeeded", "output": "x" * 200, "output_truncated": True},
    ), RUN_COLUMNS, "runs")
    header, first, second, third = text.splitlines()[:4]
    assert header.split()[-1] == "OUTPUT"
    assert first.endswith('{"status":200,"body":"ok"}')
    assert second.endswith("-")
    assert third.endswith("…") and len(third.split()[-1]) == 60
