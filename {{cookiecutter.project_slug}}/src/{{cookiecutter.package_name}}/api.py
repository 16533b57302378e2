"""What the HTTP API accepts and answers, whichever framework serves it.

These models are the API's contract: FastAPI documents them in `/openapi.json`, and both
frameworks answer with them.
"""

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, EmailStr, Field
from pydantic_core import ErrorDetails

from .models import Job

# Room for the multipart envelope around an uploaded file.
MULTIPART_OVERHEAD = 64 * 1024
QUEUE_DOWN = "the job queue is unavailable; nothing was stored, try again later"
DATABASE_DOWN = "the database is unavailable; try again later"
# What each error status means, whichever route answers it (all with the `Error` body).
ERRORS = {
    400: "Malformed: the body is not JSON, a multipart body is malformed or cut short, or the "
    "Idempotency-Key is malformed.",
    401: "Dashboard credentials required.",
    404: "No such job.",
    409: "The job is not in a state that allows this, or a request with this Idempotency-Key "
    "is still under way.",
    413: "The file is over MAX_UPLOAD_BYTES.",
    422: "Invalid input (`detail` says which field), a multipart body without the field "
    "`file`, or an Idempotency-Key used for another request.",
    503: "The database or the job queue is unavailable; nothing was changed.",
    507: "No room left to store the file.",
}


class Refused(Exception):
    """A request the app does not carry out: the HTTP status that says why, and a message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


class SignupIn(BaseModel):
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)


class Accepted(BaseModel):
    """A job accepted for the queue (202), and where to follow it."""

    job_id: str
    kind: str
    status: str
    url: str
    webhook_job_id: str | None = Field(
        default=None, description="The job that announces the signup, if a webhook is set up."
    )


class JobOut(BaseModel):
    """A job as anyone holding its id may see it; the full error is on the dashboard."""

    id: str
    kind: str
    status: str
    attempts: int
    progress: float
    result: dict[str, Any] | None
    error: str | None = Field(description="A summary of the last error, if any.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> "JobOut":
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            attempts=job.attempts,
            progress=job.progress,
            result=job.result,
            error=job.error_summary,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


class Problem(BaseModel):
    field: str
    problem: str


class Error(BaseModel):
    """Every error answer: a message, and for invalid input what is wrong with which field."""

    error: str
    detail: list[Problem] | None = None


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Literal["ok", "unavailable"]]


def accepted(job: Job, webhook: Job | None = None) -> Accepted:
    """The answer to a request that queued `job`, and the `webhook` that announces it, if any."""
    return Accepted(
        job_id=job.id,
        kind=job.kind,
        status=job.status,
        url=f"/jobs/{job.id}",
        webhook_job_id=webhook.id if webhook is not None else None,
    )


def problems(errors: Iterable[ErrorDetails], skip: int = 0) -> list[dict[str, str]]:
    """Validation errors as `{"field", "problem"}`; `skip` drops leading location parts."""
    return [{"field": _field(e["loc"][skip:]), "problem": e["msg"]} for e in errors]


def is_job_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _field(location: Sequence[int | str]) -> str:
    return ".".join(map(str, location)) or "body"
