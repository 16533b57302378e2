"""The uploaded file, read out of a multipart/form-data body while the body arrives.

Nothing is spooled: the file's bytes go from the connection to `Uploads.store` a chunk at a time,
and the body is read no further than the upload limit plus `api.MULTIPART_OVERHEAD`, whatever the
client declared (a chunked body, or a Content-Length smaller than the body it sends).
"""

from collections.abc import Iterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from . import api
from .api import Refused
from .files import UploadTooLarge

FIELD = b"file"
NO_FILE = "send the file as the multipart form field 'file'"


class FilePart:
    """The form field `file`: the client's name and content type for it, and its bytes (`read`).

    Made from the body's chunks and its Content-Type; it reads the body up to the field's first
    bytes, and refuses (`Refused`: 413, 422 or 400) a body that is too large, has no such field,
    is malformed or ends before the field does.
    """

    def __init__(self, chunks: Iterator[bytes], content_type: str, limit: int) -> None:
        kind, options = parse_options_header(content_type)
        if kind != b"multipart/form-data" or not options.get(b"boundary"):
            raise Refused(422, NO_FILE)
        self.filename = ""
        self.content_type = "application/octet-stream"
        self._chunks, self._limit, self._received = chunks, limit, 0
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._data: list[bytes] = []
        self._in_file = self._found = self._ended = False
        self._parser = MultipartParser(
            options[b"boundary"],
            {
                "on_part_begin": self._headers.clear,
                "on_header_field": lambda data, start, end: self._add(0, data[start:end]),
                "on_header_value": lambda data, start, end: self._add(1, data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )
        while not self._found:
            if not self._feed():
                raise Refused(422, NO_FILE)

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes of the file (all that arrived, if -1); b"" once it has ended."""
        while not self._data and not self._ended:
            if not self._feed():
                raise Refused(400, "the body ended before the file did")
        data = b"".join(self._data)
        if 0 <= size < len(data):
            data, rest = data[:size], data[size:]
            self._data = [rest]
        else:
            self._data = []
        return data

    def _feed(self) -> bool:
        """Parse the body's next chunk; False at its end."""
        chunk = next(self._chunks, b"")
        if not chunk:
            return False
        self._received += len(chunk)
        if self._received > self._limit + api.MULTIPART_OVERHEAD:
            raise Refused(413, str(UploadTooLarge(self._limit)))
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise Refused(400, "the multipart body is malformed") from exc
        return True

    def _add(self, index: int, data: bytes) -> None:
        self._header[index] += data

    def _header_end(self) -> None:
        name, value = self._header
        self._headers[name.lower()] = value
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get(b"content-disposition"))
        if self._found or disposition.get(b"name") != FIELD or b"filename" not in disposition:
            return
        self._found = self._in_file = True
        self.filename = disposition[b"filename"].decode("utf-8", "replace")
        if content_type := self._headers.get(b"content-type"):
            self.content_type = content_type.decode("latin-1")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._data.append(data[start:end])

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file, self._ended = False, True
