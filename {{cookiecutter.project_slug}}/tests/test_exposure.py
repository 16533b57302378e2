"""What anyone may read names no internals; `/metrics` is for its token's bearer, and cheap."""

import json
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from {{ cookiecutter.package_name }} import stats
from {{ cookiecutter.package_name }}.settings import Settings

from tests import workers
from tests.conftest import TEST_ENV, Api, served
from tests.processes import web_process
from tests.receiver import Receiver
from tests.test_dashboard import AUTH, SCRAPER, send
from tests.test_webhooks import sign_up

{% if cookiecutter.database == "postgresql" -%}
CLOSED_DATABASE = "postgresql://exposed_user:exposed_secret@127.0.0.1:9/exposed_db"
{% else -%}
CLOSED_DATABASE = "sqlite:////exposed-missing-directory/exposed.db"
{% endif -%}
# Words that would tell an outsider how the app is built or where its services are.
INTERNALS = ["127.0.0.1", "exposed", "Error", "refused", "Traceback", "sqlite"]
INTERNALS += ["psycopg", "redis", "amqp", "sqs", "guest", "Errno"]


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def assert_tells_nothing_internal(text: str, url: str) -> None:
    words = [*INTERNALS, *filter(None, [urlsplit(url).username, urlsplit(url).password])]
    assert not [word for word in words if word in text], text


@pytest.fixture(scope="module")
def job_id(api: Api) -> str:
    _, body = api.post_json("/signups", {"email": "outage@example.com", "name": "O"})
    return str(body["job_id"])


@pytest.mark.parametrize("down", ["broker", "database"])
def test_during_an_outage_public_answers_name_no_internals(job_id: str, down: str) -> None:
    url = workers.UNREACHABLE_BROKER_URL if down == "broker" else CLOSED_DATABASE
    setting = "BROKER_URL" if down == "broker" else "DATABASE_URL"
    with web_process(**{setting: url}) as base:
        status, health = fetch(f"{base}/health")
        job_status, job = fetch(f"{base}/jobs/{job_id}")

    assert status == 503
    up = "database" if down == "broker" else "broker"
    checks = {down: "unavailable", up: "ok"}
    assert json.loads(health) == {"status": "unavailable", "checks": checks}
    assert_tells_nothing_internal(health, url)
    assert job_status == (200 if down == "broker" else 503), job
    assert_tells_nothing_internal(job, url)


def test_a_partners_answer_is_on_the_dashboard_not_in_the_public_job(
    api: Api, receiver: Receiver
) -> None:
    detail = f"partner-internal-{uuid.uuid4().hex[:8]}"
    receiver.answers = [(400, {}, json.dumps({"error": detail}).encode())]
    _, webhook_job_id = sign_up(api)

    job = api.wait_for_job(webhook_job_id)

    assert job["status"] == "failed", job
    assert "400" in job["error"]
    assert detail not in json.dumps(job)
    assert detail in send(api, "GET", f"/dashboard/jobs/{webhook_job_id}", auth=AUTH).text


def test_metrics_answer_only_the_bearer_of_the_token(api: Api) -> None:
    token = TEST_ENV["METRICS_TOKEN"]
    for refused in ["", "Bearer wrong", f"Basic {token}", token, f"Bearer {token}x"]:
        response = send(api, "GET", "/metrics", auth=None, headers={"Authorization": refused})
        assert response.status_code == 401, refused
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "jobs" not in response.text
    assert send(api, "GET", "/metrics", auth=AUTH).status_code == 401  # not the dashboard's
    assert send(api, "GET", "/metrics", auth=None, headers=SCRAPER).status_code == 200

    with served(Settings(metrics_token=SecretStr(""))) as closed:
        assert send(closed, "GET", "/metrics", auth=None, headers=SCRAPER).status_code == 404


def test_scrapes_within_the_interval_read_the_figures_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = []
    counts = stats.counts

    def counted(db: Any) -> dict[tuple[str, str], int]:
        reads.append(1)
        return counts(db)

    monkeypatch.setattr(stats, "counts", counted)
    with served(Settings(metrics_cache_seconds=60)) as cached:
        pages = [send(cached, "GET", "/metrics", auth=None, headers=SCRAPER) for _ in range(5)]
    assert len(reads) == 1
    assert len({page.text for page in pages}) == 1

    with served(Settings(metrics_cache_seconds=0)) as uncached:
        for _ in range(2):
            send(uncached, "GET", "/metrics", auth=None, headers=SCRAPER)
    assert len(reads) == 3
