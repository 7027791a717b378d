"""Settings of the processing runner."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ProcessingSettings(BaseModel):
    """How often ``smartcity process`` runs its jobs."""

    interval_s: float = Field(60.0, gt=0)
