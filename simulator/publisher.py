"""Publish a generated fleet over MQTT (paho-mqtt, QoS 1), in simulated time, with back-pressure.

Two steps:

1. ``build_messages(fleet, options)`` turns the fleet into the messages the devices send, as a
   polars frame sorted by send time (vectorised: JSON payloads are encoded by polars). This is
   where the faults that only exist on the wire appear: duplicates are sent twice, malformed
   readings become broken payloads, out-of-bounds fields carry their bad value, and late or
   out-of-order readings are sent at their (late) delivery time.
2. ``publish_messages(messages, options)`` sends them, pacing by ``speedup``, and waits for
   every acknowledgement. When paho's outgoing queue is full (``MQTT_ERR_QUEUE_SIZE``) it waits
   for acknowledgements to free room and retries the same message: nothing is dropped.

Payloads follow the native form of the contract: ``{"ts": <epoch ms>, "<field>": <value>, ...}``.
Devices with an odd number write ``ts`` as epoch milliseconds, the others as RFC 3339 UTC
strings, so both forms are exercised. With ``batch_size > 1``, a share ``batch_share`` of the
devices send a JSON list of ``batch_size`` consecutive readings at the time of the last one.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from sensors.families import FAMILIES, Family
from sensors.topics import PREFIX
from simulator.faults import FaultKind
from simulator.fleet import Fleet

logger = logging.getLogger(__name__)

ProtocolName = Literal["5", "3.1.1"]
PROTOCOLS: dict[str, MQTTProtocolVersion] = {
    "5": MQTTProtocolVersion.MQTTv5,
    "3.1.1": MQTTProtocolVersion.MQTTv311,
}

MESSAGE_SCHEMA: dict[str, pl.DataType] = {
    "send_ns": pl.Int64(),
    "topic": pl.String(),
    "payload": pl.Binary(),
    "readings": pl.Int64(),
}
"""Columns of ``build_messages``: when to send (simulated ns), where, what, and how many
readings the payload carries (0 for a malformed payload)."""


class PublishError(RuntimeError):
    """Publishing failed (connection refused, broker gone for too long); the message says why."""


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """How to reach the broker and how to pace the fleet."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    protocol: ProtocolName = "5"
    client_id: str = "smartcity-simulator"
    keepalive_s: int = 30
    qos: int = 1
    speedup: float = 0.0
    """Simulated seconds per wall-clock second; 0 publishes as fast as the broker acknowledges."""
    live: bool = False
    """Never send a reading before its simulated send time has come in the real world: catch up
    at ``speedup``, then follow the clock (the demo)."""
    max_inflight: int = 100
    """paho's in-flight window: QoS 1 messages sent and not yet acknowledged."""
    max_queued: int = 1000
    """paho's outgoing queue (in-flight included); past it, publish waits for acknowledgements."""
    batch_size: int = 1
    batch_share: float = 0.0
    connect_timeout_s: float = 15.0
    ack_timeout_s: float = 120.0
    """How long to wait without any acknowledgement progress before giving up."""


@dataclass(slots=True)
class PublishReport:
    """What a publication achieved."""

    messages: int = 0
    """Messages to send."""
    published: int = 0
    """Messages handed to paho (accepted into its queue)."""
    acknowledged: int = 0
    """Messages the broker acknowledged (PUBACK)."""
    refused: int = 0
    """Messages the broker acknowledged with an error reason code (MQTT 5)."""
    readings: int = 0
    """Readings carried by the published messages (a malformed payload carries none)."""
    waits: int = 0
    """Times the queue was full and the publisher waited for acknowledgements (back-pressure)."""
    faults: dict[str, int] = field(default_factory=dict)
    """Injected faults by kind (from the ground truth)."""
    seconds: float = 0.0
    stopped: bool = False
    """True when a stop was requested before every message was sent."""

    def summary(self) -> str:
        """One line for a human."""
        faults = ", ".join(f"{kind}={count}" for kind, count in sorted(self.faults.items())) or "none"
        rate = self.published / self.seconds if self.seconds > 0 else 0.0
        return (
            f"published {self.published}/{self.messages} messages ({self.readings} readings), "
            f"acknowledged {self.acknowledged}, refused {self.refused}, back-pressure waits {self.waits}, "
            f"{self.seconds:.1f}s ({rate:.0f} msg/s); faults injected: {faults}"
        )


def _uses_epoch_ms(device_id: pl.Expr) -> pl.Expr:
    """Devices whose number is odd write ``ts`` in epoch ms; the others in RFC 3339."""
    return device_id.str.extract(r"(\d+)$").cast(pl.Int64) % 2 == 1


def _readings_messages(fleet: Fleet, family: Family, frame: pl.DataFrame) -> pl.DataFrame:
    """One message per reading: topic, JSON payload, send time."""
    spec = FAMILIES[family]
    names = [f.name for f in spec.fields]
    truth = fleet.ground_truth.filter(pl.col("family") == family.value)
    work = (
        frame
        if "received_at" in frame.columns
        else frame.with_columns(received_at=pl.col("time").cast(pl.Int64))
    )
    # Out-of-bounds fields are null in the frame (what the store keeps); the wire carries the value.
    bad = truth.filter(pl.col("kind") == FaultKind.OUT_OF_BOUNDS.value)
    for name in bad["field"].unique().to_list():
        kind = spec.field(name)
        values = bad.filter(pl.col("field") == name).select(
            "device_id", pl.col("start").alias("time"), pl.col("value").alias("__bad")
        )
        if kind is not None and kind.kind == "int":
            values = values.with_columns(pl.col("__bad").cast(pl.Int64))
        work = (
            work.join(values, on=["device_id", "time"], how="left")
            .with_columns(pl.coalesce(name, "__bad").alias(name))
            .drop("__bad")
        )
    epoch_ms = pl.col("time").dt.epoch("ms")
    rfc3339 = pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
    parts = []
    for as_ms in (True, False):
        subset = work.filter(_uses_epoch_ms(pl.col("device_id")) == as_ms)
        parts.append(
            subset.select(
                pl.col("received_at").alias("send_ns"),
                pl.col("device_id"),
                pl.col("time"),
                pl.concat_str(pl.lit(f"{PREFIX}/"), "insee", pl.lit(f"/{family.value}/"), "device_id").alias(
                    "topic"
                ),
                pl.struct((epoch_ms if as_ms else rfc3339).alias("ts"), *names)
                .struct.json_encode()
                .alias("json"),
            )
        )
    messages = pl.concat(parts)
    # Duplicates: the same message again, shortly after (a QoS 1 redelivery or a gateway retry).
    duplicates = truth.filter(pl.col("kind") == FaultKind.DUPLICATE.value).select(
        "device_id", pl.col("start").alias("time")
    )
    again = messages.join(duplicates, on=["device_id", "time"], how="semi").with_columns(
        pl.col("send_ns") + 5_000_000
    )
    return pl.concat([messages, again])


def _malformed_messages(fleet: Fleet) -> pl.DataFrame:
    """A broken payload for every malformed reading of the ground truth."""
    broken = fleet.ground_truth.filter(pl.col("kind") == FaultKind.MALFORMED.value)
    if broken.is_empty():
        return pl.DataFrame(schema=MESSAGE_SCHEMA)
    ms = broken["start"].dt.epoch("ms")
    variant = pl.Series(range(broken.height)) % 3
    # Truncated JSON, text that is not JSON, and bytes that are not UTF-8: the three ways a
    # gateway bug or a flaky link mangles a payload.
    payloads = [
        (
            f'{{"ts": {t}, "'.encode()
            if v == 0
            else f"ts={t};status=ok".encode()
            if v == 1
            else b'{"ts": ' + str(t).encode() + b', "note": "\xff\xfe"}'
        )
        for t, v in zip(ms.to_list(), variant.to_list(), strict=True)
    ]
    return broken.select(
        (pl.col("start").dt.epoch("ns") + 100_000_000).alias("send_ns"),
        pl.concat_str(pl.lit(f"{PREFIX}/"), "insee", pl.lit("/"), "family", pl.lit("/"), "device_id").alias(
            "topic"
        ),
        pl.Series("payload", payloads, dtype=pl.Binary),
        pl.lit(0, pl.Int64).alias("readings"),
    )


def _batch_devices(device_ids: pl.Series, share: float, seed: int) -> pl.Series:
    """Whether each device sends batches: a stable choice from its id and the seed."""
    threshold = int(share * 2**32)
    # One hash per device (not per reading): a short Python loop is fine here.
    chosen = [zlib.crc32(f"{seed}:{device}".encode()) < threshold for device in device_ids.to_list()]
    return pl.Series(chosen, dtype=pl.Boolean)


def build_messages(fleet: Fleet, options: PublishOptions | None = None) -> pl.DataFrame:
    """The messages the fleet sends, sorted by send time (``MESSAGE_SCHEMA``)."""
    options = options or PublishOptions()
    singles = [
        _readings_messages(fleet, Family(name), frame) for name, frame in fleet.frames.items() if frame.height
    ]
    if not singles:
        return _malformed_messages(fleet).sort("send_ns")
    messages = pl.concat(singles)
    if options.batch_size > 1 and options.batch_share > 0:
        devices = fleet.devices["device_id"]
        batching = devices.filter(_batch_devices(devices, options.batch_share, fleet.config.seed))
        # Readings with a delivery fault keep their own message, so the ground truth stays exact.
        delivery = fleet.ground_truth.filter(
            pl.col("kind").is_in(
                [FaultKind.LATE.value, FaultKind.OUT_OF_ORDER.value, FaultKind.DUPLICATE.value]
            )
        ).select("device_id", pl.col("start").alias("time"))
        in_batch = pl.col("device_id").is_in(batching.implode())
        candidates = messages.filter(in_batch).join(delivery, on=["device_id", "time"], how="anti")
        alone = pl.concat(
            [
                messages.filter(~in_batch),
                messages.filter(in_batch).join(delivery, on=["device_id", "time"], how="semi"),
            ]
        )
        batches = (
            candidates.sort("device_id", "time")
            .with_columns((pl.int_range(pl.len()).over("device_id") // options.batch_size).alias("chunk"))
            .group_by("device_id", "chunk")
            .agg(
                pl.col("send_ns").max(),
                pl.col("topic").first(),
                pl.col("time").max(),
                pl.format("[{}]", pl.col("json").str.join(",")).alias("json"),
                pl.len().cast(pl.Int64).alias("readings"),
            )
        )
        messages = pl.concat(
            [
                alone.with_columns(pl.lit(1, pl.Int64).alias("readings")),
                batches.select([*alone.columns, "readings"]),
            ]
        )
    else:
        messages = messages.with_columns(pl.lit(1, pl.Int64).alias("readings"))
    out = messages.select("send_ns", "topic", pl.col("json").cast(pl.Binary).alias("payload"), "readings")
    return pl.concat([out, _malformed_messages(fleet)]).sort("send_ns", "topic", maintain_order=True)


class _Acks:
    """Counts broker acknowledgements; lets the publishing thread wait for room."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.acknowledged = 0
        self.refused = 0
        self.connected = False
        self.connect_error: str | None = None

    def wait_beyond(self, seen: int, timeout: float) -> bool:
        """Wait until more than ``seen`` acknowledgements arrived; False after ``timeout``."""
        with self.condition:
            return self.condition.wait_for(lambda: self.acknowledged > seen, timeout)

    def on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        with self.condition:
            if reason.is_failure:
                self.connect_error = f"broker refused the connection: {reason}"
            else:
                self.connected = True
            self.condition.notify_all()

    def on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        with self.condition:
            self.connected = False
            self.condition.notify_all()
        if reason.is_failure:
            logger.warning("disconnected from the broker (%s); paho reconnects and resends", reason)

    def on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        with self.condition:
            self.acknowledged += 1
            if reason.is_failure:
                self.refused += 1
            self.condition.notify_all()


def make_client(options: PublishOptions, acks: _Acks | None = None) -> mqtt.Client:
    """A paho client (v2 callback API) configured from ``options``; not connected yet."""
    protocol = PROTOCOLS[options.protocol]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=options.client_id, protocol=protocol)
    if options.username:
        client.username_pw_set(options.username, options.password)
    client.max_inflight_messages_set(options.max_inflight)
    client.max_queued_messages_set(max(options.max_queued, options.max_inflight))
    client.reconnect_delay_set(min_delay=1, max_delay=5)
    if acks is not None:
        client.on_connect = acks.on_connect
        client.on_disconnect = acks.on_disconnect
        client.on_publish = acks.on_publish
    return client


def publish_messages(
    messages: pl.DataFrame,
    options: PublishOptions,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[PublishReport], None] | None = None,
    progress_every_s: float = 5.0,
) -> PublishReport:
    """Send ``messages`` (from ``build_messages``) and wait until the broker acknowledged them all.

    Raises ``PublishError`` when the broker cannot be reached, or when acknowledgements stop
    progressing for ``ack_timeout_s``. Setting ``stop`` ends early (the report says so), still
    waiting for what was already handed to paho.
    """
    report = PublishReport(messages=messages.height)
    acks = _Acks()
    client = make_client(options, acks)
    started = time.monotonic()
    try:
        client.connect(options.host, options.port, keepalive=options.keepalive_s)
    except OSError as exc:
        raise PublishError(
            f"cannot connect to the MQTT broker at {options.host}:{options.port}: {exc}"
        ) from exc
    client.loop_start()
    try:
        with acks.condition:
            acks.condition.wait_for(
                lambda: acks.connected or acks.connect_error is not None, options.connect_timeout_s
            )
        if acks.connect_error or not acks.connected:
            raise PublishError(
                f"MQTT broker at {options.host}:{options.port}: "
                + (acks.connect_error or f"no CONNACK within {options.connect_timeout_s:.0f}s")
            )
        _send_all(
            client,
            messages,
            options,
            acks=acks,
            report=report,
            stop=stop,
            on_progress=on_progress,
            progress_every_s=progress_every_s,
        )
        _wait_for_acks(acks, report, options)
    finally:
        report.acknowledged, report.refused = acks.acknowledged, acks.refused
        report.seconds = time.monotonic() - started
        client.disconnect()
        client.loop_stop()
    return report


def _send_all(
    client: mqtt.Client,
    messages: pl.DataFrame,
    options: PublishOptions,
    *,
    acks: _Acks,
    report: PublishReport,
    stop: threading.Event | None,
    on_progress: Callable[[PublishReport], None] | None,
    progress_every_s: float,
) -> None:
    if messages.is_empty():
        return
    sim_start = int(messages["send_ns"][0])
    wall_start = time.time()
    next_progress = time.monotonic() + progress_every_s
    # Python objects a slice at a time: a large run does not hold every payload twice.
    rows = (
        row
        for chunk in messages.iter_slices(10_000)
        for row in zip(
            chunk["send_ns"].to_list(),
            chunk["topic"].to_list(),
            chunk["payload"].to_list(),
            chunk["readings"].to_list(),
            strict=True,
        )
    )
    for index, (at, topic, payload, count) in enumerate(rows):
        if stop is not None and stop.is_set():
            report.stopped = True
            return
        _pace(at, sim_start, wall_start, options, stop)
        while True:
            # Read before publishing: an acknowledgement arriving in between must not be missed.
            seen = acks.acknowledged
            info = client.publish(topic, payload, qos=options.qos)
            # NO_CONN: paho keeps a QoS>0 message queued and sends it once reconnected.
            if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                break
            if info.rc != mqtt.MQTT_ERR_QUEUE_SIZE:
                raise PublishError(f"paho refused message {index} on {topic}: {mqtt.error_string(info.rc)}")
            # Back-pressure: the queue is full; wait for an acknowledgement to free a slot.
            report.waits += 1
            if not acks.wait_beyond(seen, options.ack_timeout_s):
                raise PublishError(
                    f"no acknowledgement from the broker for {options.ack_timeout_s:.0f}s "
                    f"with {options.max_queued} messages queued"
                )
        report.published += 1
        report.readings += count
        if on_progress is not None and time.monotonic() >= next_progress:
            report.acknowledged = acks.acknowledged
            on_progress(report)
            next_progress = time.monotonic() + progress_every_s


def _pace(
    at_ns: int, sim_start_ns: int, wall_start: float, options: PublishOptions, stop: threading.Event | None
) -> None:
    """Sleep until a message is due: at ``speedup`` in simulated time, and no earlier than its
    real time in ``live`` mode."""
    due = 0.0
    if options.speedup > 0:
        due = wall_start + (at_ns - sim_start_ns) / 1e9 / options.speedup
    if options.live:
        due = max(due, at_ns / 1e9)
    delay = due - time.time()
    if delay > 0.001:
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)


def _wait_for_acks(acks: _Acks, report: PublishReport, options: PublishOptions) -> None:
    """Wait until every published message is acknowledged, as long as acknowledgements progress."""
    while (seen := acks.acknowledged) < report.published:
        if not acks.wait_beyond(seen, options.ack_timeout_s):
            raise PublishError(
                f"{report.published - acks.acknowledged} messages still unacknowledged after "
                f"{options.ack_timeout_s:.0f}s without progress"
            )


def publish_fleet(
    fleet: Fleet,
    options: PublishOptions,
    *,
    stop: threading.Event | None = None,
    on_progress: Callable[[PublishReport], None] | None = None,
) -> PublishReport:
    """Build the fleet's messages and publish them; the report counts injected faults too."""
    report = publish_messages(build_messages(fleet, options), options, stop=stop, on_progress=on_progress)
    report.faults = dict(Counter(fleet.ground_truth["kind"].to_list()))
    return report
