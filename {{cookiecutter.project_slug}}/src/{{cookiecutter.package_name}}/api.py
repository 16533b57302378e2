"""What the HTTP API accepts and answers, whichever framework serves it."""

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, EmailStr, Field
from pydantic_core import ErrorDetails

from .records import Job

# Room for the multipart envelope around an uploaded file.
MULTIPART_OVERHEAD = 64 * 1024
QUEUE_DOWN = "the job queue is unavailable; nothing was stored, try again later"
DATABASE_DOWN = "the database is unavailable; try again later"


class SignupIn(BaseModel):
    email: EmailStr
    name: str = Field(min_length=1, max_length=200)


def problems(errors: Iterable[ErrorDetails], skip: int = 0) -> list[dict[str, str]]:
    """Validation errors as `{"field", "problem"}`; `skip` drops leading location parts."""
    return [{"field": _field(e["loc"][skip:]), "problem": e["msg"]} for e in errors]


def accepted(job: Job, webhook: Job | None = None) -> dict[str, Any]:
    """The answer to a request that queued `job`, and the `webhook` that announces it, if any."""
    answer = {"job_id": job.id, "kind": job.kind, "status": job.status, "url": f"/jobs/{job.id}"}
    if webhook is not None:
        answer["webhook_job_id"] = webhook.id
    return answer


def is_job_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _field(location: Sequence[int | str]) -> str:
    return ".".join(map(str, location)) or "body"
