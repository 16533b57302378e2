"""How many jobs one worker process runs per second.

    BROKER_URL=... uv run python benchmarks/throughput.py [signups]

It queues welcome emails (500 by default) through the web process, then starts one worker
process as the Procfile starts it, with an SMTP server here that accepts every email, and prints
the rate from the job records: the jobs done between the first one's start and the last one's
end. The broker's queue and the database (a new SQLite file unless DATABASE_URL says otherwise)
should be the benchmark's own.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]


class Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(process: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    procfile = (ROOT / "Procfile").read_text().splitlines()
    command = next(line.partition(":")[2] for line in procfile if line.startswith(f"{process}:"))
    return subprocess.Popen(
        ["/bin/sh", "-c", f"exec {command.strip()}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def post_signups(port: int, count: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    for n in range(count):
        body = json.dumps({"email": f"bench-{n}@example.com", "name": "Ada"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/signups",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202


def main(count: int) -> None:
    smtp_port, web_port = free_port(), free_port()
    database = Path(tempfile.mkdtemp()) / "throughput.db"
    env = os.environ | {
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{database}"),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "PORT": str(web_port),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    os.environ.update(env)
    from {{ cookiecutter.package_name }} import database as db  # after the settings above
    from {{ cookiecutter.package_name }}.records import Job, JobStatus

    subprocess.run(["alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True)
    smtp = Controller(Accept(), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    web = start("web", env)
    try:
        post_signups(web_port, count)
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait()
    print(f"queued {count} welcome emails; starting one worker process")
    worker = start("worker", env)
    try:
        deadline = time.monotonic() + 600
        while True:
            with db.session() as session:
                succeeded = select(func.count()).where(Job.status == JobStatus.SUCCEEDED)
                done = session.scalar(succeeded) or 0
                first, last = session.execute(
                    select(func.min(Job.started_at), func.max(Job.finished_at))
                ).one()
            if done >= count or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait()
        smtp.stop()
    if first is None or last is None:
        raise SystemExit("no job ran")
    seconds = (last - first).total_seconds()
    print(f"{done} jobs in {seconds:.1f}s: {done / seconds:.0f} jobs per second")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
