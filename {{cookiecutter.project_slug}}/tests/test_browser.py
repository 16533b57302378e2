"""The dashboard in a real headless Chromium, served by the Procfile's web process.

Runs where Chromium and its driver are installed (Debian: `apt install chromium chromium-driver`;
or set CHROMIUM and CHROMEDRIVER) and, like the web process, a real broker is given.
"""

import os
import shutil
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from tests import workers
from tests.conftest import TEST_ENV, Api, Mailbox
from tests.processes import web_process
from tests.test_reliability import post_json

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
AUTH = (TEST_ENV["DASHBOARD_USERNAME"], TEST_ENV["DASHBOARD_PASSWORD"])

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver"),
    pytest.mark.skipif(not workers.CROSS_PROCESS, reason="needs TEST_BROKER_URL"),
]


@pytest.fixture
def web(worker: workers.ThreadWorker) -> Iterator[str]:
    """The web process; the test's worker thread runs its jobs."""
    with web_process() as base:
        yield base


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM
    assert CHROMEDRIVER
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=412,915")  # a phone's screen
    # Given the driver's path, Selenium never downloads one.
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def signed_in(url: str) -> str:
    """The URL with the dashboard's credentials, as a person would type them at the prompt."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{AUTH[0]}:{AUTH[1]}@{parts.netloc}".replace(" ", "%20")).geturl()


def counts(browser: WebDriver) -> dict[tuple[str, str], int]:
    cells = browser.find_elements(By.CSS_SELECTOR, "#counts td[data-kind]")
    return {
        (cell.get_attribute("data-kind") or "", cell.get_attribute("data-status") or ""): int(
            cell.text
        )
        for cell in cells
    }


def test_the_dashboard_in_a_browser(
    web: str, browser: WebDriver, api: Api, mailbox: Mailbox
) -> None:
    browser.get(signed_in(f"{web}/dashboard"))
    assert browser.title.startswith("Jobs")
    before = counts(browser)

    mailbox.refusal, mailbox.refuse_next = "550 5.1.1 Mailbox unavailable", 1
    address = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    status, body = post_json(f"{web}/signups", {"email": address, "name": "Chromium"})
    assert status == 202, body
    assert api.wait_for_job(body["job_id"])["status"] == "failed"
    status, other = post_json(f"{web}/signups", {"email": f"x-{address}", "name": "Other"})
    assert status == 202, other
    assert api.wait_for_job(other["job_id"])["status"] == "succeeded"

    browser.refresh()
    after = counts(browser)
    changed = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert changed == {
        ("welcome_email", "failed"): 1,
        ("welcome_email", "succeeded"): 1,
        ("welcome_email", "all"): 2,
    }

    browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{body["job_id"]}"] a').click()
    assert browser.find_element(By.ID, "status").text == "failed"
    assert "5.1.1 Mailbox unavailable" in browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "retry").click()

    # The job's page refreshes itself until the job has finished: an element read during a
    # refresh may be gone or stale, which only means "not yet".
    reloading = (NoSuchElementException, StaleElementReferenceException)
    WebDriverWait(browser, 30, ignored_exceptions=reloading).until(
        lambda driver: driver.find_element(By.ID, "status").text == "succeeded"
    )
    assert browser.find_element(By.ID, "attempts").text == "1"
    assert len(mailbox.to(address)) == 1

    # The timeline keeps both runs: the refused one, with the server's answer, and the retry.
    timeline = browser.find_elements(By.CSS_SELECTOR, "#timeline li")
    outcomes = [item.get_attribute("data-outcome") for item in timeline]
    assert outcomes == ["failed", "succeeded"], outcomes
    assert "5.1.1 Mailbox unavailable" in timeline[0].text

    # The chart of the last hour shows a job that failed, and those that succeeded.
    mailbox.refusal, mailbox.refuse_next = "550 5.1.1 Mailbox unavailable", 1
    status, body = post_json(f"{web}/signups", {"email": f"y-{address}", "name": "Failed"})
    assert status == 202, body
    assert api.wait_for_job(body["job_id"])["status"] == "failed"
    browser.get(signed_in(f"{web}/dashboard"))
    bars = browser.find_elements(By.CSS_SELECTOR, '#charts figure[data-kind="welcome_email"] g')
    failed = sum(int(bar.get_attribute("data-failed") or 0) for bar in bars)
    succeeded = sum(int(bar.get_attribute("data-succeeded") or 0) for bar in bars)
    assert failed >= 1, [bar.get_attribute("outerHTML") for bar in bars]
    assert succeeded >= 2


def test_a_job_cancelled_from_its_page_never_runs(
    web: str, browser: WebDriver, api: Api, mailbox: Mailbox, worker: workers.ThreadWorker
) -> None:
    address = f"cancel-{uuid.uuid4().hex[:8]}@example.com"
    worker.stop()  # nobody takes the job from the queue for a moment
    try:
        status, body = post_json(f"{web}/signups", {"email": address, "name": "Cancelled"})
        assert status == 202, body
        browser.get(signed_in(f"{web}/dashboard/jobs/{body['job_id']}"))
        assert browser.find_element(By.ID, "status").text == "queued"
        browser.find_element(By.ID, "cancel").click()
        reloading = (NoSuchElementException, StaleElementReferenceException)
        WebDriverWait(browser, 30, ignored_exceptions=reloading).until(
            lambda driver: driver.find_element(By.ID, "status").text == "cancelled"
        )
        assert browser.find_elements(By.ID, "cancel") == []
    finally:
        worker.start()
    other = f"after-{address}"
    status, body = post_json(f"{web}/signups", {"email": other, "name": "After"})
    assert api.wait_for_job(body["job_id"])["status"] == "succeeded"  # the worker runs again
    assert mailbox.to(address) == []
