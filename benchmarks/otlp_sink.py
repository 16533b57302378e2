"""An OTLP/HTTP receiver that accepts every span batch and counts them, for the benchmark.

With `--otlp` the project's processes export their spans to it, so that the run measures tracing
switched on with an exporter, and the counts prove the spans were sent. It answers 200 with an
empty ExportTraceServiceResponse (an empty protobuf message) to each POST to /v1/traces, at once,
and keeps nothing but the number of requests and of bytes.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class OtlpSink:
    """The receiver, on a free loopback port, served by threads of this process until closed."""

    def __init__(self) -> None:
        self.batches = 0
        self.bytes = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the exporter keeps its connection

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                found = self.path.split("?")[0] == "/v1/traces"
                if found:
                    with sink._lock:
                        sink.batches += 1
                        sink.bytes += len(body)
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"span_batches": self.batches, "span_bytes": self.bytes}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "OtlpSink":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
