"""``GET /jobs/{id}/revisions``: newest first, paginated like the other lists, the
actor and ``changes`` of each change, answered for a deleted job too."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.api.conftest import FakeClock, assert_error, create


def test_revisions_of_a_job_through_its_life(client: FlaskClient, clock: FakeClock, base: str) -> None:
    create(client, base, job_id="rev")
    clock.advance(minutes=1)
    assert client.put(f"{base}/jobs/rev", json={"schedule": "0 4 * * *"}).status_code == 200
    clock.advance(minutes=1)
    assert client.put(f"{base}/jobs/rev", json={"enabled": False}).status_code == 200
    clock.advance(minutes=1)
    assert client.delete(f"{base}/jobs/rev").status_code == 200

    response = client.get(f"{base}/jobs/rev/revisions")
    assert response.status_code == 200
    body = response.get_json()
    assert body["pagination"] == {"page": 1, "limit": 20, "total": 4}
    assert [(r["revision"], r["action"], r["actor"], r["at"]) for r in body["data"]] == [
        (4, "delete", "anonymous", "2026-03-26T10:03:00Z"),
        (3, "pause", "anonymous", "2026-03-26T10:02:00Z"),
        (2, "update", "anonymous", "2026-03-26T10:01:00Z"),
        (1, "create", "anonymous", "2026-03-26T10:00:00Z"),
    ]
    assert body["data"][1]["changes"] == {"enabled": [True, False]}
    assert body["data"][2]["changes"] == {"schedule": ["0 3 * * *", "0 4 * * *"]}
    assert body["data"][3]["changes"]["name"] == [None, "Nightly export"]
    assert set(body["data"][0]) == {"revision", "at", "actor", "action", "changes"}

    page = client.get(f"{base}/jobs/rev/revisions?page=2&limit=3").get_json()
    assert [r["revision"] for r in page["data"]] == [1] and page["pagination"]["total"] == 4


def test_unknown_job_and_bad_paging(client: FlaskClient, base: str) -> None:
    assert_error(client.get(f"{base}/jobs/nope/revisions"), 404, "job_not_found")
    create(client, base, job_id="rev")
    assert_error(client.get(f"{base}/jobs/rev/revisions?limit=101"), 400, "invalid_query")
    assert_error(client.get(f"{base}/jobs/rev/revisions?color=red"), 400, "invalid_query")
