"""Store uploaded files under generated names, and analyse them."""

import csv
import errno
import hashlib
import io
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

CHUNK_BYTES = 1024 * 1024
THUMBNAIL_SIZE = (256, 256)
_KEY = re.compile(r"[0-9a-f]{32}")
# What `store` and `analyse` write: the original, its thumbnail, and either being written.
_STORED_NAME = re.compile(
    r"(?P<key>[0-9a-f]{32})(\.thumbnail\.png|(?P<partial>(\.thumbnail)?\.part))?"
)
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}
# A write that fails for one of these fails for want of room, not because of the file.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}

Progress = Callable[[float], None]


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the limit of {limit} bytes")
        self.limit = limit


class UnreadableFile(Exception):
    """The file claims a format it does not have."""


class StorageFull(Exception):
    """The upload directory's disk (or quota) has no room left: a state that passes once room
    is made, not a fault of the file."""

    def __init__(self, directory: Path) -> None:
        super().__init__(f"no room left in {directory}")
        self.directory = directory


class Source(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class StoredFile:
    key: str  # the generated name under UPLOAD_DIR
    filename: str  # the client's name for it: data, never a path
    content_type: str
    size: int

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)


class Uploads:
    """The uploads stored in one directory, under names we generate."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()

    def path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a file key: {key!r}")
        return self.directory / key

    def thumbnail(self, key: str) -> Path:
        return self.path(key).with_name(f"{key}.thumbnail.png")

    def store(self, stream: Source, filename: str, content_type: str, max_bytes: int) -> StoredFile:
        """Copy `stream` to a new file chunk by chunk; nothing is left behind if it is too large,
        if reading it fails, or if the disk is full (`StorageFull`)."""
        key = uuid.uuid4().hex
        target = self.path(key)
        partial = target.with_name(f"{key}.part")
        size = 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with partial.open("xb") as out:
                while chunk := stream.read(CHUNK_BYTES):
                    size += len(chunk)
                    if size > max_bytes:
                        raise UploadTooLarge(max_bytes)
                    out.write(chunk)
            partial.rename(target)
        except OSError as exc:
            if exc.errno in _NO_ROOM:
                raise StorageFull(self.directory) from exc
            raise
        finally:
            partial.unlink(missing_ok=True)
        return StoredFile(key, filename[:255], content_type, size)

    def sha256(self, key: str) -> str:
        with self.path(key).open("rb") as stored:
            return hashlib.file_digest(stored, "sha256").hexdigest()

    def delete(self, key: str) -> None:
        """Remove a stored file and everything derived from it."""
        for path in (self.path(key), self.thumbnail(key)):
            path.unlink(missing_ok=True)

    def written_before(self, cutoff: datetime) -> Iterator[tuple[str, Path, bool]]:
        """Each file we stored and last wrote before `cutoff`: its key, its path, and whether it
        is partial (a write that never finished)."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            name = _STORED_NAME.fullmatch(entry.name)
            if name is None or not entry.is_file(follow_symlinks=False):
                continue
            try:
                written = entry.stat().st_mtime
            except FileNotFoundError:
                continue  # deleted meanwhile
            if written < cutoff.timestamp():
                yield name["key"], Path(entry.path), name["partial"] is not None

    def analyse(self, stored: StoredFile, progress: Progress) -> dict[str, Any]:
        """Checksum every file; count a CSV's rows and columns; measure and thumbnail an image."""
        path = self.path(stored.key)
        size = path.stat().st_size
        digest = hashlib.sha256()
        with path.open("rb") as source:
            done = 0
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
                done += len(chunk)
                progress(0.5 * done / size)
        result: dict[str, Any] = {"sha256": digest.hexdigest(), "size": size}
        if image := _image_summary(path, self.thumbnail(stored.key)):
            result["image"] = image
        elif _looks_like_csv(stored):
            result["csv"] = _csv_summary(path, size, progress)
        progress(1.0)
        return result


def _looks_like_csv(stored: StoredFile) -> bool:
    return stored.filename.lower().endswith(".csv") or stored.content_type.startswith("text/csv")


def _csv_summary(path: Path, size: int, progress: Progress) -> dict[str, Any]:
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text)
        try:
            columns = next(reader, [])
            rows = 0
            for rows, _ in enumerate(reader, start=1):
                if rows % 50_000 == 0:
                    progress(0.5 + 0.5 * raw.tell() / max(size, 1))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UnreadableFile(f"not a readable UTF-8 CSV file: {exc}") from exc
    return {"rows": rows, "columns": columns}


def _image_summary(path: Path, target: Path) -> dict[str, Any] | None:
    # Imported here: only the file worker needs Pillow, and it costs every other process memory.
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
    except UnidentifiedImageError:
        return None
    partial = target.with_name(f"{path.name}.thumbnail.part")
    with image:
        summary = {"format": image.format, "width": image.width, "height": image.height}
        try:
            image.draft("RGB", THUMBNAIL_SIZE)  # lets JPEG decode at a fraction of its size
            image.thumbnail(THUMBNAIL_SIZE)
            thumbnail = image if image.mode in _PNG_MODES else image.convert("RGBA")
            thumbnail.save(partial, format="PNG")
        except (OSError, Image.DecompressionBombError) as exc:
            partial.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
                raise StorageFull(target.parent) from exc
            raise UnreadableFile(f"cannot decode the image: {exc}") from exc
    partial.rename(target)
    summary["thumbnail"] = target.name
    return summary
