"""An `Idempotency-Key` on POST /signups and POST /files: a repeat gets the first answer and
changes nothing; the key with another request is refused."""

import hashlib
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from {{ cookiecutter.package_name }} import database
from {{ cookiecutter.package_name }}.database import utcnow
from {{ cookiecutter.package_name }}.models import IdempotencyKey

from tests import workers
from tests.conftest import Api, Mailbox, count_rows, stored_files


def new_signup() -> dict[str, str]:
    return {"email": f"once-{uuid.uuid4().hex[:8]}@example.com", "name": "Once"}


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


def test_the_same_key_twice_answers_the_same_and_sends_one_email(
    api: Api, mailbox: Mailbox
) -> None:
    key, body = str(uuid.uuid4()), new_signup()
    before = count_rows()

    first = api.post_json("/signups", body, headers=keyed(key))
    assert first[0] == 202, first
    assert api.wait_for_job(first[1]["job_id"])["status"] == "succeeded"
    again = api.post_json("/signups", body, headers=keyed(f'"{key}"'))  # as a structured field

    assert again == first
    assert count_rows() == {"jobs": before["jobs"] + 1, "signups": before["signups"] + 1}
    assert len(mailbox.to(body["email"])) == 1


def test_the_same_key_from_two_threads_at_once_makes_one_job(api: Api, mailbox: Mailbox) -> None:
    key, body = str(uuid.uuid4()), new_signup()
    before = count_rows()
    start = threading.Barrier(2)

    def post(_: int) -> tuple[int, Any]:
        start.wait()
        return api.post_json("/signups", body, headers=keyed(key))

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(post, range(2)))

    accepted = [answer for status, answer in answers if status == 202]
    assert accepted, answers
    assert all(answer == accepted[0] for answer in accepted)  # the same answer, or:
    assert all(status == 409 for status, _ in answers if status != 202), answers
    assert api.wait_for_job(accepted[0]["job_id"])["status"] == "succeeded"
    assert count_rows() == {"jobs": before["jobs"] + 1, "signups": before["signups"] + 1}
    assert len(mailbox.to(body["email"])) == 1


def test_the_same_key_with_another_request_is_422(api: Api) -> None:
    key = str(uuid.uuid4())
    status, first = api.post_json("/signups", new_signup(), headers=keyed(key))
    assert status == 202, first
    before = count_rows()

    status, answer = api.post_json("/signups", new_signup(), headers=keyed(key))

    assert status == 422, answer
    assert "another request" in answer["error"]
    assert count_rows() == before
    # The key is per route: the same one on POST /files is another key.
    status, answer = api.upload("/files", "file", "a.csv", b"a\n1\n", "text/csv", keyed(key))
    assert status == 202, answer
    assert api.wait_for_job(answer["job_id"])["status"] == "succeeded"


@pytest.mark.parametrize("key", ["", '""', "k" * 256, "tab\tin"])
def test_a_malformed_key_is_400_and_changes_nothing(api: Api, key: str) -> None:
    before, files = count_rows(), stored_files()
    status, answer = api.post_json("/signups", new_signup(), headers=keyed(key))
    assert status == 400, answer
    assert "Idempotency-Key" in answer["error"]
    status, answer = api.upload("/files", "file", "a.csv", b"a\n1\n", "text/csv", keyed(key))
    assert status == 400, answer
    assert count_rows() == before
    assert stored_files() == files


def test_a_file_sent_twice_is_stored_once(api: Api) -> None:
    key, content = str(uuid.uuid4()), b"id,name\n1,Ada\n"
    before, files = count_rows(), stored_files()

    first = api.upload("/files", "file", "people.csv", content, "text/csv", keyed(key))
    assert first[0] == 202, first
    again = api.upload("/files", "file", "people.csv", content, "text/csv", keyed(key))
    other = api.upload(
        "/files", "file", "people.csv", content + b"2,Grace\n", "text/csv", keyed(key)
    )

    assert again == first
    assert other[0] == 422, other
    job = api.wait_for_job(first[1]["job_id"])
    assert job["result"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert count_rows()["jobs"] == before["jobs"] + 1
    assert len(stored_files() - files) == 1


def test_a_key_past_its_time_to_live_is_new(api: Api) -> None:
    key, body = str(uuid.uuid4()), new_signup()
    status, first = api.post_json("/signups", body, headers=keyed(key))
    assert status == 202, first
    with database.session() as db:
        db.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    status, again = api.post_json("/signups", body, headers=keyed(key))

    assert status == 202, again
    assert again["job_id"] != first["job_id"]
    for answer in (first, again):
        assert api.wait_for_job(answer["job_id"])["status"] == "succeeded"


def test_the_cleanup_deletes_expired_keys(worker: workers.ThreadWorker) -> None:
    now = utcnow()
    expired, alive = f"expired-{uuid.uuid4()}", f"alive-{uuid.uuid4()}"
    with database.session() as db:
        for key, expires_at in (
            (expired, now - timedelta(minutes=1)),
            (alive, now + timedelta(hours=1)),
        ):
            db.execute(
                insert(IdempotencyKey).values(
                    key=key,
                    route="POST /signups",
                    fingerprint="0" * 64,
                    status_code=202,
                    response={},
                    created_at=now - timedelta(days=1),
                    expires_at=expires_at,
                )
            )

    workers.trigger_cleanup()

    def keys() -> set[str]:
        with database.session() as db:
            return set(
                db.scalars(
                    select(IdempotencyKey.key).where(IdempotencyKey.key.in_([expired, alive]))
                )
            )

    deadline = time.monotonic() + 20
    while expired in keys():
        assert time.monotonic() < deadline, "the cleanup did not delete the expired key"
        time.sleep(0.1)
    assert keys() == {alive}
