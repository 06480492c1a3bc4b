"""A real HTTP server on 127.0.0.1 for download tests, with fault injection.

Serves ``files`` (path → bytes) with ``Content-Length``, ``ETag`` and byte ``Range`` support.
Faults are queued per path and consumed one request at a time, so "500 then success" is
``server.fail(path, 500)`` followed by the normal file.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    """One injected behaviour for one request."""

    status: int | None = None          # answer with this status and a short body
    drop_after: int | None = None      # send this many body bytes, then close the connection
    delay: float = 0.0                 # sleep before answering
    body: bytes | None = None          # answer 200 with this body instead (e.g. an HTML error page)
    content_type: str | None = None


@dataclass
class FileServer:
    files: dict[str, bytes] = field(default_factory=dict)
    latency: float = 0.0                # added to every request
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)

    def __post_init__(self) -> None:
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, path: str, status: int | None = None, **kwargs) -> None:
        """Queue a fault for the next request of ``path``."""
        with self._lock:
            self._faults[path].append(Fault(status=status, **kwargs))

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    def __enter__(self) -> "FileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Without this every keep-alive response stalls ~40 ms (Nagle + the client's delayed ACK).
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._answer(head=True)

            def do_GET(self) -> None:
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append((path, self.headers.get("Range")))
                if server.latency:
                    time.sleep(server.latency)
                fault = server._next_fault(path)
                if fault and fault.delay:
                    time.sleep(fault.delay)
                if fault and fault.status:
                    return self._simple(fault.status, f"injected {fault.status}\n".encode(), head)
                if fault and fault.body is not None:
                    return self._simple(200, fault.body, head, fault.content_type or "text/html")
                data = server.files.get(path)
                if data is None:
                    return self._simple(404, b"not found\n", head)
                start, status = self._range_start(len(data))
                if start is None:
                    return self._simple(416, b"bad range\n", head, extra={"Content-Range": f"bytes */{len(data)}"})
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", '"' + hashlib.md5(data).hexdigest() + '"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                if fault and fault.drop_after is not None:
                    self.wfile.write(body[: fault.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _range_start(self, size: int) -> tuple[int | None, int]:
                header = self.headers.get("Range")
                if not header or not header.startswith("bytes="):
                    return 0, 200
                first = header[len("bytes="):].split("-", 1)[0]
                start = int(first or 0)
                return (start, 206) if start < size else (None, 416)

            def _simple(self, status: int, body: bytes, head: bool, ctype: str = "text/plain",
                        extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        return Handler
