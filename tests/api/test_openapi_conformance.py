"""Schemathesis against the served OpenAPI document: generated requests (valid
and invalid) never get a 5xx, and every response is documented and matches its
declared schema. Derandomized, so a run is repeatable."""

from __future__ import annotations

from collections import Counter
from typing import Any

import hypothesis
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given
from hypothesis.errors import Unsatisfiable
from schemathesis import checks as general_checks
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from tests.api.conftest import CANONICAL, job_body

EXAMPLES_PER_OPERATION = 30
CHECKS = [
    general_checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def run_operation(operation: Any, mode: GenerationMode, statuses: Counter, path_parameters: dict[str, str] | None) -> str | None:
    """Fuzz one operation; the failure text, or None."""

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @SETTINGS
    def check(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKS)
        statuses[response.status_code] += 1

    try:
        check()
    except Unsatisfiable:  # nothing in this operation can be made invalid
        return None
    except Exception as exc:  # the check's report names the request and the broken rule
        return f"{operation.label} [{mode.value}]: {exc}"
    return None


def test_generated_requests_conform_to_the_openapi_document(app: Flask) -> None:
    client = app.test_client()
    for job_id in ("seed", "other"):
        assert client.post(f"{CANONICAL}/jobs", json=job_body(job_id=job_id)).status_code == 201
    run_id = client.post(f"{CANONICAL}/jobs/other/trigger").get_json()["run_id"]

    schema = schemathesis.openapi.from_wsgi(f"{CANONICAL}/openapi.json", app)
    operations = {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in schema.get_all_operations())}
    assert len(operations) >= 11
    # then the id-scoped operations once more on things that exist: trigger before runs, delete last
    existing = [
        (f"GET {CANONICAL}/runs/{{run_id}}", {"run_id": run_id}),
        (f"POST {CANONICAL}/runs/{{run_id}}/cancel", {"run_id": run_id}),
        *((f"{method} {CANONICAL}/jobs/{{job_id}}{suffix}", {"job_id": "seed"}) for method, suffix in [
            ("GET", ""), ("PUT", ""), ("POST", "/trigger"), ("POST", "/backfill"), ("GET", "/runs"), ("DELETE", "")]),
    ]
    plan = [(op, None) for op in operations.values()] + [(operations[key], params) for key, params in existing]

    statuses: Counter = Counter()
    failures = [
        failure
        for operation, path_parameters in plan
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if (failure := run_operation(operation, mode, statuses, path_parameters))
    ]
    assert not failures, "\n\n".join(failures)
    # every documented request example is accepted as documented (generation may or
    # may not happen to replay them; a client copying them must succeed)
    document = client.get(f"{CANONICAL}/openapi.json").get_json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            example = (operation.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("example")
            if example is None or "{" in path:
                continue
            response = client.open(path, method=method.upper(), json=example)
            assert str(response.status_code) in operation["responses"], (path, method, response.status_code)
            assert response.status_code < 300, (path, method, response.get_json())
            statuses[response.status_code] += 1
    assert sum(statuses.values()) >= 300, statuses
    assert not [status for status in statuses if status >= 500]
    assert {200, 201, 202, 400, 404, 422} <= set(statuses), statuses
