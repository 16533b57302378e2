"""How fast files are uploaded and analysed, and how little memory that takes.

    uv run python benchmarks/files.py [megabytes]

It streams a generated CSV (200 MB by default) to the web process, started as the Procfile starts
it but with no broker (the upload is stored, then refused with 503 and removed: nothing is
queued), and prints the time and the web process's peak memory. Then it analyses the same file as
a worker does and prints the rate and this process's peak memory.
"""

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def make_csv(path: Path, megabytes: int) -> None:
    row = b"12345,some name,3.14159,2026-11-25T12:00:00Z\n"
    with path.open("wb") as out:
        out.write(b"id,name,score,when\n")
        for _ in range(megabytes):
            out.write(row * (MB // len(row)))


def multipart(path: Path, boundary: str) -> tuple[Iterator[bytes], int]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"'
        "\r\nContent-Type: text/csv\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def parts() -> Iterator[bytes]:
        yield head
        with path.open("rb") as source:
            while chunk := source.read(MB):
                yield chunk
        yield tail

    return parts(), len(head) + path.stat().st_size + len(tail)


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def upload(source: Path, env: dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = env | {"PORT": str(port)}
    procfile = (ROOT / "Procfile").read_text().splitlines()
    command = next(line.partition(":")[2].strip() for line in procfile if line.startswith("web:"))
    web = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], cwd=ROOT, env=env)
    try:
        wait_for_port(port)
        boundary = uuid.uuid4().hex
        body, length = multipart(source, boundary)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(length),
        }
        request = urllib.request.Request(f"http://127.0.0.1:{port}/files", body, headers)
        started = time.perf_counter()
        try:
            urllib.request.urlopen(request, timeout=600).close()
            status = 202
        except urllib.error.HTTPError as answer:
            status = answer.code
        elapsed = time.perf_counter() - started
        size = source.stat().st_size / MB
        rate = size / elapsed
        print(
            f"upload:   {size:.0f} MB in {elapsed:.1f} s ({rate:.0f} MB/s, HTTP {status}); "
            f"web process peak memory {peak_memory_mb(web.pid):.0f} MB"
        )
    finally:
        web.terminate()
        web.wait(timeout=30)


def analyse(source: Path, package: str) -> None:
    files = import_module(f"{package}.files")
    settings = import_module(f"{package}.settings")
    uploads = files.Uploads(settings.get_settings().upload_dir)
    size = source.stat().st_size
    with source.open("rb") as stream:
        stored = uploads.store(stream, source.name, "text/csv", size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    result = uploads.analyse(stored, lambda fraction: None)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"analysis: {size / MB:.0f} MB, {result['csv']['rows']} rows in {elapsed:.1f} s "
        f"({size / MB / elapsed:.0f} MB/s); peak memory {before:.0f} MB, then {after:.0f} MB"
    )
    uploads.delete(stored.key)


def main() -> None:
    megabytes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    work = Path(tempfile.mkdtemp(prefix="files-benchmark-"))
    source = work / "big.csv"
    make_csv(source, megabytes)
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{work / 'benchmark.db'}",
        "BROKER_URL": "{% if cookiecutter.broker == 'rabbitmq' %}amqp://guest:guest@127.0.0.1:9//{% elif cookiecutter.broker == 'sqs' %}sqs://x:y@127.0.0.1:9{% else %}redis://127.0.0.1:9/0{% endif %}",
        "UPLOAD_DIR": str(work / "uploads"),
        "MAX_UPLOAD_BYTES": str(2 * source.stat().st_size),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    subprocess.run(["alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True)
    upload(source, env)
    os.environ.update(env)
    analyse(source, "{{ cookiecutter.package_name }}")


if __name__ == "__main__":
    main()
