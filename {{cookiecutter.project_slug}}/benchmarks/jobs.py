"""How fast the welcome email job goes, seen from the API: latency, signups accepted, jobs done.

    uv run python benchmarks/jobs.py [base URL] [--latency 50] [--jobs 200] [--connections 8]
    BROKER_URL=... uv run python benchmarks/jobs.py --local [--jobs 500]

It signs up addresses at example.com and follows each job with `GET /jobs/{id}`:

- latency: sequential signups, each timed from `POST /signups` until its job has succeeded;
- throughput: `--jobs` signups posted at once from `--connections` connections, the rate they
  were accepted at, then the rate the jobs finished at (from the first job's `finished_at` to
  the last one's, in their records).

Against a running deployment (a base URL, http://localhost:8000 by default), point its SMTP
settings at a catcher: mail to example.com goes nowhere, but is sent. Each signup leaves its
record behind, as any signup does; the cleanup deletes the jobs' records after RETENTION.

With `--local` it starts the Procfile's `web` and one `worker` process here instead, with an
SMTP server of its own that accepts every email, a new SQLite database (unless DATABASE_URL says
otherwise) and BROKER_URL's queue, which should be the benchmark's own. The signups of the
throughput phase are queued while no worker runs, then one worker process is started: the rate
is what one worker process does.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiosmtpd.controller import Controller

ROOT = Path(__file__).resolve().parents[1]
# Seconds between two looks at an unfinished job: often enough to time one job, and seldom
# enough, while many are under way, to leave the web process and the database to the workers.
LATENCY_POLL = 0.005
THROUGHPUT_POLL = 0.02
FINISHED = {"succeeded", "failed"}


class Api:
    """The deployment's API over one kept-alive connection."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        self.connection = kind(url.netloc, timeout=30)
        self.prefix = url.path.rstrip("/")

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self.connection.request(method, self.prefix + path, data, headers)
            response = self.connection.getresponse()
            return response.status, json.loads(response.read() or b"null")
        except (OSError, http.client.HTTPException):
            self.connection.close()  # reopened by the next request
            raise

    def signup(self) -> str:
        """Sign up a new address; the id of its welcome email job."""
        email = f"bench-{uuid.uuid4().hex}@example.com"
        status, answer = self.call("POST", "/signups", {"email": email, "name": "Benchmark"})
        if status != 202:
            raise RuntimeError(f"POST /signups answered {status}: {answer}")
        return str(answer["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        status, job = self.call("GET", f"/jobs/{job_id}")
        if status != 200:
            raise RuntimeError(f"GET /jobs/{job_id} answered {status}: {job}")
        return dict(job)

    def wait(self, job_ids: list[str], interval: float) -> list[dict[str, Any]]:
        """Follow the jobs, one after the other, until each has finished; their records."""
        finished = []
        for job_id in job_ids:
            while (job := self.job(job_id))["status"] not in FINISHED:
                time.sleep(interval)
            finished.append(job)
        return finished


def latency(base_url: str, count: int) -> tuple[list[float], int]:
    """Seconds from each signup to its job's success, one signup at a time; and the failures."""
    api = Api(base_url)
    api.wait([api.signup()], LATENCY_POLL)  # warm-up: connections, caches, workers
    times, failed = [], 0
    for _ in range(count):
        started = time.perf_counter()
        if api.wait([api.signup()], LATENCY_POLL)[0]["status"] == "succeeded":
            times.append(time.perf_counter() - started)
        else:
            failed += 1
    return times, failed


def post(base_url: str, jobs: int, connections: int) -> tuple[list[str], float]:
    """Post `jobs` signups from `connections` connections at once: the job ids, and the
    signups accepted per second."""
    shares = [jobs // connections + (i < jobs % connections) for i in range(connections)]
    apis = [Api(base_url) for _ in shares]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        posted = pool.map(lambda api, n: [api.signup() for _ in range(n)], apis, shares)
        job_ids = [job_id for share in posted for job_id in share]
    return job_ids, jobs / (time.perf_counter() - started)


def finished_rate(jobs: list[dict[str, Any]]) -> float:
    """Jobs finished per second, between the first to finish and the last."""
    times = sorted(datetime.fromisoformat(job["finished_at"]) for job in jobs)
    seconds = (times[-1] - times[0]).total_seconds()
    return (len(times) - 1) / seconds if seconds else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


class Local:
    """The Procfile's processes, started here against an SMTP server that accepts every email."""

    def __init__(self) -> None:
        work = Path(tempfile.mkdtemp(prefix="jobs-benchmark-"))
        self.port, smtp_port = free_port(), free_port()
        self.env = os.environ | {
            "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{work / 'jobs.db'}"),
            "UPLOAD_DIR": str(work / "uploads"),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "PORT": str(self.port),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        self.commands = {}
        for line in (ROOT / "Procfile").read_text().splitlines():
            name, colon, command = line.partition(":")
            if colon:
                self.commands[name] = command.strip()
        self.smtp = Controller(Accept(), hostname="127.0.0.1", port=smtp_port)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, process: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["/bin/sh", "-c", f"exec {self.commands[process]}"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @staticmethod
    def stop(process: subprocess.Popen[bytes]) -> None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    @contextmanager
    def web(self) -> Iterator[None]:
        """The SMTP server and the web process, the database migrated."""
        subprocess.run(["alembic", "upgrade", "head"], cwd=ROOT, env=self.env, check=True)
        self.smtp.start()
        web = self.start("web")
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    break
                except OSError:
                    if web.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the web process did not start") from None
                    time.sleep(0.2)
            yield
        finally:
            self.stop(web)
            self.smtp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("base_url", nargs="?", default="http://localhost:8000")
    parser.add_argument("--local", action="store_true", help="start web and one worker here")
    parser.add_argument("--latency", type=int, default=50, help="sequential signups to time")
    parser.add_argument("--jobs", type=int, default=200, help="signups posted at once")
    parser.add_argument("--connections", type=int, default=8, help="connections posting them")
    args = parser.parse_args()

    if args.local:
        local = Local()
        with local.web():
            worker = local.start("worker")
            try:
                times, failed = latency(local.base_url, args.latency)
            finally:
                local.stop(worker)
            job_ids, accepted = post(local.base_url, args.jobs, args.connections)
            worker = local.start("worker")
            try:
                jobs = Api(local.base_url).wait(job_ids, THROUGHPUT_POLL)
            finally:
                local.stop(worker)
    else:
        times, failed = latency(args.base_url, args.latency)
        job_ids, accepted = post(args.base_url, args.jobs, args.connections)
        jobs = Api(args.base_url).wait(job_ids, THROUGHPUT_POLL)

    times.sort()
    p50 = statistics.median(times) * 1000 if times else float("nan")
    p99 = times[min(len(times) - 1, round(0.99 * len(times)))] * 1000 if times else float("nan")
    burst_failed = sum(job["status"] == "failed" for job in jobs)
    workers = "one worker process, started once they were queued" if args.local else "running"
    rows = [
        ("welcome email, signup to success", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"),
        ("", f"{len(times)} sequential signups, {failed} failed"),
        ("signups accepted", f"{accepted:.0f}/s ({args.jobs} from {args.connections} connections)"),
        ("welcome emails finished", f"{finished_rate(jobs):.0f}/s ({burst_failed} failed)"),
        ("", f"workers: {workers}"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
