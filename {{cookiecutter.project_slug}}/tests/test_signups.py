"""POST /signups records the signup and a worker sends the welcome email."""

import uuid

import pytest

from {{ cookiecutter.package_name }} import database, records

from tests.conftest import Api, Mailbox, count_rows


def new_address() -> str:
    return f"user-{uuid.uuid4().hex[:8]}@example.com"


def test_welcome_email_is_sent_by_the_worker(api: Api, mailbox: Mailbox) -> None:
    address = new_address()
    status, body = api.post_json("/signups", {"email": address, "name": "Ada <Lovelace>"})
    assert status == 202
    assert body["status"] == "queued"

    job = api.wait_for_job(body["job_id"])

    assert job["status"] == "succeeded", job
    assert job["kind"] == "welcome_email"
    assert job["attempts"] == 1
    assert job["finished_at"] is not None
    (message,) = mailbox.to(address)
    assert message["Message-ID"] == job["result"]["message_id"]
    assert "Ada <Lovelace>" in message["Subject"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert "Hello Ada <Lovelace>" in text.get_content()
    assert "Hello Ada &lt;Lovelace&gt;" in html.get_content()  # autoescaped


def test_smtp_refusing_for_a_while_is_retried_then_delivered_once(
    api: Api, mailbox: Mailbox
) -> None:
    mailbox.refuse_next = 2
    address = new_address()
    _, body = api.post_json("/signups", {"email": address, "name": "Grace"})

    job = api.wait_for_job(body["job_id"])

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 3
    assert len(mailbox.to(address)) == 1


def test_each_attempt_is_in_the_history_in_order_with_its_error(api: Api, mailbox: Mailbox) -> None:
    mailbox.refuse_next = 2
    address = new_address()
    _, body = api.post_json("/signups", {"email": address, "name": "Margaret"})

    assert api.wait_for_job(body["job_id"])["status"] == "succeeded"

    with database.session() as db:
        attempts = records.attempts_of(db, body["job_id"])
    assert [(a.number, a.outcome) for a in attempts] == [
        (1, "retrying"),
        (2, "retrying"),
        (3, "succeeded"),
    ]
    assert all("451" in (a.error or "") for a in attempts[:2])
    assert attempts[2].error is None
    assert all(a.delay is not None and a.delay > 0 for a in attempts[:2])
    assert attempts[0].ended_at <= attempts[1].started_at <= attempts[2].started_at  # type: ignore[operator]
    assert all(a.worker for a in attempts)


def test_smtp_refusing_past_the_last_attempt_fails_with_the_reason(
    api: Api, mailbox: Mailbox
) -> None:
    mailbox.refuse_next = 100
    address = new_address()
    _, body = api.post_json("/signups", {"email": address, "name": "Edsger"})

    job = api.wait_for_job(body["job_id"])

    assert job["status"] == "failed", job
    assert job["attempts"] == 4
    assert "451" in job["error"]
    assert mailbox.to(address) == []


@pytest.mark.parametrize(
    ("content", "expected_status"),
    [
        (b'{"email": "a@example.com", "name": ', 400),  # malformed JSON
        (b'{"name": "No Email"}', 422),
        (b'{"email": "not-an-address", "name": "Bad Email"}', 422),
        (b'{"email": "a@example.com", "name": ""}', 422),
        (b"[1, 2, 3]", 422),
    ],
)
def test_bad_signups_get_a_clear_error_and_store_nothing(
    api: Api, content: bytes, expected_status: int
) -> None:
    before = count_rows()

    status, body = api.post_raw("/signups", content, "application/json")

    assert status == expected_status
    assert body["error"]
    assert count_rows() == before


@pytest.mark.parametrize("job_id", ["nope", "1" * 500, "%00", str(uuid.uuid4())])
def test_unknown_or_absurd_job_ids_are_404(api: Api, job_id: str) -> None:
    status, body = api.get(f"/jobs/{job_id}")
    assert status == 404
    assert "no job" in body["error"]


def test_paths_out_of_the_api_are_404_json(api: Api) -> None:
    status, body = api.get("/jobs/..%2F..%2Fetc%2Fpasswd")
    assert status == 404
    assert body["error"]
