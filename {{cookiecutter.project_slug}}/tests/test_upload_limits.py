"""Uploads are capped while they stream, whatever the client declares, and a full disk is an
answer, not a crash; either way nothing is left behind."""

import errno
import http.client
import io
import json
import os
import select
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from {{ cookiecutter.package_name }} import api as api_models
from {{ cookiecutter.package_name }} import files, forms
from {{ cookiecutter.package_name }}.api import Refused
from {{ cookiecutter.package_name }}.settings import get_settings

from tests.conftest import Api, count_rows, stored_files
from tests.processes import web_process
from tests.test_logs import capture, logged

# isort: split
from {{ cookiecutter.package_name }} import logs

LIMIT = 1024 * 1024
MIB = b"x" * LIMIT
BOUNDARY = uuid.uuid4().hex
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
HEAD = (
    f"--{BOUNDARY}\r\n"
    'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()


@pytest.fixture(scope="module")
def web(migrated_database: None) -> Iterator[tuple[str, Path, Path]]:
    """The Procfile's web process with a 1 MiB limit: its address, upload and temporary dirs."""
    uploads = Path(tempfile.mkdtemp(prefix="uploads-"))
    temporary = Path(tempfile.mkdtemp(prefix="tmp-"))
    with web_process(
        MAX_UPLOAD_BYTES=str(LIMIT), UPLOAD_DIR=str(uploads), TMPDIR=str(temporary)
    ) as base:
        yield base, uploads, temporary


def exchange(base: str, headers: dict[str, str], body: Iterator[bytes]) -> tuple[int, Any, int]:
    """POST /files over a socket as a client that streams: send the body until the server
    answers or stops reading, then read the answer. The status, JSON body, and bytes sent."""
    host, port = base.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        lines = ["POST /files HTTP/1.1", f"Host: {host}", f"Content-Type: {CONTENT_TYPE}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            for chunk in body:
                if select.select([sock], [], [], 0)[0]:
                    break  # an answer came
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server stopped reading: its answer is waiting
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(response.read()), sent


def endless_chunked() -> Iterator[bytes]:
    """A chunked file that goes on (up to 512 MiB, should the server read it all)."""
    yield b"%x\r\n%s\r\n" % (len(HEAD), HEAD)
    for _ in range(512):
        yield b"%x\r\n%s\r\n" % (len(MIB), MIB)


@pytest.mark.parametrize("declared", ["chunked", "honest length"])
def test_an_upload_over_the_limit_is_refused_as_it_streams(
    web: tuple[str, Path, Path], declared: str
) -> None:
    base, uploads, temporary = web
    if declared == "chunked":
        status, answer, sent = exchange(base, {"Transfer-Encoding": "chunked"}, endless_chunked())
    else:
        body = [HEAD, *[MIB] * 16, f"\r\n--{BOUNDARY}--\r\n".encode()]
        length = str(sum(map(len, body)))
        status, answer, sent = exchange(base, {"Content-Length": length}, iter(body))

    assert status == 413, answer
    assert sent < 64 * len(MIB)  # it answered at the limit, long before the end
    assert f"limit of {LIMIT} bytes" in answer["error"]
    assert list(uploads.iterdir()) == []
    assert list(temporary.iterdir()) == []


def test_a_body_is_read_no_further_than_its_declared_length(web: tuple[str, Path, Path]) -> None:
    """A Content-Length shorter than the body: the server reads what was declared, no more, and
    the file it cut short is refused."""
    base, uploads, temporary = web
    headers = {"Content-Length": str(len(HEAD) + 1000)}

    status, answer, _ = exchange(base, headers, iter([HEAD + MIB[:1000]]))

    assert status == 400, answer
    assert "ended before the file did" in answer["error"]
    assert list(uploads.iterdir()) == []
    assert list(temporary.iterdir()) == []


def test_the_form_stops_reading_at_the_limit(tmp_path: Path) -> None:
    read = 0

    def body() -> Iterator[bytes]:
        nonlocal read
        yield HEAD
        while True:  # a client that never stops
            read += len(MIB)
            yield MIB

    form = forms.FilePart(body(), CONTENT_TYPE, LIMIT)
    with pytest.raises(Refused) as refused:
        files.Uploads(tmp_path).store(form, form.filename, form.content_type, LIMIT)

    assert refused.value.status == 413
    assert read <= LIMIT + api_models.MULTIPART_OVERHEAD + len(MIB)
    assert list(tmp_path.iterdir()) == []


class FullDisk:
    """A file on a disk that has `room` bytes left."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.file.name)
        self.room -= len(data)
        return int(self.file.write(data))

    def __enter__(self) -> "FullDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def test_a_full_disk_is_a_507_that_leaves_nothing_and_names_the_directory(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = Path.open

    def open_on_a_full_disk(path: Path, *args: Any, **kwargs: Any) -> Any:
        file = opened(path, *args, **kwargs)
        return FullDisk(file, room=100_000) if path.suffix == ".part" else file

    before_files, before_rows = stored_files(), count_rows()
    monkeypatch.setattr(Path, "open", open_on_a_full_disk)
    stream = capture("console")
    try:
        status, body = api.upload("/files", "file", "big.csv", b"a,b\n" * 100_000, "text/csv")
        lines = logged(stream, "no room to store uploads")
    finally:
        logs.configure()

    assert status == 507, body
    assert "no room" in body["error"]
    assert str(get_settings().upload_dir.resolve()) in lines[0]
    assert stored_files() == before_files
    assert count_rows() == before_rows


def test_a_full_disk_while_thumbnailing_is_retried_and_leaves_no_partial_file(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "navy").save(buffer, format="PNG")
    save = Image.Image.save
    full = [True]

    def save_on_a_full_disk(image: Image.Image, target: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(target, Path) and full:
            full.pop()
            target.write_bytes(b"half a thumbnail")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        save(image, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_on_a_full_disk)
    _, body = api.upload("/files", "file", "photo.png", buffer.getvalue(), "image/png")

    job = api.wait_for_job(body["job_id"])

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert not full
    assert not [name for name in stored_files() if name.endswith(".part")]
