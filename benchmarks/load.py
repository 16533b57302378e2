"""The load on one side, and what arrives at the SMTP server: the benchmark's phases.

Addresses are TAG-…@example.com, TAG naming the side and the phase; the SMTP server counts the
emails per tag, so that each phase waits for its own.
"""

import concurrent.futures
import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.processes import Processes
from tests.conftest import free_port, wait_for_port

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Phases:
    """How long each phase lasts, and how the SMTP server answers."""

    warmup: int = 5  # sequential signups before anything is measured
    latency_samples: int = 100  # at most this many sequential signups,
    latency_seconds: float = 8  # for at most this long once
    latency_min_samples: int = 20  # this many are measured
    burst: int = 200  # signups queued while the workers are paused
    burst_threads: int = 8
    pause_limit: float = 20  # seconds the workers stay paused at most while the burst is posted
    wrk_seconds: int = 5
    wrk_connections: int = 32
    drain: float = 45  # seconds to wait at most for the emails of a burst or a load
    stall: float = 10  # seconds without any email arriving after which the missing are lost
    smtp_delay_ms: int = 0  # the SMTP server answers each message this much later


FULL = Phases()
# Every change measured before it is kept: fewer latency samples, a shorter wrk and wait. The
# burst stays whole: with fewer emails, the bare ARQ worker's half-second poll would weigh more.
QUICK = Phases(warmup=3, latency_samples=50, latency_seconds=4, wrk_seconds=3, drain=30)


class Mailbox:
    """The SMTP server, in a process of its own (`smtp_sink.py`), and the times each address
    received an email: when the server answered it."""

    def __init__(self, work: Path, delay_ms: int) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "smtp_sink.py"), str(self.port), str(delay_ms)],
            stdout=subprocess.PIPE,
            stderr=(work / "smtp.log").open("w"),
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the SMTP server did not start")
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.distinct: dict[str, int] = defaultdict(int)
        self.duplicates: dict[str, int] = defaultdict(int)
        self.received = 0
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            arrived, *recipients = line.split()
            with self.changed:
                self.received += 1
                for address in recipients:
                    tag = address.partition("-")[0]
                    times = self.arrivals[address]
                    times.append(float(arrived))
                    if len(times) == 1:
                        self.distinct[tag] += 1
                    else:
                        self.duplicates[tag] += 1
                self.changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def arrival(self, address: str, timeout: float) -> float | None:
        if not self.wait(lambda: address in self.arrivals, timeout):
            return None
        return self.arrivals[address][0]

    def last_arrival(self, tag: str) -> float:
        with self.changed:
            prefix = f"{tag}-"
            return max(t[0] for a, t in self.arrivals.items() if a.startswith(prefix))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Client:
    """POST /signups over one kept-alive connection (reopened when the server closes it)."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def signup(self, email: str) -> int:
        body = json.dumps({"email": email, "name": "Bench"})
        try:
            self.connection.request("POST", "/signups", body, {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            return 0
        return response.status


def post_many(port: int, addresses: list[str], threads: int) -> list[int]:
    """POST the signups from `threads` connections at once; their HTTP statuses."""

    def post(chunk: list[str]) -> list[int]:
        client = Client(port)
        return [client.signup(address) for address in chunk]

    chunks = [addresses[i::threads] for i in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return [status for statuses in pool.map(post, chunks) for status in statuses]


def wrk(port: int, tag: str, phases: Phases) -> tuple[int, int, float]:
    """Load POST /signups with wrk; the signups accepted, refused, and the seconds it ran."""
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{phases.wrk_connections}",
            f"-d{phases.wrk_seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(HERE / "signups.lua"),
            f"http://127.0.0.1:{port}/signups",
            "--",
            tag,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=phases.wrk_seconds + 60,
    ).stdout
    accepted = int(re.search(r"^accepted (\d+)", output, re.M).group(1))  # type: ignore[union-attr]
    refused = int(re.search(r"^refused (\d+)", output, re.M).group(1))  # type: ignore[union-attr]
    found = re.search(r"requests in ([\d.]+)(m?s)", output)
    seconds = float(found.group(1)) / (1000 if found.group(2) == "ms" else 1) if found else 0
    errors = re.search(r"Socket errors: .*", output)
    if errors:
        print(f"      wrk: {errors.group(0)}")
    return accepted, refused, seconds or phases.wrk_seconds


def await_emails(
    mailbox: Mailbox, tag: str, expected: int, result: dict[str, Any], phases: Phases
) -> int:
    """Wait for `expected` emails tagged `tag`; count as lost those still missing when no email
    at all has arrived for `stall` seconds (emails queued earlier may still be arriving ahead of
    them), as pending those that may still be on their way after `drain` seconds."""
    deadline = time.monotonic() + phases.drain
    while True:
        seen = mailbox.received
        if mailbox.wait(lambda: mailbox.distinct[tag] >= expected, phases.stall):
            return expected
        delivered = mailbox.distinct[tag]
        if mailbox.received == seen:
            result["lost"] += expected - delivered
            return delivered
        if time.monotonic() > deadline:
            result["pending"] += expected - delivered
            return delivered


def warm_up(side: str, client: Client, processes: Processes, mailbox: Mailbox, count: int) -> None:
    for i in range(count):
        address = f"{side}warm-{i}@example.com"
        deadline = time.monotonic() + 60
        while client.signup(address) != 202:  # the broker may still be starting
            processes.check()
            if time.monotonic() > deadline:
                raise RuntimeError("POST /signups is not accepted")
            time.sleep(0.5)
        if mailbox.arrival(address, 60) is None:
            processes.check()
            raise RuntimeError("the warm-up email did not arrive")


def latency(
    side: str, client: Client, mailbox: Mailbox, result: dict[str, Any], phases: Phases
) -> None:
    """Sequential signups, each timed until its email has arrived: p50 and p99."""
    latencies: list[float] = []
    began = time.monotonic()
    for i in range(phases.latency_samples):
        if i >= phases.latency_min_samples and time.monotonic() - began > phases.latency_seconds:
            break
        address = f"{side}latency-{i}@example.com"
        sent = time.monotonic()
        if client.signup(address) != 202:
            result["refused"] += 1
            continue
        arrived = mailbox.arrival(address, 30)
        if arrived is None:
            result["lost"] += 1
        else:
            latencies.append(arrived - sent)
    latencies.sort()
    result["latency"] = len(latencies)
    result["p50"] = statistics.median(latencies) * 1000
    result["p99"] = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)))] * 1000


def burst(
    side: str,
    port: int,
    processes: Processes,
    mailbox: Mailbox,
    result: dict[str, Any],
    phases: Phases,
) -> None:
    """Signups posted while the email worker is paused, then the rate their emails arrive at
    once it resumes, and the worker's CPU time per email delivered."""
    # Paused only once idle: a worker stopped while it holds a lock (SQLite's) would stall the
    # web process; if posting takes too long all the same, the workers resume.
    tag = f"{side}burst"
    workers = [name for name in processes.running if "worker" in name]
    processes.wait_until_idle(workers)
    resumed: list[float] = []
    lock = threading.Lock()

    def resume() -> None:
        with lock:
            if not resumed:
                resumed.append(time.monotonic())
                processes.signal(workers, signal.SIGCONT)

    cpu = processes.cpu_seconds(["worker"])
    processes.signal(workers, signal.SIGSTOP)
    watchdog = threading.Timer(phases.pause_limit, resume)
    watchdog.start()
    try:
        addresses = [f"{tag}-{i}@example.com" for i in range(phases.burst)]
        statuses = post_many(port, addresses, phases.burst_threads)
    finally:
        watchdog.cancel()
        resume()
    accepted = statuses.count(202)
    result["refused"] += phases.burst - accepted
    delivered = await_emails(mailbox, tag, accepted, result, phases)
    cpu = processes.cpu_seconds(["worker"]) - cpu
    result["burst"] = f"{delivered}/{accepted}"
    if delivered:
        result["delivered_per_s"] = delivered / (mailbox.last_arrival(tag) - resumed[0])
        result["worker_cpu_ms"] = cpu / delivered * 1000


def enqueue(
    side: str,
    port: int,
    processes: Processes,
    mailbox: Mailbox,
    result: dict[str, Any],
    phases: Phases,
) -> None:
    """POST /signups under wrk, workers running: the rate accepted and the web process's CPU
    time per signup accepted; then every accepted signup's email is awaited."""
    tag = f"{side}load"
    cpu = processes.cpu_seconds(["web"])
    accepted, refused, seconds = wrk(port, tag, phases)
    cpu = processes.cpu_seconds(["web"]) - cpu
    result["accepted_per_s"] = accepted / seconds
    if accepted:
        result["web_cpu_ms"] = cpu / accepted * 1000
    result["load"] = f"{accepted} accepted, {refused} refused in {seconds:.1f} s"
    result["refused"] += refused
    await_emails(mailbox, tag, accepted, result, phases)


def measure(
    side: str,
    commands: dict[str, str],
    cwd: Path,
    env: dict[str, str],
    mailbox: Mailbox,
    logs: Path,
    phases: Phases,
) -> dict[str, Any]:
    """Start one side's processes (`web`, `worker` for the emails, maybe more) and run the
    phases: latency, burst, enqueue; with the peak memory of each process throughout."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    processes = Processes(commands, cwd, env | {"PORT": str(port)}, logs)
    result: dict[str, Any] = {"lost": 0, "pending": 0, "refused": 0}
    try:
        wait_for_port(port, processes.check)
        client = Client(port)
        warm_up(side, client, processes, mailbox, phases.warmup)
        latency(side, client, mailbox, result, phases)
        burst(side, port, processes, mailbox, result, phases)
        enqueue(side, port, processes, mailbox, result, phases)
        processes.check()
        time.sleep(0.5)  # room for a late duplicate
        result["duplicated"] = sum(
            count for key, count in mailbox.duplicates.items() if key.startswith(side)
        )
    finally:
        processes.stop()
        result["rss_mb"] = dict(processes.peak_mb)
    return result
