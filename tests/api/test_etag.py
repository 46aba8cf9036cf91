"""ETag / If-Match: every one-job response carries the job's revision as a strong
ETag; PUT and DELETE with an If-Match that does not match are 412
``precondition_failed`` and change nothing; without the header, as before. (The
race of many writers over two API replicas: ``tests/api/test_replicas.py``.)"""

from __future__ import annotations

import threading

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cronhive.store import MongoStore
from tests.api.conftest import assert_error, create, job_body


def test_every_response_with_one_job_carries_its_revision(client: FlaskClient, base: str) -> None:
    created = client.post(f"{base}/jobs", json=job_body(job_id="tagged"))
    assert created.status_code == 201 and created.headers["ETag"] == '"1"'
    assert client.get(f"{base}/jobs/tagged").headers["ETag"] == '"1"'
    assert client.head(f"{base}/jobs/tagged").headers["ETag"] == '"1"'
    updated = client.put(f"{base}/jobs/tagged", json={"name": "renamed"})
    assert updated.headers["ETag"] == '"2"'
    assert client.get(f"{base}/jobs/tagged").headers["ETag"] == '"2"'
    assert "ETag" not in client.get(f"{base}/jobs").headers  # a list is not one job


@pytest.mark.parametrize("header", ['"1"', '"9"', 'W/"2"', "2", '"2', '""', '"x"', '"99999999999999999999999"'])
def test_a_stale_weak_or_malformed_if_match_is_412_and_changes_nothing(client: FlaskClient, store: MongoStore,
                                                                       base: str, header: str) -> None:
    create(client, base, job_id="tagged")
    client.put(f"{base}/jobs/tagged", json={"name": "second"})
    before = store.get_job("tagged")
    for method, body in (("PUT", {"name": "third"}), ("DELETE", None)):
        response = client.open(f"{base}/jobs/tagged", method=method, json=body, headers={"If-Match": header})
        error = assert_error(response, 412, "precondition_failed")["error"]
        assert error["details"]["revision"] == 2 and error["details"]["job_id"] == "tagged"
    assert store.get_job("tagged") == before
    assert store.job_revisions("tagged", 1, 20)[1] == 2


@pytest.mark.parametrize("header", ['"2"', "*", ' "5", "2" ', None])
def test_a_matching_star_or_absent_if_match_applies(client: FlaskClient, base: str, header: str | None) -> None:
    create(client, base, job_id="tagged")
    client.put(f"{base}/jobs/tagged", json={"name": "second"})
    headers = {"If-Match": header} if header is not None else {}
    updated = client.put(f"{base}/jobs/tagged", json={"name": "third"}, headers=headers)
    assert updated.status_code == 200 and updated.get_json()["name"] == "third"
    headers = {"If-Match": '"3"'} if header not in (None, "*") else headers
    assert client.delete(f"{base}/jobs/tagged", headers=headers).status_code == 200


def test_if_match_on_an_unknown_job_is_404(client: FlaskClient, base: str) -> None:
    assert_error(client.put(f"{base}/jobs/none", json={"name": "x"}, headers={"If-Match": '"1"'}), 404)
    assert_error(client.delete(f"{base}/jobs/none", headers={"If-Match": '"1"'}), 404)


def test_threads_racing_the_same_if_match_exactly_one_wins(app: Flask, store: MongoStore) -> None:
    client = app.test_client()
    create(client, job_id="raced")
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def writer(index: int) -> None:
        own = app.test_client()
        start.wait()
        response = own.put("/api/v1/cron/jobs/raced", json={"name": f"writer {index}"}, headers={"If-Match": '"1"'})
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=writer, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [412] * 7
    job = store.get_job("raced")
    assert job.revision == 2 and job.name.startswith("writer ")
    assert [r.revision for r in store.revision_history("raced")] == [1, 2]
