"""Both web frameworks answer the same API: FastAPI's own `/openapi.json`, walked against a
FastAPI bake and a Flask bake running side by side, with the same requests.

Every operation the schema documents must have its requests here (a new route fails the walk
until it has them); each answer's status must be one the schema documents for it, its body
must fit the schema's model for that status, and the Flask bake must answer exactly as the
FastAPI bake does.
"""

import os
import shlex
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.checks import clean_env, procfile, pythons_path, run, uv
from tests.combinations import COOKIECUTTER, FULL, context
from tests.conftest import free_port
from tests.readme import answers, background, wait_until

PLAN = next(p for p in FULL if p["task_queue"] == "celery" and p["broker"] == "redis")
AUTH = ("operator", "contract")
Request = tuple[str, str, dict[str, Any]]  # method, path ({job_id} filled in), httpx arguments


def requests_for(job_id: str) -> dict[tuple[str, str], list[Request]]:
    """The requests made of each documented operation: valid ones and each kind of refusal."""
    unknown = str(uuid.uuid4())
    signup = {"email": "ada@example.com", "name": "Ada"}
    not_json = {"content": b"{", "headers": {"Content-Type": "application/json"}}
    return {
        ("post", "/signups"): [
            ("post", "/signups", {"json": signup}),
            ("post", "/signups", {"json": {"email": "not an address", "name": "Ada"}}),
            ("post", "/signups", not_json),
        ],
        ("post", "/files"): [
            ("post", "/files", {"files": {"file": ("a.csv", b"id\n1\n", "text/csv")}}),
            ("post", "/files", {"files": {"other": ("a.csv", b"id\n1\n", "text/csv")}}),
        ],
        ("get", "/jobs/{job_id}"): [
            ("get", f"/jobs/{job_id}", {}),
            ("get", f"/jobs/{unknown}", {}),
            ("get", "/jobs/not-an-id", {}),
        ],
        ("get", "/health"): [("get", "/health", {})],
        ("post", "/jobs/{job_id}/retry"): [
            ("post", f"/jobs/{job_id}/retry", {"auth": AUTH}),  # queued, not failed: 409
            ("post", f"/jobs/{unknown}/retry", {"auth": AUTH}),
            ("post", f"/jobs/{job_id}/retry", {}),  # no credentials
        ],
        ("post", "/jobs/{job_id}/cancel"): [
            ("post", f"/jobs/{job_id}/cancel", {"auth": AUTH}),
            ("post", f"/jobs/{job_id}/cancel", {"auth": AUTH}),  # cancelled already: 409
            ("post", f"/jobs/{unknown}/cancel", {"auth": AUTH}),
        ],
    }


def test_both_frameworks_answer_as_the_openapi_schema_says(cookies: Any) -> None:
    with ExitStack() as stack:
        fastapi, flask = (
            stack.enter_context(served(cookies, {**PLAN, "web_framework": framework}, n))
            for n, framework in enumerate(("fastapi", "flask"), start=100)
        )
        schema = fastapi.get("/openapi.json").json()
        operations = {
            (method, path): operation
            for path, item in schema["paths"].items()
            for method, operation in item.items()
        }
        # Each side gets its own job, recorded the same way, for the requests about one job.
        job_ids = [sign_up(client) for client in (fastapi, flask)]
        cases = [requests_for(job_id) for job_id in job_ids]
        assert set(cases[0]) == set(operations), "every documented operation has its requests"

        for key, operation in operations.items():
            for ours, theirs in zip(cases[0][key], cases[1][key], strict=True):
                answers = [send(fastapi, ours), send(flask, theirs)]
                (status, body), (flask_status, flask_body) = answers
                assert flask_status == status, (key, ours[2], answers)
                assert fits(schema, operation, status, body), (key, status, body)
                assert fits(schema, operation, status, flask_body), (key, status, flask_body)
                assert shape(flask_body) == shape(body), (key, answers)


def sign_up(client: httpx.Client) -> str:
    answer = client.post("/signups", json={"email": "grace@example.com", "name": "Grace"})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def send(client: httpx.Client, request: Request) -> tuple[int, Any]:
    method, path, arguments = request
    answer = client.request(method.upper(), path, **arguments)
    return answer.status_code, answer.json()


def fits(schema: dict[str, Any], operation: dict[str, Any], status: int, body: Any) -> bool:
    """Whether `status` is documented for the operation and `body` fits its model."""
    documented = operation["responses"].get(str(status))
    if documented is None:
        return False
    model = documented.get("content", {}).get("application/json", {}).get("schema")
    if model is None:
        return True
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    registry = Registry().with_resource("schema", resource)
    ref = {"$ref": model["$ref"].replace("#", "schema#", 1)} if "$ref" in model else model
    jsonschema.Draft202012Validator(ref, registry=registry).validate(body)
    return True


def shape(body: Any) -> Any:
    """An answer with its values' types in place of its values (ids and times differ)."""
    if isinstance(body, dict):
        return {key: shape(value) for key, value in body.items()}
    if isinstance(body, list):
        return [shape(value) for value in body]
    return type(body).__name__


@contextmanager
def served(cookies: Any, plan: dict[str, str], number: int) -> Iterator[httpx.Client]:
    """A bake's web process, as its Procfile runs it, on an in-memory broker and SQLite."""
    result = cookies.bake(extra_context=context(plan, number))
    assert result.exit_code == 0, result.exception
    project: Path = result.project_path
    env = clean_env(PATH=pythons_path(COOKIECUTTER["python_version"]))
    run([uv(), "sync", "--no-dev", "--quiet"], project, env)
    data = Path(tempfile.mkdtemp(prefix="contract-"))
    port = free_port()
    env |= {
        "PATH": f"{project / '.venv' / 'bin'}{os.pathsep}{env['PATH']}",
        "DATABASE_URL": f"sqlite:///{data / 'app.db'}",
        "BROKER_URL": "memory://",
        "UPLOAD_DIR": str(data / "uploads"),
        "DASHBOARD_USERNAME": AUTH[0],
        "DASHBOARD_PASSWORD": AUTH[1],
        "WORKER_HEARTBEAT_DIR": str(data),
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
    }
    run(["alembic", "upgrade", "head"], project, env)
    command = shlex.join(procfile(project)["web"]).replace("'${PORT:-8000}'", "$PORT")
    log = data / "web.log"
    with background(f"exec {command}", project, env, log):
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/health"), "the web process", [log])
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
