"""The alerts' lifecycle state, kept in a JSON file so that a restarted evaluator carries on:
an alert firing before the restart is still firing after it, and is not announced twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

AlertStatus = Literal["pending", "firing", "resolved"]


@dataclass(slots=True)
class AlertRecord:
    """One alert: a rule applied to one scope (a commune, or one device of a commune)."""

    rule: str
    scope: str
    insee: str
    device_id: str | None
    status: AlertStatus
    since: float
    """When the condition started (Unix seconds)."""
    fired_at: float | None = None
    resolved_at: float | None = None
    clearing_since: float | None = None
    """While firing: since when the clear condition has held (for ``clear_for``)."""
    value: float | None = None
    observed_at: float | None = None
    notified: bool = False
    """Whether a firing message went out (a resolved message is only sent after one)."""
    suppressed_by: str | None = None
    """The offline parent device that silenced this alert, if any."""
    silenced_by: str | None = None
    """The id of the silence (maintenance window) that held its message back, if any."""
    acknowledged_by: str | None = None
    """Who acknowledged this episode of the alert (alerts/actions.py), if anyone."""
    acknowledged_at: float | None = None
    acknowledged_comment: str | None = None

    @property
    def key(self) -> str:
        """The identity of the alert: one per (rule, scope)."""
        return f"{self.rule}|{self.scope}"


@dataclass(slots=True)
class EvaluatorState:
    """Every alert, plus history events the store could not take yet."""

    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    unsaved_events: list[dict[str, Any]] = field(default_factory=list)
    audited_actions: list[str] = field(default_factory=list)
    """Ids of the staff actions already written to the audit trail."""

    @classmethod
    def load(cls, path: Path) -> EvaluatorState:
        """The saved state, or an empty one when there is no file yet."""
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"alert state file {path} is unreadable: {exc}; move it away to start afresh"
            ) from exc
        alerts = {}
        for raw in data.get("alerts", []):
            record = AlertRecord(**raw)
            alerts[record.key] = record
        return cls(
            alerts=alerts,
            unsaved_events=list(data.get("unsaved_events", [])),
            audited_actions=list(data.get("audited_actions", [])),
        )

    def save(self, path: Path) -> None:
        """Write the state atomically (temporary file, fsync, rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        names = [f.name for f in fields(AlertRecord)]
        data = {
            # getattr rather than dataclasses.asdict: the latter deep-copies, ten times slower
            # with thousands of offline devices.
            "alerts": [{name: getattr(a, name) for name in names} for a in self.alerts.values()],
            "unsaved_events": self.unsaved_events,
            "audited_actions": self.audited_actions,
        }
        text = json.dumps(data, ensure_ascii=False)
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
