"""The MQTT side of the ingestor: a persistent session (MQTT 3.1.1 or 5) with manual acknowledgement.

paho-mqtt's network thread only wraps each message and puts it on the writer's inbox; the
writer acknowledges later, from its own thread, once the message is durable. paho queues the
PUBACK on a thread-safe deque and wakes its loop, so acknowledging from another thread is safe.

An acknowledgement is only meaningful on the connection that delivered the message: after a
reconnection the broker delivers unacknowledged messages again and may reuse packet ids, so
acks of an older connection are dropped (the message comes again, is stored again: harmless).
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import struct
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.batch import Ack, Message
from ingest.config import IngestSettings
from ingest.metrics import IngestMetrics
from ingest.writer import Inbox
from sensors.config import MqttSettings

log = logging.getLogger(__name__)

PUBACK = 0x40
_PUBACK = struct.Struct("!BBH")
"""A PUBACK packet: type, remaining length 2, packet id (success, no reason code or properties)."""

_new_message = partial(tuple.__new__, Message)
"""``Message`` from a tuple without the Python-level ``__new__`` of a NamedTuple (per message)."""

READ_SIZE = 65536
"""Bytes asked of the kernel per read of the broker connection."""
BUFFERED_PACKETS_PER_PASS = 500
"""Packets paho's loop handles from the buffer before it writes and checks its keep-alive."""

OUTGOING_QUEUE_LIMIT = 10_000
"""Dead-letter publications paho may queue while the broker is slow; beyond, the topic copy is
skipped (the dead-letter file always has the record)."""


class BufferedSocket:
    """The broker connection read through a buffer of its own.

    paho reads each packet with three or four ``recv`` calls (the type byte, the remaining
    length a byte at a time, the rest) and goes back to ``select`` after every packet. Served
    from a buffer filled by one large ``recv``, those calls cost no system call; ``pending``
    tells paho that bytes wait in the buffer (the hook it has for TLS, whose buffer ``select``
    cannot see either), so it never waits on the socket while a packet is already here.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._position = 0

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes: from the buffer, else from one read of ``READ_SIZE``."""
        buffer, position = self._buffer, self._position
        if position >= len(buffer):
            # BlockingIOError, ssl errors and EOF (b"") reach paho as they are.
            buffer = bytes(self._sock.recv(max(size, READ_SIZE)))
            if len(buffer) <= size:
                return buffer
            self._buffer = buffer
            position = 0
        end = position + size
        self._position = end
        return buffer[position:end]

    @property
    def buffered(self) -> int:
        """Bytes in this buffer not yet read."""
        return len(self._buffer) - self._position

    def pending(self) -> int:
        """Bytes received and not yet read (with those of a TLS layer underneath)."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._position + int(inner)

    def send(self, data: bytes | bytearray) -> int:
        """Send on the connection (unbuffered)."""
        sent: int = self._sock.send(data)
        return sent

    def __getattr__(self, name: str) -> Any:
        # fileno (for select), setblocking, close...: the socket's own.
        return getattr(self._sock, name)


class BufferedClient(mqtt.Client):
    """paho's client, reading the connection through ``BufferedSocket`` and handling every
    packet already buffered before it goes back to ``select`` (once per read of the kernel
    rather than once per message)."""

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        if getattr(self, "_transport", "tcp") == "websockets":
            return sock
        return BufferedSocket(sock)

    _per_topic_callbacks = False

    def message_callback_add(self, sub: str, callback: Any) -> None:
        """paho's, noting that per-topic callbacks are in use."""
        self._per_topic_callbacks = True
        super().message_callback_add(sub, callback)

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # Without per-topic callbacks paho would still decode the topic and walk its topic
        # matcher for every message only to find none: call on_message directly.
        on_message = self.on_message
        if self._per_topic_callbacks or on_message is None:
            super()._handle_on_message(message)
            return
        with self._in_callback_mutex:
            try:
                on_message(self, self._userdata, message)
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read the packets already in the buffer, at most ``BUFFERED_PACKETS_PER_PASS``.

        The bound matters: a broker sending a backlog refills the buffer as fast as it empties,
        and paho only writes (acknowledgements, keep-alive pings) between two passes."""
        rc = super().loop_read(max_packets)
        reader = self._reader()
        for _ in range(BUFFERED_PACKETS_PER_PASS):
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or reader is None or reader.buffered <= 0:
                break
            rc = super().loop_read(max_packets)
            if self._reader() is not reader:  # the connection was closed or replaced
                break
        return rc

    def _reader(self) -> BufferedSocket | None:
        sock = self._sock
        return sock if isinstance(sock, BufferedSocket) else None


class MqttConsumer:
    """Subscribes with QoS 1 in a persistent session and feeds the writer's inbox."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        settings: IngestSettings,
        inbox: Inbox,
        metrics: IngestMetrics,
    ) -> None:
        self._mqtt = mqtt_settings
        self._settings = settings
        self._inbox = inbox
        self._metrics = metrics
        self._deadletter_prefix = settings.deadletter_topic + "/"
        self._queue_limit = settings.queue_max_messages
        self._generation = 0
        self._lock = threading.Lock()
        self._space = threading.Event()
        self._paused = False
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.subscribe_error: str | None = None
        # MQTT 3.1.1 with "clean session" off keeps the session (Mosquitto expires it after its
        # persistent_client_expiration) at half paho's cost per message; MQTT 5 adds session
        # expiry and the receive maximum. Without either, the inbox bound paces the broker
        # through TCP. See docs/ingest.md, "MQTT version".
        self._v5 = mqtt_settings.protocol == "5" and settings.protocol == "5"
        if mqtt_settings.protocol != "5" and settings.shared_group:
            raise ValueError(
                f"ingest.shared_group {settings.shared_group!r}: the broker (mqtt.protocol 3.1.1, such "
                "as the demo's embedded one) has no shared subscriptions"
            )
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else False,
            manual_ack=True,
        )
        if mqtt_settings.username:
            client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
        if mqtt_settings.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(OUTGOING_QUEUE_LIMIT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects on its own after a loss."""
        if not self._v5:
            self._client.connect_async(self._mqtt.host, self._mqtt.port, keepalive=self._mqtt.keepalive_s)
            self._client.loop_start()
            return
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._settings.session_expiry_s
        properties.ReceiveMaximum = self._settings.receive_maximum
        self._client.connect_async(
            self._mqtt.host,
            self._mqtt.port,
            keepalive=self._mqtt.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def pause(self) -> None:
        """Stop taking messages in (they stay unacknowledged: the broker delivers them again)."""
        self._paused = True
        self._space.set()

    def stop(self) -> None:
        """Send the acknowledgements still queued, disconnect (keeping the session), stop the loop."""
        # PUBACKs queued by the writer are ahead of the DISCONNECT in paho's outgoing queue.
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._connected.is_set()

    @property
    def subscribed(self) -> bool:
        """Whether the broker granted the subscription on the current connection."""
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Block until subscribed (or ``timeout``); True when subscribed."""
        return self._subscribed.wait(timeout)

    # --- acknowledgements and publications (writer thread) --------------------------------------

    def ack(self, acks: Sequence[Ack]) -> int:
        """Acknowledge messages delivered on the current connection; returns how many."""
        with self._lock:
            generation = self._generation
            if not self._connected.is_set():
                return 0
            mids = [
                mid for mid, qos, message_generation in acks if qos == 1 and message_generation == generation
            ]
            self._send_pubacks(mids)
        return len(mids)

    def _send_pubacks(self, mids: list[int]) -> None:
        client = self._client
        out_packets = getattr(client, "_out_packet", None)
        wake = getattr(client, "_sockpairW", None)
        if out_packets is None or wake is None:
            for mid in mids:
                client.ack(mid, 1)
            return
        # paho's ack() queues one PUBACK and writes a byte to its wake-up socket per call: a
        # system call per message, a tenth of the writer's time. Queue the batch, wake it once.
        for mid in mids:
            out_packets.append(
                {
                    "command": PUBACK,
                    "mid": mid,
                    "qos": 1,
                    "pos": 0,
                    "to_process": 4,
                    "packet": _PUBACK.pack(PUBACK, 2, mid),
                    "info": None,
                }
            )
        with contextlib.suppress(BlockingIOError):
            wake.send(b"0")

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1 without blocking (used for dead-letter records)."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            log.warning("dead-letter publication skipped on %s: outgoing queue full", topic)

    def space_available(self) -> None:
        """Called by the writer after draining: wakes the network thread if it waits for room."""
        if self._inbox.qsize() < self._queue_limit:
            self._space.set()

    # --- paho callbacks (network thread) ------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        with self._lock:
            self._generation += 1
        self._connected.set()
        self._metrics.connected.set(1)
        log.info(
            "connected to %s:%d as %s (session %s)",
            self._mqtt.host,
            self._mqtt.port,
            self._settings.client_id,
            "resumed" if flags.session_present else "new",
        )
        topics = self._settings.subscriptions
        shared = self._settings.shared_group is not None
        if shared:
            # The same client id may have run alone before (worker 0 of --workers keeps the
            # plain id): its session's plain subscriptions would deliver every message again.
            client.unsubscribe(self._settings.plain_topics)
        if not self._v5:
            client.subscribe([(topic, 1) for topic in topics])
            return
        # No Local keeps our own dead-letter publications away; MQTT 5 forbids it on shared
        # subscriptions, where the topic filter of on_message does the job.
        options = SubscribeOptions(qos=1, noLocal=not shared, retainHandling=1)
        client.subscribe([(topic, options) for topic in topics])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        failures = [code for code in reason_codes if code.is_failure]
        if failures:
            self.subscribe_error = (
                f"broker refused subscription {', '.join(self._settings.subscriptions)}: {failures[0]}"
            )
            log.error(self.subscribe_error)
            return
        self.subscribe_error = None
        self._subscribed.set()
        log.info("subscribed to %s (QoS 1)", ", ".join(self._settings.subscriptions))

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        with self._lock:
            self._generation += 1
            self._connected.clear()
        self._subscribed.clear()
        self._metrics.connected.set(0)
        if not self._paused:
            log.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # paho's network thread: keep the message and go back to the socket. Decoding, counting
        # and everything else happen per batch on the batcher thread.
        if self._paused:
            return
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = message._topic.decode("utf-8", "replace")
        if topic.startswith(self._deadletter_prefix):
            # A dead-letter record (ours or another ingestor's) reached a wide subscription.
            client.ack(message.mid, message.qos)
            return
        inbox = self._inbox
        inbox.put(
            _new_message((message.mid, message.qos, topic, message.payload, time.time_ns(), self._generation))
        )
        if inbox.qsize() >= self._queue_limit:
            self._wait_for_space()

    def _wait_for_space(self) -> None:
        # Only reached when the broker ignores our receive maximum: slow the network thread
        # down rather than let the inbox grow without bound.
        while self._inbox.qsize() >= self._queue_limit and not self._paused:
            self._space.clear()
            self._space.wait(1.0)
