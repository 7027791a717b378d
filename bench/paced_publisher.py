"""A paced MQTT 3.1.1 QoS 1 publisher cheap enough to leave the CPU to what it measures.

``PacedPublisher`` sends one template payload per device at a fixed total rate from several
processes, each paced on its own share of the devices. Each payload's ``"ts"`` (ms) is the
moment its packet is written to the socket, so a reading's latency is measured from its real
publish time.

Why not paho for this: paho writes every packet with a socket call of its own (and wakes its
network thread for each when it runs one), which costs more per reading than the ingestor
being measured spends on it. Here the packets are pre-built per device with only the
timestamp and packet id patched in, everything due at one tick leaves in one ``sendall``, and
the broker's PUBACKs are counted from whole reads. The protocol used is the minimum of
MQTT 3.1.1 (CONNECT, PUBLISH QoS 1, PUBACK, DISCONNECT), against a broker the bench starts.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.queues
import multiprocessing.synchronize
import queue
import socket
import time
from dataclasses import dataclass, field
from typing import Any

TICK_S = 0.002
"""How often each process sends what is due (a tick's readings share one socket write)."""
MAX_UNACKED = 4000
"""Unacknowledged readings allowed to one process: past that it waits, and shows as behind."""
GIVE_UP_BEHIND_S = 30.0
"""A process this far behind its schedule stops: the run is invalid already."""
_PUBACK = 0x40
_KEEPALIVE_S = 60
_TS_DIGITS = 13
"""Epoch milliseconds have 13 digits until 2286, so a device's packet length never changes."""


_Result = tuple[int, int, float, float, float, dict[str, int]]
"""What one process sends back: sent, acked, worst lag, CPU, broker wait, sent per device."""


@dataclass(frozen=True)
class PublisherReport:
    """What the publishing processes did, summed over them."""

    asked_rate: float
    seconds: float
    processes: int
    sent: int
    acked: int
    behind_max_s: float
    """The furthest any process fell behind its schedule, in seconds of its share's rate."""
    cpu_s: float
    """CPU (user + system) of the publishing processes while they published."""
    broker_wait_s: float = 0.0
    """Time the processes were held back by the broker (a full window of unacknowledged
    readings, or a socket write that blocked), summed over them: when the publisher falls
    behind, this tells a broker that could not take the rate from a publisher that could not
    send it."""
    sent_by_device: dict[str, int] = field(default_factory=dict)
    """Readings sent per device topic."""

    @property
    def sent_rate(self) -> float:
        """Readings sent per second over the run."""
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_1000(self) -> float:
        """The publisher's own CPU per 1,000 readings sent."""
        return 1e6 * self.cpu_s / max(self.sent, 1)

    def shortfall(self, *, max_behind_s: float = 1.0, min_share: float = 0.99) -> str | None:
        """Why this run did not publish what was asked (``None`` when it did).

        A run is held when the publishers sent at least ``min_share`` of the asked readings,
        never fell more than ``max_behind_s`` behind schedule, and the broker acknowledged
        every reading."""
        asked = int(self.asked_rate * self.seconds)
        problems = []
        if self.sent < min_share * asked:
            problems.append(
                f"sent {self.sent:,} of the {asked:,} readings asked ({self.sent_rate:,.0f}/s of "
                f"{self.asked_rate:,.0f}/s)"
            )
        if self.behind_max_s > max_behind_s:
            problems.append(
                f"fell up to {self.behind_max_s:.2f}s behind schedule (tolerance {max_behind_s:g}s)"
            )
        if self.acked < self.sent:
            problems.append(f"the broker acknowledged {self.acked:,} of {self.sent:,} readings")
        return "; ".join(problems) or None

    def summary(self) -> str:
        """One line: what was sent, how late at worst, and what it cost."""
        return (
            f"publisher: {self.processes} processes sent {self.sent:,} readings "
            f"({self.acked:,} acknowledged) in {self.seconds:.0f}s, {self.sent_rate:,.0f}/s of "
            f"{self.asked_rate:,.0f}/s asked, at most {self.behind_max_s:.2f}s behind schedule; "
            f"its CPU {self.cpu_s:.1f}s, {self.cpu_ms_per_1000:.1f} ms per 1,000 readings "
            f"({self.cpu_s / max(self.seconds, 1e-9):.0%} of one core); held back by the broker "
            f"{self.broker_wait_s / max(self.processes * self.seconds, 1e-9):.0%} of the time"
        )


class PacedPublisher:
    """Publishes ``(topic, payload)`` templates round-robin at ``rate`` readings/s for
    ``seconds``, from ``processes`` processes each owning every ``processes``-th device.

    A payload is a JSON object as bytes beginning with ``{"ts":<13 digits>`` (see
    ``template_payload``); those digits are replaced by the send time in ms."""

    def __init__(
        self,
        port: int,
        devices: list[tuple[str, bytes]],
        rate: float,
        seconds: float,
        *,
        processes: int = 2,
        client_id: str = "bench-paced",
    ) -> None:
        if not 1 <= processes <= len(devices):
            raise ValueError(f"processes must be between 1 and the {len(devices)} devices, not {processes}")
        context = multiprocessing.get_context("spawn")
        self.rate = rate
        self.seconds = seconds
        self._results: multiprocessing.queues.Queue[tuple[int, int, float, float, float, dict[str, int]]] = (
            context.Queue()
        )
        self._ready: multiprocessing.queues.Queue[int] = context.Queue()
        self._go = context.Event()
        self._processes = [
            context.Process(
                target=_publish_share,
                args=(
                    _Share(
                        port, f"{client_id}-{index}", devices[index::processes], rate / processes, seconds
                    ),
                    self._ready,
                    self._go,
                    self._results,
                ),
                name=f"paced-publisher-{index}",
            )
            for index in range(processes)
        ]
        self.report: PublisherReport | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the processes, wait until each is connected, then let them all publish."""
        for process in self._processes:
            process.start()
        deadline = time.monotonic() + timeout
        connected = 0
        while connected < len(self._processes):
            with contextlib.suppress(queue.Empty):
                connected += self._ready.get(timeout=0.2)
            if time.monotonic() > deadline or not all(p.is_alive() for p in self._processes):
                self.kill()
                raise RuntimeError(f"only {connected} of {len(self._processes)} publishers connected")
        self._go.set()

    def is_alive(self) -> bool:
        """Whether any process still publishes."""
        return any(process.is_alive() for process in self._processes)

    def join(self, timeout: float) -> PublisherReport | None:
        """Wait up to ``timeout`` for the end of publishing; the report once all have ended."""
        deadline = time.monotonic() + timeout
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
        if self.report is None and not self.is_alive():
            results = [self._results.get(timeout=10) for _ in self._processes]
            self.report = PublisherReport(
                asked_rate=self.rate,
                seconds=self.seconds,
                processes=len(self._processes),
                sent=sum(r[0] for r in results),
                acked=sum(r[1] for r in results),
                behind_max_s=max(r[2] for r in results),
                cpu_s=sum(r[3] for r in results),
                broker_wait_s=sum(r[4] for r in results),
                sent_by_device={topic: n for r in results for topic, n in r[5].items()},
            )
        return self.report

    def kill(self) -> None:
        """Stop every process at once (a failed run)."""
        for process in self._processes:
            if process.is_alive():
                process.kill()
                process.join(10)


def template_payload(fields: str) -> bytes:
    """A payload template: ``{"ts":`` and 13 placeholder digits, then ``fields``, the rest of a
    JSON object (``,"pm25":12.5}``; ``}`` alone for none)."""
    return b'{"ts":' + b"0" * _TS_DIGITS + fields.encode()


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _connect(port: int, client_id: str) -> socket.socket:
    """A clean MQTT 3.1.1 session, connected and accepted."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = _utf8("MQTT") + bytes([4, 0x02]) + _KEEPALIVE_S.to_bytes(2, "big") + _utf8(client_id)
    sock.sendall(bytes([0x10]) + _remaining_length(len(body)) + body)
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            raise ConnectionError(f"the broker closed the connection of {client_id} before CONNACK")
        connack += chunk
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"the broker refused {client_id}: CONNACK {connack.hex()}")
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class _Share:
    """One process's part of the publishing."""

    port: int
    client_id: str
    devices: list[tuple[str, bytes]]
    rate: float
    seconds: float


def _publish_share(share: _Share, ready: Any, go: multiprocessing.synchronize.Event, results: Any) -> None:
    devices, rate, seconds = share.devices, share.rate, share.seconds
    sent = acked = 0
    behind_max = 0.0
    cpu = waited = 0.0
    window_full_since: float | None = None
    try:
        sock = _connect(share.port, share.client_id)
        # Per device, the bytes before the packet id and after the timestamp; the payload's
        # ``{"ts":`` sits between them.
        heads: list[bytes] = []
        tails: list[bytes] = []
        for topic, payload in devices:
            if not payload.startswith(b'{"ts":' + b"0" * _TS_DIGITS):
                raise ValueError(f"payload of {topic} is not a template: {payload[:30]!r}")
            topic_bytes = _utf8(topic)
            length = len(topic_bytes) + 2 + len(payload)
            heads.append(bytes([0x32]) + _remaining_length(length) + topic_bytes)
            tails.append(payload[6 + _TS_DIGITS :])
        last_ms = [0] * len(devices)
        count = len(devices)
        unread = b""
        ready.put(1)
        go.wait()
        cpu_start = time.process_time()
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate)
            behind_max = max(behind_max, (due - sent) / rate)
            if behind_max > GIVE_UP_BEHIND_S:
                break
            batch = min(due - sent, MAX_UNACKED - (sent - acked))
            now = time.perf_counter()
            if batch < due - sent and window_full_since is None:
                window_full_since = now
            elif batch == due - sent and window_full_since is not None:
                waited += now - window_full_since
                window_full_since = None
            if batch > 0:
                now_ms = time.time_ns() // 1_000_000
                parts: list[bytes] = []
                for number in range(sent, sent + batch):
                    index = number % count
                    # A device never sends two readings in the same millisecond (the store
                    # keeps one point per device and instant).
                    ts = now_ms if now_ms > last_ms[index] else last_ms[index] + 1
                    last_ms[index] = ts
                    parts += (
                        heads[index],
                        (number % 65535 + 1).to_bytes(2, "big"),
                        b'{"ts":%d' % ts,
                        tails[index],
                    )
                data = b"".join(parts)
                try:
                    written = sock.send(data)
                except BlockingIOError:
                    written = 0
                if written < len(data):
                    # The broker does not read as fast as asked: wait for it, and count it.
                    blocked = time.perf_counter()
                    sock.setblocking(True)
                    sock.sendall(data[written:])
                    sock.setblocking(False)
                    waited += time.perf_counter() - blocked
                sent += batch
            unread, acked = _read_acks(sock, unread, acked)
            time.sleep(TICK_S)
        cpu = time.process_time() - cpu_start
        if window_full_since is not None:
            waited += time.perf_counter() - window_full_since
        # The last acknowledgements, then a clean goodbye.
        deadline = time.monotonic() + max(60.0, seconds)
        while acked < sent and time.monotonic() < deadline:
            unread, acked = _read_acks(sock, unread, acked)
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            sock.setblocking(True)
            sock.sendall(b"\xe0\x00")
            sock.close()
    finally:
        # Round robin: the first ``sent % count`` devices sent one reading more than the rest.
        by_device = {
            topic: sent // len(devices) + (index < sent % len(devices))
            for index, (topic, _) in enumerate(devices)
        }
        results.put((sent, acked, behind_max, cpu, waited, by_device))


def _read_acks(sock: socket.socket, unread: bytes, acked: int) -> tuple[bytes, int]:
    """Count the PUBACKs (4 bytes each) waiting on the socket; returns the partial rest."""
    data = unread
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            raise ConnectionError("the broker closed the publisher's connection")
        data += chunk
    whole = len(data) - len(data) % 4
    if data[:whole:4] != bytes([_PUBACK]) * (whole // 4):
        raise ConnectionError(f"unexpected packet from the broker: {data[:16].hex()}")
    return data[whole:], acked + whole // 4
