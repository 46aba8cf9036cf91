"""The dashboard in-process (Flask's test client, the real MongoDB-wire store): MongoDB
commands per page view stay bounded whatever the store holds, the session and CSRF
rules, and the headers. The browser tests (tests/ui) cover what a person sees."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cronhive.api.app import close_app, create_app
from cronhive.domain import new_run
from cronhive.enums import RunStatus, Trigger
from cronhive.settings import Settings
from cronhive.store import MongoStore
from cronhive.store.documents import run_to_doc
from tests.api.conftest import SEED_NOW, FakeClock, job_body
from tests.services import CommandCounter

TOKEN = "ui-test-token"


@pytest.fixture
def counter() -> CommandCounter:
    return CommandCounter()


def make_app(settings: Settings, counter: CommandCounter | None = None) -> tuple[Flask, FakeClock]:
    options: dict[str, Any] = {"event_listeners": [counter]} if counter else {}
    store = MongoStore.open(settings, **options)
    app = create_app(settings, store=store)
    app.extensions["cronhive"].owned.append(store)
    app.testing = True
    clock = FakeClock(SEED_NOW)
    app.extensions["cronhive"].clock = clock
    return app, clock


@pytest.fixture
def counted(settings: Settings, store: MongoStore, counter: CommandCounter) -> Iterator[tuple[FlaskClient, FakeClock]]:
    app, clock = make_app(settings, counter)
    yield app.test_client(), clock
    close_app(app)


@pytest.fixture
def secured(settings: Settings, store: MongoStore) -> Iterator[FlaskClient]:
    app, _ = make_app(settings.replace(api_token=TOKEN))
    yield app.test_client()
    close_app(app)


def csrf_of(client: FlaskClient, path: str = "/ui/jobs/new") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:500]
    return found.group(1)


def seed(store: MongoStore, jobs: int, runs_per_job: int) -> list[str]:
    """Jobs (created through the store, as the API creates them) and finished runs."""
    ids = []
    for index in range(jobs):
        doc = store.create_job({**job_body(name=f"Job {index}", schedule="*/5 * * * *"), "args": {}},
                               SEED_NOW - timedelta(hours=30) + timedelta(seconds=index))
        ids.append(doc.job_id)
    runs = []
    for index, job_id in enumerate(ids):
        job = store.get_job(job_id)
        for number in range(runs_per_job):
            at = SEED_NOW - timedelta(minutes=7 * number + index % 7)
            run = new_run(job, f"run_{job_id}_{number}", Trigger.SCHEDULE, at, at, None, status=RunStatus.SUCCEEDED)
            runs.append(run_to_doc(replace(run, started_at=at, finished_at=at + timedelta(seconds=1), duration_ms=1000,
                                           lateness_ms=40 + number)))
    if runs:
        store.runs.insert_many(runs)
    return ids


VIEWS = ("/ui/", "/ui/live", "/ui/jobs/{job}", "/ui/jobs/{job}/live", "/ui/runs/{run}", "/ui/jobs/{job}/edit",
         "/ui/jobs/new", "/ui/preview?schedule=0+8+*+*+*")
#: The most MongoDB commands each view may send (the module docstring of cronhive.api.ui.views).
# the overview's jobs table reads in windows of creation time (cronhive.store.browse): 5 reads
# here, at most MAX_WINDOWS for the worst spacing of creation instants
BOUNDS = {"/ui/": 20, "/ui/live": 15, "/ui/jobs/{job}": 7, "/ui/jobs/{job}/live": 7, "/ui/runs/{run}": 2,
          "/ui/jobs/{job}/edit": 1, "/ui/jobs/new": 0, "/ui/preview?schedule=0+8+*+*+*": 0}


def commands_per_view(client: FlaskClient, counter: CommandCounter, job: str, run: str) -> dict[str, int]:
    counts = {}
    for view in VIEWS:
        path = view.format(job=job, run=run)
        assert client.get(path).status_code == 200, path
        counter.take()
        response = client.get(path)  # the second view: what every view but the very first costs
        assert response.status_code == 200, path
        counts[view] = len(counter.take())
    return counts


def test_a_page_view_costs_the_same_bounded_commands_for_few_and_many_jobs(
        counted: tuple[FlaskClient, FakeClock], store: MongoStore, counter: CommandCounter) -> None:
    client, _ = counted
    few = seed(store, 3, 2)
    assert client.get("/ui/").status_code == 200  # indexes, session key: once per process
    small = commands_per_view(client, counter, few[0], f"run_{few[0]}_0")
    many = seed(store, 150, 4)
    large = commands_per_view(client, counter, many[-1], f"run_{many[-1]}_0")
    for view in VIEWS:
        # the next fires are read in widening windows: a store with few jobs may need more of them
        assert large[view] <= small[view] <= BOUNDS[view], (view, small[view], large[view])


def test_the_hourly_run_counts_are_computed_once_then_read(counted: tuple[FlaskClient, FakeClock], store: MongoStore,
                                                           counter: CommandCounter) -> None:
    client, clock = counted
    seed(store, 4, 20)
    client.get("/ui/")
    counter.take()
    client.get("/ui/live")
    second = counter.take()
    assert second.count("aggregate") == 2  # the open hour's counts (and the job counts' count); kept hours are read
    clock.advance(hours=2)  # two more hours settle: computed once, then kept
    client.get("/ui/live")
    assert counter.take().count("aggregate") == 3
    client.get("/ui/live")
    assert counter.take().count("aggregate") == 2


def test_without_an_api_token_actions_need_only_the_csrf_token(client: FlaskClient, store: MongoStore) -> None:
    job = store.create_job(job_body(schedule="*/5 * * * *"), SEED_NOW)
    refused = client.post(f"/ui/jobs/{job.job_id}/pause")
    assert refused.status_code == 403
    assert store.get_job(job.job_id).enabled is True
    token = csrf_of(client)
    paused = client.post(f"/ui/jobs/{job.job_id}/pause", data={"csrf_token": token})
    assert paused.status_code == 303
    assert store.get_job(job.job_id).enabled is False
    cross_site = client.post(f"/ui/jobs/{job.job_id}/resume", data={"csrf_token": token},
                             headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403
    assert store.get_job(job.job_id).enabled is False


def test_with_a_token_reading_is_public_and_actions_need_a_signed_in_session(secured: FlaskClient,
                                                                            store: MongoStore) -> None:
    job = store.create_job(job_body(schedule="*/5 * * * *"), SEED_NOW)
    assert secured.get(f"/ui/jobs/{job.job_id}").status_code == 200
    token = csrf_of(secured)
    refused = secured.post(f"/ui/jobs/{job.job_id}/pause", data={"csrf_token": token})
    assert refused.status_code == 401
    assert "Sign in" in refused.get_data(as_text=True)
    assert store.get_job(job.job_id).enabled is True
    wrong = secured.post("/ui/signin", data={"csrf_token": token, "token": "guess"})
    assert wrong.status_code == 401
    right = secured.post("/ui/signin", data={"csrf_token": token, "token": TOKEN, "next": "/ui/"})
    assert right.status_code == 303
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert TOKEN not in cookie
    stale = secured.post(f"/ui/jobs/{job.job_id}/pause", data={"csrf_token": token})
    assert stale.status_code == 403  # signing in gave the session a new CSRF token
    paused = secured.post(f"/ui/jobs/{job.job_id}/pause", data={"csrf_token": csrf_of(secured)})
    assert paused.status_code == 303
    assert store.get_job(job.job_id).enabled is False


def test_a_tampered_cookie_is_an_empty_session(secured: FlaskClient, store: MongoStore) -> None:
    token = csrf_of(secured)
    secured.post("/ui/signin", data={"csrf_token": token, "token": TOKEN})
    cookie = secured.get_cookie("cronhive_ui", path="/ui")
    assert cookie is not None
    secured.set_cookie("cronhive_ui", cookie.value[:-2] + ("AA" if not cookie.value.endswith("AA") else "BB"),
                       path="/ui")
    page = secured.get("/ui/").get_data(as_text=True)
    assert "Read-only" in page and "Signed in" not in page


def test_processes_of_one_deployment_accept_each_others_sessions(settings: Settings, store: MongoStore) -> None:
    """Two apps (two gunicorn workers, or two replicas) without UI_SECRET_KEY share the
    deployment's key from MongoDB; with UI_SECRET_KEY they use it."""
    for secret in (None, "k" * 40):
        configured = settings.replace(api_token=TOKEN, ui_secret_key=secret)
        first, _ = make_app(configured)
        second, _ = make_app(configured)
        one, two = first.test_client(), second.test_client()
        token = csrf_of(one)
        signed = one.post("/ui/signin", data={"csrf_token": token, "token": TOKEN})
        assert signed.status_code == 303
        cookie = one.get_cookie("cronhive_ui", path="/ui")
        assert cookie is not None
        two.set_cookie("cronhive_ui", cookie.value, path="/ui")
        assert "Signed in" in two.get("/ui/").get_data(as_text=True)
        close_app(first)
        close_app(second)
    other, _ = make_app(settings.replace(api_token=TOKEN, ui_secret_key="z" * 40))
    stranger = other.test_client()
    stranger.set_cookie("cronhive_ui", cookie.value, path="/ui")
    assert "Read-only" in stranger.get("/ui/").get_data(as_text=True)
    close_app(other)


def test_every_dashboard_response_carries_the_security_headers(client: FlaskClient, store: MongoStore) -> None:
    for path in ("/ui/", "/ui/jobs/new", "/ui/jobs/none", "/ui/nothing/here", "/ui/static/app.js",
                 "/ui/static/vendor/chart.umd.min.js"):
        response = client.get(path)
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'"), path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["Referrer-Policy"] == "same-origin", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
    assert client.get("/ui/jobs/none").status_code == 404


def test_stored_strings_are_escaped_in_every_page(client: FlaskClient, store: MongoStore) -> None:
    attack = "<script>alert(1)</script>"
    job = store.create_job({**job_body(name=attack), "args": {"x": attack, attack: 1}}, SEED_NOW)
    store.runs.insert_one({**run_to_doc(new_run(job, "run_xss", Trigger.MANUAL, SEED_NOW, SEED_NOW, None)),
                           "error": {"type": attack, "message": attack, "traceback": attack}, "status": "failed"})
    for path in ("/ui/", f"/ui/jobs/{job.job_id}", f"/ui/jobs/{job.job_id}/edit", "/ui/runs/run_xss",
                 f"/ui/jobs/{job.job_id}/delete", f"/ui/?q={attack}"):
        page = client.get(path).get_data(as_text=True)
        assert attack not in page, path
        assert "&lt;script&gt;" in page, path


def listed_job_ids(page: str) -> list[str]:
    return re.findall(r'<td class="wrap"><a href="/ui/jobs/([^"/]+)">', page)


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return found.group(1).replace("&amp;", "&") if found else None


def test_the_jobs_table_pages_by_position_forwards_and_back(client: FlaskClient, store: MongoStore) -> None:
    ids = seed(store, 45, 0)
    first = client.get("/ui/").get_data(as_text=True)
    assert listed_job_ids(first) == ids[:20] and link(first, "prev") is None
    assert "45 in all" in first
    second_url = link(first, "next")
    assert second_url and "after=" in second_url
    second = client.get(second_url).get_data(as_text=True)
    assert listed_job_ids(second) == ids[20:40]
    third = client.get(link(second, "next") or "").get_data(as_text=True)
    assert listed_job_ids(third) == ids[40:] and link(third, "next") is None
    back = client.get(link(third, "prev") or "").get_data(as_text=True)
    assert listed_job_ids(back) == ids[20:40]
    assert listed_job_ids(client.get(link(back, "prev") or "").get_data(as_text=True)) == ids[:20]
    filtered = client.get("/ui/?handler=noop&status=active").get_data(as_text=True)
    assert "matching jobs" in filtered and "in all" not in filtered.split('class="pager"')[1]
    assert listed_job_ids(client.get("/ui/?after=garbage").get_data(as_text=True)) == ids[:20]
