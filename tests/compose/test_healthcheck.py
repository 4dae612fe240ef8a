"""ops.healthcheck, the containers' healthcheck, against a real local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ops.broker import free_port
from ops.healthcheck import check, main

PAGES = {
    "/metrics": (200, "# HELP x\nexchange_settlement_ready 1.0\nother 2.0\n"),
    "/ready": (503, '{"success": false}'),
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = PAGES.get(self.path, (404, "no"))
        data = body.encode()
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_check_when_the_page_answers_with_the_expected_line_is_healthy(base: str) -> None:
    assert check(f"{base}/metrics") is None
    assert check(f"{base}/metrics", "exchange_settlement_ready 1.0") is None
    assert main([f"{base}/metrics", "--expect", "exchange_settlement_ready 1.0"]) == 0


def test_check_when_the_expected_line_is_missing_is_unhealthy(
    base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "no line" in str(check(f"{base}/metrics", "exchange_settlement_ready 0.0"))
    # a prefix of a line is not the line
    assert check(f"{base}/metrics", "exchange_settlement_ready 1") is not None
    assert main([f"{base}/metrics", "--expect", "exchange_settlement_ready 0.0"]) == 1
    assert capsys.readouterr().err.startswith("unhealthy: ")


def test_check_when_the_page_answers_an_error_status_is_unhealthy(base: str) -> None:
    assert check(f"{base}/ready") == f"{base}/ready: HTTP 503"
    assert main([f"{base}/nope"]) == 1


def test_check_when_nothing_listens_is_unhealthy() -> None:
    assert check(f"http://127.0.0.1:{free_port()}/metrics", timeout_s=2) is not None
