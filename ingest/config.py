"""Settings of the ingestor (``SMARTCITY_INGEST__*`` in the environment, ``[ingest]`` in TOML)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ingest.lorawan import LorawanSettings
from sensors.topics import DEADLETTER_PREFIX, SUBSCRIPTION

DEFAULT_SHARED_GROUP = "smartcity-ingest"
"""The shared subscription group of ``smartcity ingest --workers N`` when none is set."""

HOSTNAME = "{hostname}"
"""Placeholder for the host's name in ``client_id``, ``spool_dir`` and ``deadletter_file``."""


class IngestSettings(BaseModel):
    """How ``smartcity ingest`` subscribes, batches, spools and reports."""

    model_config = ConfigDict(extra="forbid")

    topic: str = SUBSCRIPTION
    shared_group: str | None = Field(None, pattern=r"^[^/+#$]+$")
    """When set, subscribe as ``$share/<group>/<topic>`` so several ingestors split the load."""
    client_id: str = Field("smartcity-ingest", min_length=1, max_length=128)
    """Fixed, so the broker keeps this ingestor's session (and its queued readings) while it is down.
    Each ingestor of a shared group needs its own."""
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, le=0xFFFFFFFF)
    """How long the broker keeps the session of a disconnected ingestor."""
    receive_maximum: int = Field(20000, ge=1, le=65535)
    """MQTT 5 flow control: how many unacknowledged readings messages the broker may have in flight
    to this ingestor. Messages are acknowledged only once stored, so this bounds the ingestor's
    memory and must exceed what one batch holds for batches to fill by size."""
    queue_max_messages: int = Field(50000, ge=1)
    """Bound of the queue between the MQTT network thread and the writer thread."""
    batch_size: int = Field(5000, ge=1)
    """Messages per store write (one reading each in the common case); a batch is also flushed
    ``batch_interval_s`` after its first message."""
    batch_interval_s: float = Field(0.5, gt=0)
    store_timeout_s: float = Field(10.0, gt=0)
    """A store write slower than this counts as the store being down: the batch is spooled."""
    store_max_retries: int = Field(1, ge=0)
    """Retries inside one store write before spooling (the spool replays later anyway)."""
    retry_interval_s: float = Field(2.0, gt=0)
    """First delay before trying a store that failed again; doubles up to ``retry_max_interval_s``."""
    retry_max_interval_s: float = Field(30.0, gt=0)
    spool_dir: Path = Path("var/spool")
    spool_max_bytes: int = Field(1 << 30, ge=1 << 12)
    """When the spool holds this much, ingest stops acknowledging: the broker keeps the readings."""
    deadletter_file: Path = Path("var/deadletter.jsonl")
    deadletter_topic: str = DEADLETTER_PREFIX
    """Prefix of the dead-letter topics: ``<prefix>/<reason>/<original topic>``."""
    deadletter_publish: bool = True
    rejected_rows_per_device: int = Field(100, ge=1)
    """At most this many ``rejected_readings`` rows per device and batch: what one device's bad
    payloads can cost the store is bounded (the dead-letter file keeps every refusal)."""
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(9108, ge=0, le=65535)
    """HTTP port of ``/metrics`` and ``/healthz``; 0 picks a free port, None serves nothing."""
    log_interval_s: float = Field(30.0, gt=0)
    stall_after_s: float = Field(120.0, gt=0)
    """``/healthz`` reports a worker whose batcher or writer made no progress for this long as
    stalled (a store write gives up after ``store_timeout_s``, so only a stuck thread gets there)."""
    lorawan: LorawanSettings | None = None
    """The LoRaWAN input (examples/lorawan.toml): network-server topics read beside the native ones."""
    switch_interval_s: float = Field(0.0005, gt=0, le=0.1)
    """Python's thread switch interval in ``smartcity ingest`` (``sys.setswitchinterval``)."""
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    """MQTT version of the ingestor's own connection. 3.1.1 (clean session off) costs paho half
    what 5 costs per message (docs/ingest.md); 5 adds the receive maximum and session expiry.
    With ``mqtt.protocol`` 3.1.1 (a broker that speaks nothing newer) it is always 3.1.1."""
    workers: int | None = Field(None, ge=1, le=256)
    """Ingest processes ``smartcity ingest`` runs on one shared subscription. None: one per core
    when the broker has shared subscriptions (``mqtt.protocol`` 5, Mosquitto), else one."""

    @model_validator(mode="after")
    def _check_topics(self) -> IngestSettings:
        if not self.topic or self.topic.startswith("$share/"):
            raise ValueError(
                f"topic {self.topic!r}: give the plain topic filter and the group in shared_group"
            )
        if any(ch in self.deadletter_topic for ch in "+#") or self.deadletter_topic.endswith("/"):
            raise ValueError(f"deadletter_topic {self.deadletter_topic!r} must be a plain topic prefix")
        if self.retry_max_interval_s < self.retry_interval_s:
            raise ValueError("retry_max_interval_s must be at least retry_interval_s")
        # Replicas of one deployment share their settings but each needs its own broker session,
        # spool and dead-letter file: "{hostname}" in these settings becomes the host's name.
        host = socket.gethostname()
        self.client_id = self.client_id.replace(HOSTNAME, host)
        self.spool_dir = Path(str(self.spool_dir).replace(HOSTNAME, host))
        self.deadletter_file = Path(str(self.deadletter_file).replace(HOSTNAME, host))
        return self

    @property
    def subscription(self) -> str:
        """The topic filter actually subscribed to (with the shared-subscription prefix if any)."""
        return self._shared(self.topic)

    @property
    def plain_topics(self) -> list[str]:
        """Every topic filter read, without the shared-subscription prefix: the contract's, then
        the LoRaWAN input's."""
        return [self.topic, *(self.lorawan.topics if self.lorawan else [])]

    @property
    def subscriptions(self) -> list[str]:
        """Every topic filter subscribed to (with the shared-subscription prefix if any)."""
        return [self._shared(topic) for topic in self.plain_topics]

    def _shared(self, topic: str) -> str:
        if self.shared_group:
            return f"$share/{self.shared_group}/{topic}"
        return topic
