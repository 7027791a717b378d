"""A reference email-webhook receiver: verifies the signature, drops duplicates by
``Idempotency-Key``, and hands each message to a callback (the demo prints them).

It is what a relay in front of a mail service has to do, in forty lines; the demo runs it as
its "mailbox" (``smartcity alerts receive``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, SignatureError, verify

log = logging.getLogger(__name__)

MessageHandler = Callable[[dict[str, Any]], None]


class SignedWebhookReceiver:
    """An HTTP server that accepts signed alert messages on any path."""

    def __init__(
        self,
        secrets: list[str],
        on_message: MessageHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tolerance_s: float = 300,
        remember: int = 10_000,
    ) -> None:
        if not secrets or not all(secrets):
            raise ValueError("a webhook receiver needs at least one non-empty secret")
        self.secrets = secrets
        self.on_message = on_message
        self.tolerance_s = tolerance_s
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (useful with ``port=0``)."""
        return int(self._server.server_address[1])

    def _accept(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        # One receiver may serve several communes, each with its own secret.
        errors = []
        for secret in self.secrets:
            try:
                verify(
                    secret, headers.get(SIGNATURE_HEADER), body, now=time.time(), tolerance_s=self.tolerance_s
                )
                break
            except SignatureError as exc:
                errors.append(str(exc))
        else:
            log.warning("refused a webhook request: %s", errors[0])
            return 401, errors[0]
        key = headers.get(IDEMPOTENCY_HEADER, "")
        with self._lock:
            if key in self._seen:
                return 200, "duplicate ignored"
            self._seen[key] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        try:
            message = json.loads(body)
        except ValueError:
            return 400, "body is not JSON"
        self.on_message(message)
        return 200, "accepted"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                # HTTP header names are case-insensitive: look them up as the sender wrote them.
                headers = {
                    name: self.headers.get(name, "") for name in (SIGNATURE_HEADER, IDEMPOTENCY_HEADER)
                }
                status, text = receiver._accept(headers, body)
                payload = json.dumps({"status": text}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug(format, *args)

        return Handler

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        """Serve in this thread until ``stop`` is called from another."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()


def print_message(message: dict[str, Any]) -> None:
    """Print a received message as a mail client would show it."""
    to = ", ".join(message.get("to", []))
    print(
        f"\n=== {message.get('type')} to {to}\nSubject: {message.get('subject')}\n\n{message.get('text')}",
        flush=True,
    )
