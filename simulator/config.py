"""Settings of the fleet simulator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
