"""Settings of the MQTT connection and of the fleet simulator."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MqttSettings(BaseModel):
    """How to reach the MQTT broker (Mosquitto in production, the embedded broker in the demo)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    keepalive_s: int = Field(30, ge=5, le=3600)
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version. 5 gives ingest shared subscriptions and session expiry; 3.1.1 is for brokers
    that speak nothing newer (the embedded amqtt broker of the demo)."""


class SimulatorSettings(BaseModel):
    """Defaults of ``smartcity simulate``; every one can be overridden on the command line."""

    model_config = ConfigDict(extra="forbid")

    devices_per_family: int = Field(2, ge=1, le=10000)
    period_s: float = Field(60.0, gt=0)
    speedup: float = Field(1.0, gt=0)
    seed: int = 42
    duration_s: float = Field(3600.0, gt=0)
    """Simulated time covered by one run of ``smartcity simulate``."""
    faults: str = "none"
    """Fault rates: ``none``, ``default`` or ``kind=rate,...`` (see docs/simulator.md)."""
    max_inflight: int = Field(100, ge=1, le=65535)
    """QoS 1 messages sent and not yet acknowledged, at most."""
    max_queued: int = Field(1000, ge=1)
    """Messages waiting in the publisher's queue (in flight included) before it waits."""
