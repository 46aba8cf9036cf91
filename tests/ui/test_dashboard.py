"""The dashboard, used as an operator would: in Chromium, against the real API, scheduler
and worker processes. Screenshots of each page are saved under tests/artifacts/."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from tests.services import wait_for
from tests.ui.conftest import Stack, screenshot, sign_in


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def mark_page(page: Page) -> None:
    """A value that lives only as long as this document: a reload or navigation loses it."""
    page.evaluate("window.__sameDocument = 'yes'")


def same_document(page: Page) -> bool:
    return page.evaluate("window.__sameDocument") == "yes"


def test_the_overview_shows_the_leader_a_live_worker_and_the_jobs(signed_in: Page, stack: Stack) -> None:
    page = signed_in
    job = stack.create_job(name=unique("Overview job"), schedule="*/10 * * * *", timezone="Europe/Berlin")
    page.goto(f"{stack.url}/ui/?q={job['job_id']}")
    tiles = page.locator('[data-live-part="tiles"]')
    expect(tiles).to_contain_text("Scheduler leader")
    # the scheduler takes the lease and the worker beats within seconds; the live region shows both
    expect(tiles.locator(".tile").nth(0)).to_contain_text("term", timeout=30_000)
    expect(page.locator("#workers li .dot.ok")).to_have_count(1, timeout=30_000)
    status, workers = stack.api("GET", "/workers")
    assert status == 200 and len(workers["data"]) == 1
    expect(page.locator("#workers")).to_contain_text(workers["data"][0]["worker"])
    row = page.locator(f'#jobs-table tr[data-job-id="{job["job_id"]}"]')
    expect(row).to_contain_text("Every 10 minutes")
    expect(row).to_contain_text("Europe/Berlin")
    expect(page.locator('canvas[data-chart="activity"]')).to_be_visible()
    assert page.console.errors() == []  # type: ignore[attr-defined]
    screenshot(page, "overview")


def test_create_a_job_through_the_form_with_the_apis_422_shown_inline(signed_in: Page, stack: Stack) -> None:
    page = signed_in
    name = unique("Nightly export")
    page.goto(f"{stack.url}/ui/jobs/new")
    page.fill("#f-name", name)
    page.fill("#f-schedule", "0 0 31 2 *")  # never fires: the API refuses it
    page.fill("#f-timezone", "Mars/Olympus")
    page.fill("#f-retries", "many")
    page.fill("#f-args", '{"target": "s3://bucket"}')
    page.click("#save")
    expect(page.locator("#form-errors")).to_contain_text("422")
    expect(page.locator('[data-error-for="schedule"]')).to_contain_text("never fires")
    expect(page.locator('[data-error-for="timezone"]')).to_be_visible()
    expect(page.locator('[data-error-for="max_retries"]')).to_contain_text("Not a valid integer")
    expect(page.locator("#f-name")).to_have_value(name)  # nothing typed is lost
    expect(page.locator("#f-args")).to_have_value('{"target": "s3://bucket"}')
    screenshot(page, "form-422")
    assert stack.api("GET", "/jobs?limit=100")[1]["pagination"]["total"] >= 0
    assert all(job["name"] != name for job in stack.api("GET", "/jobs?limit=100")[1]["data"])

    page.fill("#f-schedule", "15 4 * * mon-fri")
    page.fill("#f-timezone", "Europe/Berlin")
    page.fill("#f-retries", "2")
    expect(page.locator("[data-preview-description]")).to_contain_text("04:15", timeout=10_000)
    page.click("#save")
    expect(page.locator("#job-name")).to_have_text(name)
    expect(page.locator(".flash.ok")).to_contain_text("created")
    job_id = page.url.rstrip("/").rsplit("/", 1)[1]
    status, job = stack.api("GET", f"/jobs/{job_id}")
    assert status == 200
    assert (job["schedule"], job["timezone"], job["max_retries"], job["args"]) == (
        "15 4 * * mon-fri", "Europe/Berlin", 2, {"target": "s3://bucket"})

    page.goto(f"{stack.url}/ui/?q={name}")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
    expect(page.locator(f'#jobs-table tr[data-job-id="{job_id}"]')).to_contain_text("04:15, Monday through Friday")


def test_trigger_and_watch_the_run_succeed_on_the_job_page_without_reloading(signed_in: Page, stack: Stack) -> None:
    page = signed_in
    job = stack.create_job(name=unique("Triggered"), handler="sleep", args={"seconds": 3})
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
    page.click("#trigger")
    expect(page.locator(".flash.ok")).to_contain_text("queued")
    row = page.locator("#runs-table tbody tr[data-run-id]").first
    expect(row).to_be_visible()
    first_status = row.locator(".run-status").inner_text()
    assert first_status in ("pending", "queued", "running"), first_status
    mark_page(page)
    expect(row.locator(".run-status")).to_have_text("succeeded", timeout=45_000)
    assert same_document(page), "the page was reloaded"
    assert int(page.evaluate("document.body.getAttribute('data-live-updates')") or 0) >= 1
    expect(page.locator("#last-run-status")).to_contain_text("succeeded")
    expect(page.locator("#slot-strip a.ok")).to_have_count(1)
    screenshot(page, "job")

    run_id = row.get_attribute("data-run-id")
    page.click(f'a[href="/ui/runs/{run_id}"] >> nth=0')
    expect(page.locator("#run-id")).to_have_text(str(run_id))
    expect(page.locator("#run-status")).to_contain_text("succeeded")
    expect(page.locator("#attempts tbody tr")).to_have_count(1)
    expect(page.locator("#attempts")).to_contain_text(stack.api("GET", f"/runs/{run_id}")[1]["worker"])
    screenshot(page, "run")


def test_pause_and_resume(signed_in: Page, stack: Stack) -> None:
    page = signed_in
    job = stack.create_job(name=unique("Pausable"), schedule="*/5 * * * *")
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
    page.click("#pause")
    expect(page.locator("#job-status")).to_contain_text("disabled")
    assert stack.api("GET", f"/jobs/{job['job_id']}")[1]["enabled"] is False
    page.click("#resume")
    expect(page.locator("#job-status")).to_contain_text("active")
    expect(page.locator(".flash.ok")).to_contain_text("resumed")
    assert stack.api("GET", f"/jobs/{job['job_id']}")[1]["enabled"] is True


def test_edit_the_schedule_and_watch_the_preview_change(signed_in: Page, stack: Stack) -> None:
    page = signed_in
    job = stack.create_job(name=unique("Editable"), schedule="30 2 * * *", timezone="Europe/Berlin")
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}/edit")
    description = page.locator("[data-preview-description]")
    expect(description).to_contain_text("02:30")
    first_fire = page.locator("#preview table.fires tbody tr:not(.transition) td.mono").first.inner_text()
    page.fill("#f-schedule", "0 */6 * * * *")  # six fields, seconds first: second 0 of every 6th minute
    expect(description).not_to_contain_text("02:30", timeout=10_000)
    expect(description).to_contain_text(re.compile("every 6 minutes", re.IGNORECASE))
    assert page.locator("#preview table.fires tbody tr:not(.transition) td.mono").first.inner_text() != first_fire
    page.fill("#f-schedule", "not a schedule")
    expect(page.locator("[data-preview-errors]")).to_contain_text("schedule")
    page.fill("#f-schedule", "0 9 * * *")
    page.fill("#f-timezone", "America/New_York")
    expect(description).to_contain_text("09:00")
    screenshot(page, "edit-preview")
    page.click("#save")
    expect(page.locator(".flash.ok")).to_contain_text("saved")
    expect(page.locator(".describe")).to_contain_text("09:00")
    saved = stack.api("GET", f"/jobs/{job['job_id']}")[1]
    assert (saved["schedule"], saved["timezone"]) == ("0 9 * * *", "America/New_York")


def test_the_next_fires_mark_the_dst_transition(page: Page, stack: Stack) -> None:
    job = stack.create_job(name=unique("Hourly Berlin"), schedule="0 */7 * * *", timezone="Europe/Berlin")
    status, preview = stack.api("POST", "/schedules/preview", {"schedule": "0 */7 * * *", "timezone": "Europe/Berlin",
                                                               "after": "2026-03-28T00:00:00Z", "count": 10})
    assert status == 200
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
    expect(page.locator("table.fires tbody tr:not(.transition)")).to_have_count(10)
    # the preview fragment, asked for the same window as the API's preview, shows the same instants
    page.goto(f"{stack.url}/ui/preview?schedule=0+*/7+*+*+*&timezone=Europe/Berlin&after=2026-03-28T00:00:00Z")
    utc_cells = page.locator("table.fires tbody tr:not(.transition) td:nth-child(4)").all_inner_texts()
    shown = [re.sub(r"^\w+ (\S+) (\S+) UTC$", r"\1T\2Z", cell) for cell in utc_cells]
    assert shown == preview["fires"]
    expect(page.locator("tr.transition")).to_contain_text("CET → CEST (UTC+01:00 → UTC+02:00)")


def test_delete_asks_for_confirmation(signed_in: Page, stack: Stack) -> None:
    page = signed_in
    job = stack.create_job(name=unique("Doomed"))
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
    page.click("#delete")
    expect(page.locator("h2")).to_contain_text("Delete")
    assert stack.api("GET", f"/jobs/{job['job_id']}")[0] == 200  # not yet
    page.click("#confirm-delete")
    expect(page.locator(".flash.ok")).to_contain_text("deleted")
    assert stack.api("GET", f"/jobs/{job['job_id']}")[0] == 404
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
    expect(page.locator("#error-title")).to_have_text("No such job")


def test_stored_strings_are_rendered_inert(signed_in: Page, stack: Stack) -> None:
    page = signed_in
    attack = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    job = stack.create_job(name=f"{attack} {unique('x')}", args={"html": "</pre><script>window.__xss = 3</script>",
                                                                  "<b>key</b>": "<svg onload=window.__xss=4>"})
    run_id = stack.api("POST", f"/jobs/{job['job_id']}/trigger")[1]["run_id"]
    for path in (f"/ui/?q={job['job_id']}", f"/ui/jobs/{job['job_id']}", f"/ui/jobs/{job['job_id']}/edit",
                 f"/ui/jobs/{job['job_id']}/delete", f"/ui/runs/{run_id}"):
        page.goto(f"{stack.url}{path}")
        page.wait_for_timeout(300)
        assert page.evaluate("window.__xss") is None, path
        assert page.locator("script:not([src]):not([type='application/json'])").count() == 0, path
        assert page.locator("img[src='x']").count() == 0, path
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
    expect(page.locator("#job-name")).to_contain_text("<script>window.__xss = 1</script>")
    expect(page.locator("#job-args")).to_contain_text("</pre><script>window.__xss = 3</script>")
    screenshot(page, "xss-inert")


def test_actions_are_refused_without_a_session_when_a_token_is_configured(page: Page, stack: Stack) -> None:
    job = stack.create_job(name=unique("Guarded"), schedule="0 0 1 1 *")  # never due while it runs: no run may appear
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
    expect(page.locator(".notice")).to_contain_text("Sign in")  # reading is public
    with page.expect_response(lambda r: r.url.endswith("/trigger")) as answer:
        page.click("#trigger")
    assert answer.value.status == 401
    expect(page.locator("#signin-refused")).to_contain_text("Sign in")
    expect(page.locator('input[name="next"]')).to_have_value(f"/ui/jobs/{job['job_id']}")  # back where it was
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
    with page.expect_response(lambda r: r.url.endswith("/pause")) as answer:
        page.click("#pause")
    assert answer.value.status == 401
    page.goto(f"{stack.url}/ui/jobs/{job['job_id']}/delete")
    with page.expect_response(lambda r: r.url.endswith("/delete") and r.request.method == "POST") as answer:
        page.click("#confirm-delete")
    assert answer.value.status == 401
    status, still = stack.api("GET", f"/jobs/{job['job_id']}")
    assert status == 200 and still["enabled"] is True
    assert stack.api("GET", f"/jobs/{job['job_id']}/runs")[1]["pagination"]["total"] == 0

    # a wrong token does not sign in; a form without its CSRF token is refused even signed in
    page.goto(f"{stack.url}/ui/signin")
    page.fill("#f-token", "not-the-token")
    page.click("#signin")
    expect(page.locator("#signin-refused")).to_contain_text("not the API token")
    sign_in(page, stack)
    forged = page.request.post(f"{stack.url}/ui/jobs/{job['job_id']}/pause", form={"csrf_token": "forged"})
    assert forged.status == 403
    assert stack.api("GET", f"/jobs/{job['job_id']}")[1]["enabled"] is True
    screenshot(page, "signed-in")


def test_pages_send_the_security_headers(page: Page, stack: Stack) -> None:
    response = page.goto(f"{stack.url}/ui/")
    assert response is not None
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    # every asset comes from this origin
    loaded: list[str] = []
    page.on("request", lambda request: loaded.append(request.url))
    page.reload()
    page.wait_for_load_state("networkidle")
    assert loaded and all(url.startswith(stack.url) for url in loaded), loaded


def test_unknown_pages_are_clear_404s(page: Page, stack: Stack) -> None:
    response = page.goto(f"{stack.url}/ui/jobs/no_such_job")
    assert response is not None and response.status == 404
    expect(page.locator("#error-title")).to_have_text("No such job")
    screenshot(page, "not-found")
    response = page.goto(f"{stack.url}/ui/runs/run_20260101_000000_nope")
    assert response is not None and response.status == 404
    expect(page.locator("#error-title")).to_have_text("No such run")


def test_the_session_cookie_is_httponly_and_samesite_strict(signed_in: Page, stack: Stack) -> None:
    cookies = [c for c in signed_in.context.cookies() if c["name"] == "cronhive_ui"]
    assert len(cookies) == 1
    assert cookies[0]["httpOnly"] is True and cookies[0]["sameSite"] == "Strict" and cookies[0]["path"] == "/ui"
    assert stack.token not in cookies[0]["value"]
    # both gunicorn workers accept it: every action below lands on either one
    job = stack.create_job(name=unique("Two workers"), schedule="*/5 * * * *")
    for _ in range(3):
        signed_in.goto(f"{stack.url}/ui/jobs/{job['job_id']}")
        signed_in.click("#pause")
        expect(signed_in.locator("#job-status")).to_contain_text("disabled")
        signed_in.click("#resume")
        expect(signed_in.locator("#job-status")).to_contain_text("active")
    wait_for(lambda: stack.api("GET", f"/jobs/{job['job_id']}")[1]["enabled"], 5, "the job enabled")
