"""POST /files stores the upload and a worker analyses it."""

import hashlib
import io

from PIL import Image

from {{ cookiecutter.package_name }}.settings import get_settings

from tests.conftest import Api, count_rows, stored_files


def test_csv_is_counted(api: Api) -> None:
    rows = 100_000  # several megabytes, streamed in chunks
    content = ("id,name,score\n" + "".join(f"{i},name {i},{i % 7}\n" for i in range(rows))).encode()

    status, body = api.upload("/files", "file", "scores.csv", content, "text/csv")
    assert status == 202
    job = api.wait_for_job(body["job_id"])

    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0
    assert job["result"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert job["result"]["size"] == len(content)
    assert job["result"]["csv"] == {"rows": rows, "columns": ["id", "name", "score"]}


def test_image_is_measured_and_thumbnailed(api: Api) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), "teal").save(buffer, format="JPEG")

    status, body = api.upload("/files", "file", "photo.jpg", buffer.getvalue(), "image/jpeg")
    assert status == 202
    job = api.wait_for_job(body["job_id"])

    assert job["status"] == "succeeded", job
    image = job["result"]["image"]
    assert (image["format"], image["width"], image["height"]) == ("JPEG", 640, 480)
    with Image.open(get_settings().upload_dir / image["thumbnail"]) as thumbnail:
        assert max(thumbnail.size) == 256
        assert thumbnail.size == (256, 192)


def test_other_files_get_a_checksum(api: Api) -> None:
    content = bytes(range(256)) * 100
    _, body = api.upload("/files", "file", "blob.bin", content, "application/octet-stream")
    job = api.wait_for_job(body["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"] == {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}


def test_a_broken_csv_fails_with_the_reason(api: Api) -> None:
    _, body = api.upload("/files", "file", "broken.csv", b"a,b\n\xff\xfe\x00bad", "text/csv")
    job = api.wait_for_job(body["job_id"])
    assert job["status"] == "failed"
    assert "CSV" in job["error"]


def test_client_filename_is_data_not_a_path(api: Api) -> None:
    upload_dir = get_settings().upload_dir.resolve()
    before = stored_files()

    status, body = api.upload("/files", "file", "../../etc/passwd", b"root:x:0:0", "text/plain")
    assert status == 202
    job = api.wait_for_job(body["job_id"])

    assert job["status"] == "succeeded", job
    (new_file,) = stored_files() - before
    assert (upload_dir / new_file).resolve().parent == upload_dir
    assert "passwd" not in new_file


def test_upload_over_the_limit_is_413_and_leaves_nothing(api: Api) -> None:
    before_files, before_rows = stored_files(), count_rows()
    too_big = b"x" * (get_settings().max_upload_bytes + 1)

    status, body = api.upload("/files", "file", "big.bin", too_big, "application/octet-stream")

    assert status == 413
    assert "limit" in body["error"]
    assert stored_files() == before_files
    assert count_rows() == before_rows


def test_missing_file_field_is_422(api: Api) -> None:
    before_rows = count_rows()
    status, body = api.upload("/files", "document", "a.csv", b"a,b\n1,2\n", "text/csv")
    assert status == 422
    assert "'file'" in body["error"]
    status, body = api.post_json("/files", {"file": "not multipart"})
    assert status in {400, 422}
    assert count_rows() == before_rows
