"""The jobs dashboard, POST /jobs/{id}/retry and GET /metrics, against what the tests did."""

import base64
import json
import time
import uuid
from datetime import datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from {{ cookiecutter.package_name }} import client as queue
from {{ cookiecutter.package_name }}.settings import Settings

from tests import workers
from tests.conftest import TEST_ENV, Api, Mailbox, served

AUTH = (TEST_ENV["DASHBOARD_USERNAME"], TEST_ENV["DASHBOARD_PASSWORD"])
SCRAPER = {"Authorization": f"Bearer {TEST_ENV['METRICS_TOKEN']}"}
PERMANENT_REFUSAL = "550 5.1.1 Mailbox unavailable"


def send(
    api: Api,
    method: str,
    path: str,
    auth: tuple[str, str] | None = AUTH,
    headers: dict[str, str] | None = None,
) -> Any:
    """A request to the app with the dashboard's credentials (or others); the raw response."""
{%- if cookiecutter.web_framework == "fastapi" %}
    return api.client.request(method, path, auth=auth, headers=headers, follow_redirects=False)
{%- else %}
    return api.client.open(path, method=method, auth=auth, headers=headers)
{%- endif %}


class Figures(HTMLParser):
    """What a dashboard page shows, read from its `data-*` attributes."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.counts: dict[tuple[str, str], int] = {}
        self.depths: dict[str, int] = {}
        self.last_finished: dict[str, str] = {}
        self.jobs: list[str] = []
        self._cell: tuple[str, ...] | None = None
        self._text = ""
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        data = {name: value or "" for name, value in attrs if name.startswith("data-")}
        if tag == "tr" and "data-job" in data:
            self.jobs.append(data["data-job"])
        elif tag == "td" and data:
            self._cell, self._text = tuple(data.values()), ""

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag != "td" or self._cell is None:
            return
        text, cell = " ".join(self._text.split()), self._cell
        if len(cell) == 2:
            self.counts[(cell[0], cell[1])] = int(text)
        elif cell[0] in queue.QUEUES:
            self.depths[cell[0]] = int(text)
        else:
            self.last_finished[cell[0]] = text
        self._cell = None


def dashboard(api: Api, query: str = "") -> Figures:
    response = send(api, "GET", f"/dashboard{query}")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/html")
    return Figures(response.text)


def metrics(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, by name and labels."""
    response = send(api, "GET", "/metrics", auth=None, headers=SCRAPER)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def signup(api: Api) -> tuple[str, str]:
    address = f"dash-{uuid.uuid4().hex[:8]}@example.com"
    status, body = api.post_json("/signups", {"email": address, "name": "Dash"})
    assert status == 202, body
    return body["job_id"], address


def failed_signup(api: Api, mailbox: Mailbox) -> tuple[str, str]:
    """A welcome email that failed for good: the SMTP server refused it permanently."""
    mailbox.refusal, mailbox.refuse_next = PERMANENT_REFUSAL, 1
    job_id, address = signup(api)
    job = api.wait_for_job(job_id)
    assert job["status"] == "failed", job
    assert "550" in job["error"]
    return job_id, address


def test_without_credentials_there_is_no_dashboard(worker: workers.ThreadWorker) -> None:
    closed = Settings(dashboard_username="", dashboard_password=SecretStr(""))
    with served(closed) as api:
        for method, path in [
            ("GET", "/dashboard"),
            ("GET", f"/dashboard/jobs/{uuid.uuid4()}"),
            ("POST", f"/jobs/{uuid.uuid4()}/retry"),
            ("POST", f"/dashboard/jobs/{uuid.uuid4()}/retry"),
        ]:
            response = send(api, method, path)
            assert response.status_code == 404, (method, path)
            assert "WWW-Authenticate" not in response.headers
        assert send(api, "GET", "/metrics", auth=None, headers=SCRAPER).status_code == 200


def test_half_configured_credentials_are_refused() -> None:
    with pytest.raises(ValueError, match="DASHBOARD_PASSWORD"):
        Settings(dashboard_username="operator", dashboard_password=SecretStr(""))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(f"{AUTH[0]}:wrong".encode()).decode(),
        "Basic " + base64.b64encode(f"wrong:{AUTH[1]}".encode()).decode(),
        "Basic " + base64.b64encode(AUTH[0].encode()).decode(),
        "Basic not base64!",
        "Bearer " + AUTH[1],
    ],
)
def test_wrong_credentials_get_401(api: Api, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else None
    for method, path in [
        ("GET", "/dashboard"),
        ("GET", f"/dashboard/jobs/{uuid.uuid4()}"),
        ("POST", f"/jobs/{uuid.uuid4()}/retry"),
    ]:
        response = send(api, method, path, auth=None, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_the_dashboard_shows_what_the_api_did(api: Api, mailbox: Mailbox) -> None:
    before = dashboard(api)
    failed_id, _ = failed_signup(api, mailbox)
    succeeded = [signup(api)[0] for _ in range(2)]
    for job_id in succeeded:
        assert api.wait_for_job(job_id)["status"] == "succeeded"

    after = dashboard(api)
    changed = {key: after.counts[key] - before.counts[key] for key in after.counts}
    assert {key: n for key, n in changed.items() if n} == {
        ("welcome_email", "failed"): 1,
        ("welcome_email", "succeeded"): 2,
        ("welcome_email", "all"): 3,
    }
    assert set(after.depths) == set(queue.QUEUES)
    assert after.last_finished["welcome_email"].endswith("ago)")
    assert after.jobs[:3] == [*reversed(succeeded), failed_id]

    failed = dashboard(api, "?kind=welcome_email&status=failed")
    assert failed_id in failed.jobs
    assert not set(succeeded) & set(failed.jobs)
    assert set(succeeded) <= set(dashboard(api, "?status=succeeded").jobs)
    assert dashboard(api, "?kind=process_file").jobs.count(failed_id) == 0
    response = send(api, "GET", "/dashboard?status=lost")
    assert response.status_code == 400
    assert "unknown status" in response.text

    response = send(api, "GET", f"/dashboard/jobs/{failed_id}")
    assert response.status_code == 200
    assert "SMTP 550: 5.1.1 Mailbox unavailable" in response.text
    assert f'action="/dashboard/jobs/{failed_id}/retry"' in response.text
    assert response.headers["X-Frame-Options"] == "DENY"
    response = send(api, "GET", f"/dashboard/jobs/{succeeded[0]}")
    assert response.status_code == 200
    assert "/retry" not in response.text
    assert send(api, "GET", f"/dashboard/jobs/{uuid.uuid4()}").status_code == 404


def test_retry_runs_a_failed_job_again(api: Api, mailbox: Mailbox) -> None:
    job_id, address = failed_signup(api, mailbox)

    response = send(api, "POST", f"/jobs/{job_id}/retry")

    assert response.status_code == 202, response.text
    assert json.loads(response.text)["status"] == "queued"
    job = api.wait_for_job(job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1  # a retry counts its attempts afresh
    assert len(mailbox.to(address)) == 1

    response = send(api, "POST", f"/jobs/{job_id}/retry")
    assert response.status_code == 409
    assert "succeeded" in json.loads(response.text)["error"]
    for unknown in (str(uuid.uuid4()), "nope"):
        assert send(api, "POST", f"/jobs/{unknown}/retry").status_code == 404


def test_the_retry_button_refuses_other_sites(api: Api, mailbox: Mailbox) -> None:
    job_id, _ = failed_signup(api, mailbox)
    path = f"/dashboard/jobs/{job_id}/retry"

    for forged in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://elsewhere.example"}):
        response = send(api, "POST", path, headers=forged)
        assert response.status_code == 403, forged
    assert api.get(f"/jobs/{job_id}")[1]["status"] == "failed"

    response = send(api, "POST", path, headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/dashboard/jobs/{job_id}")
    assert api.wait_for_job(job_id)["status"] == "succeeded"


def test_metrics_match_what_the_api_did(api: Api, mailbox: Mailbox) -> None:
    before = metrics(api)
    failed_signup(api, mailbox)
    job_id, _ = signup(api)
    finished = api.wait_for_job(job_id)

    after = metrics(api)
    email = (("kind", "welcome_email"),)

    def change(name: str, labels: tuple[tuple[str, str], ...] = email) -> float:
        return after[(name, labels)] - before.get((name, labels), 0)

    jobs = {key: value for key, value in after.items() if key[0] == "jobs"}
    assert {key: value - before[key] for key, value in jobs.items() if value != before[key]} == {
        ("jobs", (("kind", "welcome_email"), ("status", "failed"))): 1,
        ("jobs", (("kind", "welcome_email"), ("status", "succeeded"))): 1,
    }
    counts = dashboard(api).counts
    assert all(counts[(k, s)] == value for (_, ((_, k), (_, s))), value in jobs.items())
    assert change("jobs_duration_seconds_count") == 2
    assert change("jobs_duration_seconds_sum") > 0
    assert 0 < after[("jobs_duration_seconds", (*email, ("quantile", "0.5")))] < 60
    finished_at = after[("jobs_last_finished_timestamp_seconds", email)]
    assert abs(finished_at - datetime.fromisoformat(finished["finished_at"]).timestamp()) < 0.01
    assert after[("jobs_oldest_queued_age_seconds", email)] == 0
    for name in queue.QUEUES:
        assert ("jobs_queue_depth", (("queue", name),)) in after

    openmetrics = "application/openmetrics-text; version=1.0.0"
    response = send(api, "GET", "/metrics", auth=None, headers={"Accept": openmetrics, **SCRAPER})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_queue_depth_and_age_of_waiting_jobs(api: Api, worker: workers.ThreadWorker) -> None:
    depth = ("jobs_queue_depth", (("queue", queue.QUEUE),))
    age = ("jobs_oldest_queued_age_seconds", (("kind", "welcome_email"),))
    worker.stop()  # nobody takes the jobs from the queue for a moment
    try:
        before = metrics(api)[depth]
        waiting = [signup(api)[0] for _ in range(2)]
        # A receive the worker left pending may hold a message until its visibility timeout.
        deadline = time.monotonic() + 15
        while (after := metrics(api))[depth] != before + 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        shown = dashboard(api).depths[queue.QUEUE]
    finally:
        worker.start()

    assert after[depth] == shown == before + 2
    assert after[age] > 0
    for job_id in waiting:
        assert api.wait_for_job(job_id)["status"] == "succeeded"
