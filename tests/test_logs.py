"""The command line's logs: third-party request lines at DEBUG, ingest's own lines at INFO."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from smartcity.logs import demote_request_logs


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/write"
    server.shutdown()
    server.server_close()


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("httpx", "httpcore"))]


def test_http_request_lines_are_debug_only(url: str, caplog: pytest.LogCaptureFixture) -> None:
    demote_request_logs()
    caplog.set_level(logging.INFO)
    httpx.get(url)
    logging.getLogger("ingest.service").info("ingest: 3120 msg/s")
    assert _request_lines(caplog) == []
    assert [r.getMessage() for r in caplog.records] == ["ingest: 3120 msg/s"]

    caplog.clear()
    caplog.set_level(logging.DEBUG)
    httpx.get(url)
    lines = [r for r in _request_lines(caplog) if r.name == "httpx"]
    assert lines and {r.levelname for r in lines} == {"DEBUG"}
    assert "HTTP Request: GET" in lines[0].getMessage()
