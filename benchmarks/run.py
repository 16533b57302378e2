"""The generated project beside a bare seed-style app, measured in the same run.

    uv run python benchmarks/run.py [--template PATH] [--python 3.12] [combination ...]

A combination is named queue-framework-broker-database, e.g. `celery-fastapi-redis-sqlite`;
with none, every valid combination is measured (derived from cookiecutter.json, as the
verification derives them). For each one this bakes the project from `--template` (this clone by
default, or any other clone or worktree), installs it in a virtual environment of its own,
migrates its database, and starts its Procfile's web and worker processes, each in its own process
group, against the real local services. Then it measures, on the project and on the bare app of
the same queue, framework and broker (`benchmarks/seed/`, library defaults, served the way a seed
app is: uvicorn or gunicorn), one after the other, alternating which goes first:

- the welcome email's latency, from `POST /signups` to the email's arrival at an SMTP server in a
  process of its own (`smtp_sink.py`): p50 and p99 of sequential requests after a warm-up;
- the worker's throughput: a burst of signups is posted while the workers are paused (SIGSTOP),
  then the workers resume and the emails delivered per second are counted;
- the enqueue path: `POST /signups` accepted per second under `wrk`, with a bounded number of
  connections for a bounded time, every accepted signup's email then awaited;
- the peak resident memory of each process, its children (a prefork pool) included.

Nothing lost means every accepted signup's email arrived: emails still arriving after DRAIN
seconds are reported as pending, those missing once none has arrived for STALL seconds as lost;
nothing duplicated means no address received two. It prints a table of both sides and their
ratios, and exits 0 whatever the figures: it is a measurement, not a test.

Services, as the verification finds them: REDIS_URL (a database of its own: it is emptied; without
it a private redis-server is started), RABBITMQ_URL (the queues made are deleted), POSTGRES_URL (a
database is made per combination and dropped); SQS is a moto_server started per combination.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.checks import clean_env, find_python, run, uv  # noqa: E402
from tests.combinations import AXES, VALID  # noqa: E402
from tests.conftest import (  # noqa: E402
    RABBITMQ_URL,
    Databases,
    free_port,
    moto_server,
    wait_for_port,
)

HERE = ROOT / "benchmarks"
SEED = HERE / "seed"
REDIS_URL = os.environ.get("REDIS_URL")  # unset: a private redis-server for the run
COOKIECUTTER = shutil.which("cookiecutter", path=str(Path(sys.executable).parent)) or "cookiecutter"

WARMUP = 5  # sequential signups before anything is measured
LATENCY_SAMPLES = 100  # at most this many sequential signups,
LATENCY_SECONDS = 8  # for at most this long once
LATENCY_MIN_SAMPLES = 20  # this many are measured
BURST = 200  # signups queued while the workers are paused
BURST_THREADS = 8
PAUSE_LIMIT = 20  # seconds the workers stay paused at most while the burst is posted
WRK_SECONDS = 5
WRK_CONNECTIONS = 32
DRAIN = 45  # seconds to wait at most for the emails of a burst or a load, while they arrive
STALL = 10  # seconds without any arriving after which the missing emails count as lost


def combination_name(combo: dict[str, str]) -> str:
    return "-".join(combo[axis] for axis in AXES)


def plan(names: list[str]) -> list[dict[str, str]]:
    """The combinations named, or every valid one; an unknown or invalid name is refused."""
    valid = {combination_name(combo): combo for combo in VALID}
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise SystemExit(f"not valid combinations: {unknown}; choose among {sorted(valid)}")
    return [valid[name] for name in names] if names else list(VALID)


class Mailbox:
    """The SMTP server, in a process of its own, and what arrived there: times per address.

    Addresses are TAG-…@example.com; arrivals are counted per tag (a side and a phase).
    """

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "smtp_sink.py"), str(self.port)],
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


class Processes:
    """One side's long-running processes, each in its own process group, their memory sampled."""

    def __init__(self, commands: dict[str, str], cwd: Path, env: dict[str, str], logs: Path):
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        for name, command in commands.items():
            self.running[name] = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                cwd=cwd,
                env=env,
                stdout=(logs / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.peak_mb = dict.fromkeys(commands, 0.0)
        self.stopped = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def _sample(self) -> None:
        while not self.stopped.wait(0.2):
            for name, process in self.running.items():
                try:
                    root = psutil.Process(process.pid)
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                total = 0
                for member in tree:
                    with suppress(psutil.Error):
                        total += member.memory_info().rss
                self.peak_mb[name] = max(self.peak_mb[name], total / 2**20)

    def cpu_seconds(self, names: list[str]) -> float:
        total = 0.0
        for name in names:
            with suppress(psutil.Error):
                root = psutil.Process(self.running[name].pid)
                for member in [root, *root.children(recursive=True)]:
                    with suppress(psutil.Error):
                        times = member.cpu_times()
                        total += times.user + times.system
        return total

    def wait_until_idle(self, names: list[str], timeout: float = 10) -> None:
        """Wait until these processes use (almost) no CPU: done with the last job's records."""
        deadline = time.monotonic() + timeout
        used = self.cpu_seconds(names)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            used, before = self.cpu_seconds(names), used
            if used - before < 0.02:
                return

    def check(self) -> None:
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}): see {self.logs}")

    def signal(self, names: list[str], signum: signal.Signals) -> None:
        for name in names:
            os.killpg(self.running[name].pid, signum)

    def stop(self) -> None:
        self.stopped.set()
        self.sampler.join()
        for process in self.running.values():
            try:
                os.killpg(process.pid, signal.SIGCONT)
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.running.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def post_many(port: int, addresses: list[str]) -> list[int]:
    """POST the signups from BURST_THREADS connections at once; their HTTP statuses."""

    def post(chunk: list[str]) -> list[int]:
        client = Client(port)
        return [client.signup(address) for address in chunk]

    chunks = [addresses[i::BURST_THREADS] for i in range(BURST_THREADS)]
    with concurrent.futures.ThreadPoolExecutor(BURST_THREADS) as pool:
        return [status for statuses in pool.map(post, chunks) for status in statuses]


def wrk(port: int, tag: str) -> tuple[int, int, float]:
    """Load POST /signups with wrk; the signups accepted, refused, and the seconds it ran."""
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{WRK_CONNECTIONS}",
            f"-d{WRK_SECONDS}s",
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
        timeout=WRK_SECONDS + 60,
    ).stdout
    accepted = int(re.search(r"^accepted (\d+)", output, re.M).group(1))  # type: ignore[union-attr]
    refused = int(re.search(r"^refused (\d+)", output, re.M).group(1))  # type: ignore[union-attr]
    found = re.search(r"requests in ([\d.]+)(m?s)", output)
    seconds = float(found.group(1)) / (1000 if found.group(2) == "ms" else 1) if found else 0
    errors = re.search(r"Socket errors: .*", output)
    if errors:
        print(f"      wrk: {errors.group(0)}")
    return accepted, refused, seconds or WRK_SECONDS


def await_emails(mailbox: Mailbox, tag: str, expected: int, result: dict[str, Any]) -> int:
    """Wait for `expected` emails tagged `tag`; count as lost those still missing when no email
    at all has arrived for STALL seconds (emails queued earlier may still be arriving ahead of
    them), as pending those that may still be on their way after DRAIN seconds."""
    deadline = time.monotonic() + DRAIN
    while True:
        seen = mailbox.received
        if mailbox.wait(lambda: mailbox.distinct[tag] >= expected, STALL):
            return expected
        delivered = mailbox.distinct[tag]
        if mailbox.received == seen:
            result["lost"] += expected - delivered
            return delivered
        if time.monotonic() > deadline:
            result["pending"] += expected - delivered
            return delivered


def measure(
    side: str,
    commands: dict[str, str],
    cwd: Path,
    env: dict[str, str],
    mailbox: Mailbox,
    logs: Path,
) -> dict[str, Any]:
    """Start one side's processes and measure latency, throughput, the enqueue path, memory."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    workers = [name for name in commands if "worker" in name]
    processes = Processes(commands, cwd, env | {"PORT": str(port)}, logs)
    result: dict[str, Any] = {"lost": 0, "pending": 0, "refused": 0}
    try:
        wait_for_port(port, processes.check)
        client = Client(port)

        for i in range(WARMUP):
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

        latencies: list[float] = []
        began = time.monotonic()
        for i in range(LATENCY_SAMPLES):
            if i >= LATENCY_MIN_SAMPLES and time.monotonic() - began > LATENCY_SECONDS:
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

        # Paused only once idle: a worker stopped while it holds a lock (SQLite's) would stall
        # the web process; if posting takes too long all the same, the workers resume.
        tag = f"{side}burst"
        processes.wait_until_idle(workers)
        resumed: list[float] = []
        lock = threading.Lock()

        def resume() -> None:
            with lock:
                if not resumed:
                    resumed.append(time.monotonic())
                    processes.signal(workers, signal.SIGCONT)

        processes.signal(workers, signal.SIGSTOP)
        watchdog = threading.Timer(PAUSE_LIMIT, resume)
        watchdog.start()
        try:
            statuses = post_many(port, [f"{tag}-{i}@example.com" for i in range(BURST)])
        finally:
            watchdog.cancel()
            resume()
        accepted = statuses.count(202)
        result["refused"] += BURST - accepted
        delivered = await_emails(mailbox, tag, accepted, result)
        result["burst"] = f"{delivered}/{accepted}"
        if delivered:
            result["delivered_per_s"] = delivered / (mailbox.last_arrival(tag) - resumed[0])

        tag = f"{side}load"
        accepted, refused, seconds = wrk(port, tag)
        result["accepted_per_s"] = accepted / seconds
        result["load"] = f"{accepted} accepted, {refused} refused in {seconds:.1f} s"
        result["refused"] += refused
        await_emails(mailbox, tag, accepted, result)
        processes.check()
        time.sleep(0.5)  # room for a late duplicate
        result["duplicated"] = sum(
            count for key, count in mailbox.duplicates.items() if key.startswith(side)
        )
    finally:
        processes.stop()
        result["rss_mb"] = dict(processes.peak_mb)
    return result


def seed_commands(combo: dict[str, str]) -> dict[str, str]:
    """The bare app's processes, served as a seed app is: by uvicorn or gunicorn, defaults."""
    queue, framework = combo["task_queue"], combo["web_framework"]
    web = {
        "fastapi": f"uvicorn {framework}_{queue}:app --host 127.0.0.1 --port $PORT",
        "flask": f"gunicorn --bind 127.0.0.1:$PORT {framework}_{queue}:app",
    }
    worker = {
        "celery": "celery -A celery_tasks worker --loglevel INFO",
        "arq": "arq arq_tasks.WorkerSettings",
    }
    return {"web": web[framework], "worker": worker[queue]}


def procfile(project: Path) -> dict[str, str]:
    entries = {}
    for line in (project / "Procfile").read_text().splitlines():
        name, colon, command = line.partition(":")
        if colon and not line.startswith("#"):
            entries[name.strip()] = command.strip()
    return entries


@contextmanager
def redis_server() -> Iterator[str]:
    """REDIS_URL, emptied before and after; or a private redis-server for this run."""
    if REDIS_URL:
        yield REDIS_URL
        return
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, lambda: None)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


# Run with the project's own Python, which has the broker's client library.
FLUSH_REDIS = "import sys, redis; redis.Redis.from_url(sys.argv[1]).flushdb()"
DELETE_AMQP_QUEUES = """
import sys
from kombu import Connection
with Connection(sys.argv[1]) as connection:
    channel = connection.default_channel
    for name in sys.argv[2:]:
        channel.queue_delete(name)
        channel.exchange_delete(name)
"""


def bench(combo: dict[str, str], template: Path, python: str, first: str) -> dict[str, Any]:
    """Bake, install and measure one combination, both sides; `first` is the side run first."""
    began = time.monotonic()
    token = secrets.token_hex(3)
    package = f"bench_{token}"
    work = Path(tempfile.mkdtemp(prefix=f"bench-{combination_name(combo)}-"))
    context = {**combo, "project_name": f"Bench {token}", "use_docker": "no"}
    env = clean_env()
    answers = [f"{key}={value}" for key, value in context.items()]
    run([COOKIECUTTER, str(template), "--no-input", "-o", str(work), *answers], ROOT, env)
    project = work / f"bench-{token}"
    run([uv(), "venv", "-q", "--python", find_python(python), ".venv"], project, env)
    run([uv(), "sync", "-q", "--no-dev"], project, env)
    venv_python = str(project / ".venv" / "bin" / "python")
    if combo["task_queue"] == "arq":
        run([uv(), "pip", "install", "-q", "--python", venv_python, "aiosmtplib"], project, env)
    seed_queue = f"seed_{token}"
    print(f"    baked and installed in {time.monotonic() - began:.0f} s", flush=True)

    with ExitStack() as stack:
        if combo["broker"] == "redis":
            broker = stack.enter_context(redis_server())
            run([venv_python, "-c", FLUSH_REDIS, broker], project, env)
            stack.callback(run, [venv_python, "-c", FLUSH_REDIS, broker], project, env)
        elif combo["broker"] == "rabbitmq":
            broker = RABBITMQ_URL
            queues = [package, f"{package}.files", seed_queue]
            delete = [venv_python, "-c", DELETE_AMQP_QUEUES, broker, *queues]
            stack.callback(run, delete, project, env)
        else:
            broker = stack.enter_context(moto_server())
        if combo["database"] == "postgresql":
            databases = Databases()
            stack.callback(databases.drop_all)
            database = databases.create(package)
        else:
            database = f"sqlite:///{work / 'project.db'}"
        mailbox = Mailbox(work)
        stack.callback(mailbox.stop)

        bin_path = str(project / ".venv" / "bin")
        common = env | {
            "BROKER_URL": broker,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(mailbox.port),
            "PATH": f"{bin_path}{os.pathsep}{env['PATH']}",
            "VIRTUAL_ENV": str(project / ".venv"),
        }
        project_env = common | {"DATABASE_URL": database, "UPLOAD_DIR": str(work / "uploads")}
        entries = procfile(project)
        run(["/bin/sh", "-c", entries["release"]], project, project_env)
        project_side = {n: c for n, c in entries.items() if n == "web" or "worker" in n}

        bare_env = common | {"SEED_QUEUE": seed_queue, "PYTHONPATH": str(SEED)}
        sides = {
            "project": (project_side, project, project_env),
            "bare": (seed_commands(combo), SEED, bare_env),
        }
        order = [first, *(side for side in sides if side != first)]
        results: dict[str, Any] = {}
        for side in order:
            commands, cwd, side_env = sides[side]
            try:
                results[side] = measure(side, commands, cwd, side_env, mailbox, work / side)
            except Exception as exc:
                results[side] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"    {side}: {json.dumps(rounded(results[side]))}", flush=True)
    if any("error" in result for result in results.values()):
        print(f"    logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return results


def cell(project: dict[str, Any], bare: dict[str, Any], key: str, digits: int = 1) -> str:
    p, b = project.get(key), bare.get(key)
    if p is None or b is None:
        return "n/a"
    return f"{p:.{digits}f} (bare {b:.{digits}f}): {p / b:.2f}x" if b else f"{p:.{digits}f}"


def losses(result: dict[str, Any]) -> str:
    pending = f", {result['pending']} pending" if result["pending"] else ""
    return f"{result['lost']}, {result['duplicated']}{pending}"


def rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    return round(value, 1) if isinstance(value, float) else value


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| combination | email p50 ms | email p99 ms | POST /signups accepted/s | "
        "emails delivered/s | peak RSS web MB | peak RSS worker MB | lost, duplicated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, sides in results.items():
        project, bare = sides.get("project", {}), sides.get("bare", {})
        failed = [f"{side}: {r['error']}" for side, r in sides.items() if "error" in r]
        if failed:
            lines.append(f"| {name} | failed: {'; '.join(failed)} |||||||")
            continue
        rss = {
            kind: cell(
                {"mb": project["rss_mb"][kind]}, {"mb": bare["rss_mb"][kind]}, "mb", digits=0
            )
            for kind in ("web", "worker")
        }
        others = [f"{n} {mb:.0f}" for n, mb in project["rss_mb"].items() if n not in rss]
        extra = f" ({', '.join(others)})" if others else ""
        lines.append(
            f"| {name} | {cell(project, bare, 'p50')} | {cell(project, bare, 'p99')} "
            f"| {cell(project, bare, 'accepted_per_s', 0)} "
            f"| {cell(project, bare, 'delivered_per_s', 0)} "
            f"| {rss['web']} | {rss['worker']}{extra} "
            f"| {losses(project)} (bare {losses(bare)}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("combinations", nargs="*", help="e.g. celery-fastapi-redis-sqlite")
    parser.add_argument("--template", type=Path, default=ROOT, help="the template to bake")
    parser.add_argument("--python", default="3.12", help="the projects' Python version")
    args = parser.parse_args()
    combos = plan(args.combinations)
    # Stopped (even when started in the background, where SIGINT is ignored): clean up first.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(f"stopped by signal {signum}"))
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    started = time.monotonic()
    results = {}
    for index, combo in enumerate(combos):
        name = combination_name(combo)
        began = time.monotonic()
        print(f"{name}:", flush=True)
        first = "project" if index % 2 == 0 else "bare"
        try:
            results[name] = bench(combo, args.template.resolve(), args.python, first)
        except Exception as exc:
            results[name] = {"project": {"error": f"{type(exc).__name__}: {exc}"}}
        print(f"    {time.monotonic() - began:.0f} s", flush=True)
    print(
        f"\n{len(combos)} combinations in {(time.monotonic() - started) / 60:.1f} min, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n"
    )
    print(table(results))


if __name__ == "__main__":
    main()
