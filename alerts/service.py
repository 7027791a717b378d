"""Assembling the alert evaluator from settings: what ``smartcity alerts`` and the demo run.

evaluator = build_evaluator(settings.alerts, store, registry)
threading.Thread(target=evaluator.run, args=(stop,), kwargs=run_options(settings.alerts)).start()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alerts.config import AlertSettings
from alerts.engine import Clock, Evaluator, utc_now
from alerts.messages import Templates
from alerts.outbox import Outbox
from alerts.rules import load_rules
from alerts.topology import Topology
from sensors.communes import CommuneRegistry
from storage.base import Store


class AlertsNotConfigured(ValueError):
    """No rules file was given."""


def build_evaluator(
    settings: AlertSettings,
    store: Store | None,
    registry: CommuneRegistry,
    *,
    rules_file: Path | None = None,
    clock: Clock = utc_now,
) -> Evaluator:
    """An evaluator with its rules, templates, topology, outbox and saved state.

    Raises ``AlertsNotConfigured``, ``RulesError``, ``TemplateError`` or ``TopologyError`` (all
    ``ValueError``) with a message for the operator. ``store`` may be None to send test
    messages only. Close ``evaluator.outbox`` when done.
    """
    path = rules_file or settings.rules_file
    if path is None:
        raise AlertsNotConfigured(
            "no rules file: give --rules FILE or set alerts.rules_file (SMARTCITY_ALERTS__RULES_FILE); "
            "examples/alerts.toml is a full example"
        )
    rules = load_rules(path, registry)
    templates = Templates(rules.defaults.templates_dir or settings.templates_dir)
    topology = Topology.load(rules.defaults.topology) if rules.defaults.topology else Topology.empty()
    return Evaluator(
        rules,
        store,
        registry,
        Outbox(settings.outbox_dir, settings.audit_file),
        state_file=settings.state_file,
        dashboard_url=settings.dashboard_url,
        language=settings.language,
        templates=templates,
        topology=topology,
        clock=clock,
    )


def run_options(settings: AlertSettings) -> dict[str, Any]:
    """Keyword arguments of ``Evaluator.run`` from the settings."""
    return {"interval_s": settings.interval_s, "delivery_interval_s": settings.delivery_interval_s}
