"""How fast the welcome email job goes through a running deployment, seen from its API.

    uv run python benchmarks/jobs.py [base URL] [--jobs 200] [--connections 8]

It signs up addresses at example.com (reserved: mail to it goes nowhere, but point the
deployment at an SMTP catcher all the same) and follows each job with `GET /jobs/{id}`:

- latency: sequential signups, each timed from `POST /signups` until its job has succeeded;
- throughput: `--jobs` signups posted at once from `--connections` connections, the rate they
  were accepted at, then the rate the jobs finished at.

Each signup leaves its record behind, as any signup does; the cleanup deletes the jobs' records
after RETENTION.
"""

import argparse
import concurrent.futures
import http.client
import json
import statistics
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

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

    def status(self, job_id: str) -> str:
        status, job = self.call("GET", f"/jobs/{job_id}")
        if status != 200:
            raise RuntimeError(f"GET /jobs/{job_id} answered {status}: {job}")
        return str(job["status"])

    def wait(self, job_ids: list[str], interval: float) -> list[str]:
        """Follow the jobs, one after the other, until each has finished; how each ended."""
        outcomes = []
        for job_id in job_ids:
            while (status := self.status(job_id)) not in FINISHED:
                time.sleep(interval)
            outcomes.append(status)
        return outcomes


def latency(base_url: str, count: int) -> tuple[list[float], int]:
    """Seconds from each signup to its job's success, one signup at a time; and the failures."""
    api = Api(base_url)
    api.wait([api.signup()], LATENCY_POLL)  # warm-up: connections, caches, workers
    times, failed = [], 0
    for _ in range(count):
        started = time.perf_counter()
        if api.wait([api.signup()], LATENCY_POLL) == ["succeeded"]:
            times.append(time.perf_counter() - started)
        else:
            failed += 1
    return times, failed


def throughput(base_url: str, jobs: int, connections: int) -> tuple[float, float, int]:
    """Post `jobs` signups from `connections` connections at once, then wait for their jobs:
    signups accepted per second, jobs finished per second (from the first signup), failures."""
    shares = [jobs // connections + (i < jobs % connections) for i in range(connections)]
    apis = [Api(base_url) for _ in shares]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        posted = pool.map(lambda api, n: [api.signup() for _ in range(n)], apis, shares)
        job_ids = [job_id for share in posted for job_id in share]
    accepted = time.perf_counter()
    outcomes = apis[0].wait(job_ids, THROUGHPUT_POLL)
    finished = time.perf_counter()
    return jobs / (accepted - started), jobs / (finished - started), outcomes.count("failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("base_url", nargs="?", default="http://localhost:8000")
    parser.add_argument("--latency", type=int, default=50, help="sequential signups to time")
    parser.add_argument("--jobs", type=int, default=200, help="signups posted at once")
    parser.add_argument("--connections", type=int, default=8, help="connections posting them")
    args = parser.parse_args()

    times, failed = latency(args.base_url, args.latency)
    times.sort()
    p50 = statistics.median(times) * 1000 if times else float("nan")
    p99 = times[min(len(times) - 1, round(0.99 * len(times)))] * 1000 if times else float("nan")
    accepted, done, burst_failed = throughput(args.base_url, args.jobs, args.connections)
    rows = [
        ("welcome email, signup to success", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"),
        ("", f"{len(times)} sequential signups, {failed} failed"),
        ("signups accepted", f"{accepted:.0f}/s ({args.jobs} from {args.connections} connections)"),
        ("welcome emails finished", f"{done:.0f}/s ({burst_failed} failed)"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
