"""An embedded MQTT broker (amqtt) for the demo and for machines without Mosquitto.

amqtt runs on asyncio; the platform's MQTT clients (paho) are synchronous. ``EmbeddedBroker``
runs amqtt's event loop in a background thread, so synchronous code can start and stop it::

    with EmbeddedBroker(port=0) as broker:      # port 0: any free port
        client.connect(broker.host, broker.port)

Protocol: amqtt 0.12 speaks **MQTT 3.1.1 only**. It refuses an MQTT 5 CONNECT (CONNACK
"unacceptable protocol version"), so clients connect to it with ``MQTTv311``: no shared
subscriptions (``$share/...``) and no session expiry interval. QoS 0, 1 and 2, retained
messages and clean/persistent (``clean_session=False``) 3.1.1 sessions work. It is meant for the
demo and tests, not production: Mosquitto is.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import TracebackType
from typing import Any

from paho.mqtt.enums import MQTTProtocolVersion

PROTOCOL = MQTTProtocolVersion.MQTTv311
"""The MQTT protocol version the embedded broker speaks (paho's constant)."""

logger = logging.getLogger(__name__)


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not start or stop; the message says why."""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """An amqtt MQTT 3.1.1 broker on ``host:port``, anonymous access, run in a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        """``port=0`` picks a free port; read it back from ``.port``."""
        self.host = host
        self.port = port or _free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        # amqtt (and its state machine library) log every connection step at INFO, and warn about
        # PUBACKs of deliveries it already settled when a session closes: noise for a demo.
        for name, level in (
            ("amqtt", logging.WARNING),
            ("transitions", logging.WARNING),
            ("amqtt.mqtt.protocol.handler", logging.ERROR),
        ):
            chatty = logging.getLogger(name)
            if chatty.level == logging.NOTSET:
                chatty.setLevel(level)

    @property
    def running(self) -> bool:
        """Whether the broker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def config(self) -> dict[str, Any]:
        """amqtt's configuration: one TCP listener, anonymous access, no $SYS topics."""
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker; return once it accepts TCP connections."""
        if self.running:
            return
        self._started.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"amqtt-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise EmbeddedBrokerError(f"embedded broker did not start within {timeout:.0f}s")
        if self._error is not None:
            raise EmbeddedBrokerError(
                f"embedded broker cannot listen on {self.host}:{self.port}: {self._error}"
            ) from self._error
        # Broker.start() returns once its listener is bound: connections are accepted from now.
        logger.info("embedded MQTT broker (amqtt, MQTT 3.1.1) listening on %s:%d", self.host, self.port)

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            self._broker = Broker(self.config(), loop=loop)
            await self._broker.start()

        try:
            loop.run_until_complete(boot())
        except BaseException as exc:  # reported to start() in the caller's thread
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def stop(self, timeout: float = 15.0) -> None:
        """Disconnect clients, close the listener and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        if self._broker is not None:
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop)
            try:
                future.result(timeout)
            except Exception as exc:  # still stop the loop: a failed shutdown must not hang us
                logger.warning("embedded broker shutdown: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._thread = None
        self._broker = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
