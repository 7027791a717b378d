"""Settings of the MQTT connection."""

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
