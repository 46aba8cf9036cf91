"""API request metrics: counts by route, method and status, and latency, served
at ``GET /metrics`` (aggregated over gunicorn's workers in multiprocess mode)."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, g, request

from cronhive import metrics as series
from cronhive.metrics import exposition

metrics_bp = Blueprint("metrics", __name__)


@metrics_bp.get("/metrics")
def metrics() -> Response:
    body, content_type = exposition()
    return Response(body, content_type=content_type)


def _route() -> str:
    """The URL rule (``/api/v1/cron/jobs/<job_id>``), never the raw path: bounded label values."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def instrument(app: Flask) -> None:
    """Count and time every request; the API's series exist (at zero) from the start."""
    series.declare("api")

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        started = g.pop("request_started", None)
        route = _route()
        series.API_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        if started is not None:
            series.API_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        return response
