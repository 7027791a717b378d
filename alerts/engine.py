"""The evaluator: applies every rule, moves alerts through pending -> firing -> resolved, writes
each transition to ``alert_events``, and queues grouped messages in the outbox.

Anti-storm, in the order it acts:

* hysteresis: a firing alert ends only when the value is back past the *clear* level;
* ``for``: the condition must hold that long before an alert fires; ``clear_for``: the clear
  condition must hold that long before it resolves;
* cooldown: after a resolved alert, the same (rule, scope) cannot start again before the
  cooldown has passed;
* suppression: a device whose parent (alerts/topology.py) is offline gets no offline message of
  its own; the parent's message counts it;
* grouping: the alerts of one rule and one commune that change in the same evaluation make one
  message.

Staff actions (alerts/actions.py), read from the store at every evaluation: a silence holds back
every message about its commune or device until it ends (an alert still firing then is announced
once); an acknowledged alert is not announced again later, and its messages say who took it.
Both are written to the audit trail.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from alerts import actions
from alerts.actions import Action, ActionLog
from alerts.labels import field_label
from alerts.messages import (
    SEVERITY_LABELS,
    MessageKind,
    Templates,
    format_number,
    format_quantity,
    format_span,
    format_time,
)
from alerts.observe import Observation, observe
from alerts.outbox import Envelope, Outbox
from alerts.rules import INDEX_CLASSES, Delivery, Rule, RulesFile
from alerts.state import AlertRecord, AlertStatus, EvaluatorState
from alerts.topology import Topology, lorawan_parents
from sensors.communes import CommuneRegistry
from storage.base import TIME_DTYPE, Store
from storage.errors import StoreError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_LISTED = 50


def utc_now() -> datetime:
    """The real clock (tests inject their own)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Transition:
    """One alert changing state in an evaluation."""

    rule: Rule
    record: AlertRecord
    before: AlertStatus | None
    after: AlertStatus
    notify: bool


@dataclass(slots=True)
class EvaluationReport:
    """What one evaluation did."""

    at: datetime
    transitions: list[Transition] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Evaluator:
    """Evaluates the rules against the store and feeds the outbox."""

    def __init__(
        self,
        rules: RulesFile,
        store: Store | None,
        registry: CommuneRegistry,
        outbox: Outbox,
        *,
        state_file: Path,
        dashboard_url: str,
        language: str = "fr",
        templates: Templates | None = None,
        topology: Topology | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.rules = rules
        self.store = store
        self.registry = registry
        self.outbox = outbox
        self.state_file = state_file
        self.dashboard_url = (rules.defaults.dashboard_url or dashboard_url).rstrip("/")
        self.language = rules.defaults.language or language
        self.templates = templates or Templates(rules.defaults.templates_dir)
        if topology is None:
            topology = Topology.load(rules.defaults.topology) if rules.defaults.topology else Topology.empty()
        self.topology = topology
        self._topology_now = topology
        """The topology with the links learned from LoRaWAN radio rows at this evaluation."""
        self.clock = clock
        self.state = EvaluatorState.load(state_file)
        self.actions = ActionLog.empty()

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self) -> EvaluationReport:
        """Apply every rule once at the clock's current time."""
        if self.store is None:
            raise RuntimeError("this evaluator was built without a store: it can only send test messages")
        store = self.store
        now = self.clock()
        report = EvaluationReport(at=now)
        self._take_actions(store, now, report)
        observations: dict[str, list[Observation]] = {}
        for rule in self.rules.rules:
            communes = self.registry.codes if rule.communes == "*" else list(rule.communes)
            try:
                tracked = {r.scope for r in self.state.alerts.values() if r.rule == rule.name}
                observations[rule.name] = observe(rule, store, now, communes, tracked)
            except StoreError as exc:
                # No data is not a clear signal: keep every alert of this rule as it is.
                report.errors.append(f"rule {rule.name}: cannot read the store: {exc}")
                log.warning("rule %s: cannot read the store: %s", rule.name, exc)
        offline = {
            o.device_id
            for rule in self.rules.rules
            if rule.condition == "offline" or (rule.condition == "anomaly" and rule.kind == "offline")
            for o in observations.get(rule.name, [])
            if o.raised and o.device_id
        }
        try:
            self._topology_now = self.topology.with_links(lorawan_parents(store, now))
        except StoreError as exc:
            log.warning("cannot read the LoRaWAN gateways of the devices: %s", exc)
        for rule in self.rules.rules:
            if rule.name in observations:
                report.transitions += self._advance(rule, observations[rule.name], now, offline)
        self._forget_unknown_rules()
        report.messages = self._queue_messages(report.transitions, now)
        self._record_events(store, report.transitions, now)
        self._prune(now)
        self.state.save(self.state_file)
        return report

    def _take_actions(self, store: Store, now: datetime, report: EvaluationReport) -> None:
        """Read the staff actions, audit the new ones, and mark the acknowledged alerts."""
        try:
            self.actions = actions.read(store, now)
        except StoreError as exc:
            # The last actions read stay in force: a store outage must not end a silence.
            report.errors.append(f"cannot read the staff actions: {exc}")
            log.warning("cannot read the staff actions, keeping the last ones: %s", exc)
        audited = set(self.state.audited_actions)
        for action in self.actions.actions:
            if action.id not in audited:
                self.outbox.audit(_action_audit(action, now))
                log.info("staff action %s by %s on %s", action.kind, action.user, action.insee)
        self.state.audited_actions = [a.id for a in self.actions.actions]
        for record in self.state.alerts.values():
            if record.status == "resolved":
                continue
            ack = self.actions.acknowledgement(
                record.rule, record.scope, datetime.fromtimestamp(record.since, UTC)
            )
            if ack is not None:
                record.acknowledged_by = ack.user
                record.acknowledged_at = ack.at.timestamp()
                record.acknowledged_comment = ack.comment or None

    def _silence(self, record: AlertRecord, stamp: float) -> Action | None:
        return self.actions.silence_of(record.insee, record.device_id, datetime.fromtimestamp(stamp, UTC))

    def _advance(
        self, rule: Rule, observations: list[Observation], now: datetime, offline: set[str]
    ) -> list[Transition]:
        """Move every alert of ``rule`` one step, given what the rule sees now."""
        seen = {o.scope: o for o in observations}
        scopes = set(seen) | {r.scope for r in self.state.alerts.values() if r.rule == rule.name}
        transitions: list[Transition] = []
        for scope in sorted(scopes):
            obs = seen.get(scope)
            record = self.state.alerts.get(f"{rule.name}|{scope}")
            if record is None or record.status == "resolved":
                step = self._start(rule, record, obs, now, offline)
            else:
                if obs is not None:
                    record.value, record.observed_at = obs.value, obs.observed_at.timestamp()
                # Anomalies vanish from the lookback once closed: for them, no row is a clear.
                clear = obs.cleared if obs is not None else rule.condition == "anomaly"
                if record.status == "pending":
                    step = self._pending(rule, record, clear=clear, now=now, offline=offline)
                else:
                    step = self._firing(
                        rule, record, clear=clear, seen=obs is not None, now=now, offline=offline
                    )
            if step is not None:
                transitions.append(step)
        return transitions

    def _start(
        self,
        rule: Rule,
        record: AlertRecord | None,
        obs: Observation | None,
        now: datetime,
        offline: set[str],
    ) -> Transition | None:
        if obs is None or not obs.raised:
            return None
        if now.timestamp() < self._cooling_until(rule, record):
            return None
        record = AlertRecord(
            rule=rule.name,
            scope=obs.scope,
            insee=obs.insee,
            device_id=obs.device_id,
            status="pending",
            since=now.timestamp(),
            value=obs.value,
            observed_at=obs.observed_at.timestamp(),
        )
        self.state.alerts[record.key] = record
        if rule.hold_for > timedelta(0):
            return Transition(rule, record, None, "pending", notify=False)
        return self._fire(rule, record, now.timestamp(), offline, before=None)

    def _pending(
        self, rule: Rule, record: AlertRecord, *, clear: bool, now: datetime, offline: set[str]
    ) -> Transition | None:
        stamp = now.timestamp()
        if clear:
            record.status, record.resolved_at = "resolved", stamp
            return Transition(rule, record, "pending", "resolved", notify=False)
        if stamp - record.since >= rule.hold_for.total_seconds():
            return self._fire(rule, record, stamp, offline, before="pending")
        return None

    def _firing(
        self, rule: Rule, record: AlertRecord, *, clear: bool, seen: bool, now: datetime, offline: set[str]
    ) -> Transition | None:
        stamp = now.timestamp()
        if clear:
            record.clearing_since = record.clearing_since or stamp
            clear_for = rule.clear_for if rule.clear_for is not None else self.rules.defaults.clear_for
            if stamp - record.clearing_since < clear_for.total_seconds():
                return None
            record.status, record.resolved_at = "resolved", stamp
            quiet = self._silence(record, stamp) is not None
            return Transition(rule, record, "firing", "resolved", notify=record.notified and not quiet)
        if seen:  # still raised, or between the levels: the clear delay starts again
            record.clearing_since = None
        if not record.notified and record.acknowledged_by is None:
            # A suppressed or silenced alert speaks up once its parent is back, or its silence
            # over, while it is still down; one somebody acknowledged meanwhile stays quiet.
            record.suppressed_by = self._suppressor(rule, record, offline)
            silence = self._silence(record, stamp)
            record.silenced_by = silence.id if silence else None
            if record.suppressed_by is None and record.silenced_by is None:
                record.notified = True
                return Transition(rule, record, "firing", "firing", notify=True)
        return None

    def _cooling_until(self, rule: Rule, record: AlertRecord | None) -> float:
        """Until when a resolved alert may not start again (only after a notified one)."""
        if record is None or not record.notified or record.resolved_at is None:
            return 0.0
        return record.resolved_at + self._cooldown(rule).total_seconds()

    def _cooldown(self, rule: Rule) -> timedelta:
        return rule.cooldown if rule.cooldown is not None else self.rules.defaults.cooldown

    def _fire(
        self, rule: Rule, record: AlertRecord, stamp: float, offline: set[str], before: AlertStatus | None
    ) -> Transition:
        record.status, record.fired_at, record.clearing_since = "firing", stamp, None
        record.suppressed_by = self._suppressor(rule, record, offline)
        silence = self._silence(record, stamp)
        record.silenced_by = silence.id if silence else None
        record.notified = record.suppressed_by is None and record.silenced_by is None
        return Transition(rule, record, before, "firing", notify=record.notified)

    def _suppressor(self, rule: Rule, record: AlertRecord, offline: set[str]) -> str | None:
        is_offline_rule = rule.condition == "offline" or (
            rule.condition == "anomaly" and rule.kind == "offline"
        )
        if not is_offline_rule or not record.device_id:
            return None
        return self._topology_now.down_ancestor(record.device_id, offline)

    def _forget_unknown_rules(self) -> None:
        # After the rules file changed: an alert whose rule is gone, or whose commune the rule
        # no longer covers, would otherwise stay firing forever, unseen.
        rules = {r.name: r for r in self.rules.rules}
        for key, record in list(self.state.alerts.items()):
            rule = rules.get(record.rule)
            if rule is None or not rule.covers(record.insee):
                log.info("forgetting alert %s: the rules file no longer covers it", key)
                del self.state.alerts[key]

    def _prune(self, now: datetime) -> None:
        stamp = now.timestamp()
        for key, record in list(self.state.alerts.items()):
            if record.status != "resolved" or record.resolved_at is None:
                continue
            try:
                rule = self.rules.rule(record.rule)
            except KeyError:
                continue
            if stamp - record.resolved_at > self._cooldown(rule).total_seconds():
                del self.state.alerts[key]

    # -- history -----------------------------------------------------------------------------

    def _record_events(self, store: Store, transitions: list[Transition], now: datetime) -> None:
        for t in transitions:
            self.state.unsaved_events.append(
                {
                    "time": now.timestamp(),
                    "insee": t.record.insee,
                    "rule": t.rule.name,
                    "scope": t.record.scope,
                    "state": t.after,
                    "severity": t.rule.severity,
                    "value": t.record.value,
                    "threshold": t.rule.raise_value,
                    "summary": self._event_summary(t),
                    "title_fr": t.rule.title_in("fr") or default_title(t.rule, "fr"),
                    "title_en": t.rule.title_in("en") or default_title(t.rule, "en"),
                    "condition": t.rule.condition,
                    "kind": t.rule.kind or "",
                }
            )
        if not self.state.unsaved_events:
            return
        events = self.state.unsaved_events
        frame = pl.DataFrame(
            {
                "time": [datetime.fromtimestamp(e["time"], UTC) for e in events],
                "insee": [e["insee"] for e in events],
                "rule": [e["rule"] for e in events],
                "scope": [e["scope"] for e in events],
                "state": [e["state"] for e in events],
                "severity": [e["severity"] for e in events],
                "value": [e["value"] for e in events],
                "threshold": [e["threshold"] for e in events],
                "summary": [e["summary"] for e in events],
                # Events kept from before titles were recorded have none.
                "title_fr": [e.get("title_fr") or e["rule"] for e in events],
                "title_en": [e.get("title_en") or e["rule"] for e in events],
                "condition": [e.get("condition") or "" for e in events],
                "kind": [e.get("kind") or "" for e in events],
            },
            schema_overrides={"value": pl.Float64, "threshold": pl.Float64},
        ).with_columns(pl.col("time").cast(TIME_DTYPE))
        try:
            store.write("alert_events", frame, tags=["insee", "rule", "scope"])
        except StoreError as exc:
            log.warning(
                "alert history kept locally (%d events) until the store is back: %s", len(events), exc
            )
            return
        self.state.unsaved_events = []

    @staticmethod
    def _event_summary(t: Transition) -> str:
        if t.after == "resolved" and t.before == "pending":
            return "condition cleared before the 'for' delay: never fired"
        if t.after == "firing" and t.record.suppressed_by:
            return f"suppressed: parent device {t.record.suppressed_by} is offline"
        if t.after == "firing" and t.record.silenced_by:
            return f"silenced: maintenance window {t.record.silenced_by}"
        if t.after == "firing" and t.before == "firing":
            return "notified now that the parent device is back or the silence is over"
        value = "?" if t.record.value is None else format_number(t.record.value, "en")
        return f"{t.after}: {t.rule.source_field or t.rule.condition} = {value}"

    # -- messages ----------------------------------------------------------------------------

    def _queue_messages(self, transitions: list[Transition], now: datetime) -> list[Envelope]:
        groups: dict[tuple[str, str, MessageKind], list[Transition]] = defaultdict(list)
        for t in transitions:
            if t.notify:
                kind: MessageKind = "firing" if t.after == "firing" else "resolved"
                groups[(t.rule.name, t.record.insee, kind)].append(t)
        suppressed = [t.record for t in transitions if t.after == "firing" and t.record.suppressed_by]
        messages = []
        for (_, insee, kind), members in groups.items():
            rule = members[0].rule
            records = [m.record for m in members]
            devices = {r.device_id for r in records if r.device_id}
            dependants = [r for r in suppressed if r.suppressed_by in devices] if kind == "firing" else []
            messages += self._enqueue(
                rule,
                insee=insee,
                kind=kind,
                records=records,
                dependants=dependants,
                now=now,
            )
        return messages

    def _enqueue(
        self,
        rule: Rule,
        *,
        insee: str,
        kind: MessageKind,
        records: list[AlertRecord],
        dependants: list[AlertRecord],
        now: datetime,
    ) -> list[Envelope]:
        delivery = self.rules.delivery_for(insee)
        if delivery is None:  # validation makes sure every covered commune has one
            log.error("rule %s: no delivery settings for %s: message dropped", rule.name, insee)
            return []
        language = delivery.language or self.language
        scopes = ",".join(sorted(r.scope for r in records))
        digest = hashlib.sha256(f"{rule.name}|{insee}|{kind}|{scopes}|{now.timestamp()}".encode()).hexdigest()
        message_id = digest[:32]
        payload = self.compose(
            rule,
            insee=insee,
            kind=kind,
            records=records,
            dependants=dependants,
            now=now,
            language=language,
            delivery=delivery,
            message_id=message_id,
        )
        envelope = Envelope(
            id=message_id,
            channel=channel_of(delivery),
            payload=payload,
            created_at=now.timestamp(),
        )
        self.outbox.put(envelope)
        return [envelope]

    def compose(
        self,
        rule: Rule,
        *,
        insee: str,
        kind: MessageKind,
        records: list[AlertRecord],
        dependants: list[AlertRecord],
        now: datetime,
        language: str,
        delivery: Delivery,
        message_id: str,
    ) -> dict[str, Any]:
        """The JSON payload of a message (the schema is in docs/alerts.md)."""
        commune = self.registry.get(insee)
        commune_name = commune.name if commune else insee
        unit = rule.display_unit
        link = f"{self.dashboard_url}/commune/{insee}"
        values = [r.value for r in records if r.value is not None]
        worst = (min(values) if rule.condition == "below" else max(values)) if values else None
        since = (
            min((r.fired_at if kind == "resolved" and r.fired_at else r.since) for r in records)
            if records
            else now.timestamp()
        )
        fmt = self._value_formatter(rule, unit, language)
        # A single commune-level alert says everything in its summary; a list is for groups.
        listed = [r for r in records if r.device_id] or (records if len(records) > 1 else [])
        item_lines = [(self._label(r, commune_name), fmt(r.value)) for r in listed]
        dependant_ids = sorted({r.device_id for r in dependants if r.device_id})
        variables = {
            "commune": commune_name,
            "insee": insee,
            "rule": rule.name,
            "title": rule.title_in(language) or default_title(rule, language),
            "description": rule.description or "",
            "severity": rule.severity,
            "severity_label": SEVERITY_LABELS[language][rule.severity],
            "summary": self._summary(rule, kind, records, fmt(worst), language),
            "value": fmt(worst),
            "threshold": self._threshold(rule, "raise", language),
            "clear_threshold": self._threshold(rule, "clear", language),
            "unit": unit,
            "field": rule.source_field or str(rule.kind or rule.condition),
            "field_label": _label_of(rule, language),
            "measurement": rule.source_measurement,
            "time": format_time(now, language),
            "since": format_time(datetime.fromtimestamp(since, UTC), language),
            "duration": format_span(now - datetime.fromtimestamp(since, UTC), language),
            "count": str(len(records)),
            "items": _items_text(item_lines, language),
            "dependants": _dependants_text(dependant_ids, language),
            "acknowledged": _acknowledged_text(records, language),
            "link": link,
        }
        rendered = self.templates.render(
            kind,
            language,
            variables,
            html_items=_items_html(item_lines, language),
            html_dependants=_dependants_html(dependant_ids, language),
        )
        recipients = list(dict.fromkeys([*delivery.recipients, *rule.recipients]))
        return {
            "id": message_id,
            "type": f"alert.{kind}",
            "created_at": now.isoformat(),
            "language": language,
            "to": recipients,
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
            "alert": {
                "rule": rule.name,
                "title": variables["title"],
                "state": kind,
                "severity": rule.severity,
                "condition": rule.condition,
                "family": rule.family,
                "measurement": rule.source_measurement,
                "field": rule.source_field,
                "kind": rule.kind,
                "unit": unit,
                "threshold": rule.raise_value,
                "clear_threshold": rule.clear_value,
                "commune": {"insee": insee, "name": commune_name},
                "dashboard_url": link,
                "since": datetime.fromtimestamp(since, UTC).isoformat(),
                "items": [
                    {
                        "scope": r.scope,
                        "device_id": r.device_id,
                        "value": r.value,
                        "observed_at": (
                            datetime.fromtimestamp(r.observed_at, UTC).isoformat() if r.observed_at else None
                        ),
                        "acknowledged": (
                            {
                                "by": r.acknowledged_by,
                                "at": datetime.fromtimestamp(r.acknowledged_at or 0, UTC).isoformat(),
                                "comment": r.acknowledged_comment,
                            }
                            if r.acknowledged_by
                            else None
                        ),
                    }
                    for r in records
                ],
                "suppressed_devices": dependant_ids,
            },
        }

    def _value_formatter(self, rule: Rule, unit: str, language: str) -> Callable[[float | None], str]:
        if rule.condition == "index_at_least":
            return lambda v: index_label(v, language)
        return lambda v: format_quantity(v, unit, language)

    def _threshold(self, rule: Rule, which: str, language: str) -> str:
        level = rule.raise_value if which == "raise" else rule.clear_value
        if rule.condition == "index_at_least":
            return index_label(level, language) + (" ou pire" if language == "fr" else " or worse")
        if rule.condition == "offline":
            span = format_span(min(rule.silence_after(f) for f in rule.families), language)
            return f"{'silence de plus de' if language == 'fr' else 'silent for more than'} {span}"
        if rule.condition == "anomaly":
            return f"{'anomalie' if language == 'fr' else 'anomaly'} « {rule.kind} »"
        return format_quantity(level, rule.display_unit, language)

    def _label(self, record: AlertRecord, commune_name: str) -> str:
        if record.device_id:
            return record.device_id + (
                f" ({record.scope.split('/', 2)[2]})" if record.scope.count("/") == 2 else ""
            )
        return commune_name

    @staticmethod
    def _summary(rule: Rule, kind: MessageKind, records: list[AlertRecord], worst: str, language: str) -> str:
        count = len(records)
        fr = language == "fr"
        if rule.condition == "offline":
            if kind == "resolved":
                return (
                    f"{count} appareil(s) émettent de nouveau."
                    if fr
                    else f"{count} device(s) are reporting again."
                )
            return (
                f"{count} appareil(s) n'envoient plus de mesures (silence le plus long : {worst})."
                if fr
                else f"{count} device(s) stopped reporting (longest silence: {worst})."
            )
        if rule.condition == "anomaly":
            if kind == "resolved":
                return (
                    f"Anomalie « {rule.kind} » terminée sur {count} appareil(s)."
                    if fr
                    else (f"Anomaly '{rule.kind}' ended on {count} device(s).")
                )
            return (
                f"Anomalie « {rule.kind} » détectée sur {count} appareil(s)."
                if fr
                else (f"Anomaly '{rule.kind}' detected on {count} device(s).")
            )
        what = _label_of(rule, language)
        if rule.condition == "index_at_least":
            what = f"indice {str(rule.index).upper()}" if fr else f"{str(rule.index).upper()} index"
        if count > 1:
            return (
                f"{what} : {count} relevés concernés, le plus extrême à {worst}."
                if fr
                else f"{what}: {count} scopes concerned, the most extreme at {worst}."
            )
        if fr:
            return f"{what} : {worst}" + (" (valeur actuelle)" if kind == "resolved" else "")
        return f"{what}: {worst}" + (" (current value)" if kind == "resolved" else "")

    # -- tests of the channels and the run loop ----------------------------------------------

    def send_test(self, rule_name: str, insee: str | None = None) -> list[Envelope]:
        """Queue a test message of a rule for one commune (the rule's first by default)."""
        rule = self.rules.rule(rule_name)
        communes = self.registry.codes if rule.communes == "*" else list(rule.communes)
        target = insee or communes[0]
        if not rule.covers(target):
            raise KeyError(f"rule {rule_name!r} does not cover commune {target}")
        return self._enqueue(rule, insee=target, kind="test", records=[], dependants=[], now=self.clock())

    def deliver(self) -> int:
        """Attempt the messages due in the outbox; return how many were delivered."""
        return sum(1 for _, attempt in self.outbox.deliver_due(self.clock()) if attempt.ok)

    def run(self, stop: threading.Event, *, interval_s: float, delivery_interval_s: float) -> None:
        """Evaluate every ``interval_s`` and deliver every ``delivery_interval_s`` until ``stop``."""
        next_evaluation = 0.0
        while not stop.is_set():
            now = self.clock().timestamp()
            if now >= next_evaluation:
                try:
                    report = self.evaluate()
                    log.info(
                        "evaluation: %d transition(s), %d message(s) queued",
                        len(report.transitions),
                        len(report.messages),
                    )
                except Exception:  # the evaluator must keep running (and delivering) through a bug
                    log.exception("evaluation failed")
                next_evaluation = now + interval_s
            try:
                self.deliver()
            except OSError:  # the outbox's disk: keep evaluating, the files are retried next time
                log.exception("delivery pass failed")
            stop.wait(delivery_interval_s)


def _action_audit(action: Action, now: datetime) -> dict[str, Any]:
    """The audit-trail line of a staff action."""
    return {
        "time": now.isoformat(),
        "type": f"action.{action.kind}",
        "action_id": action.id,
        "commune": action.insee,
        "by": action.user,
        "at": action.at.isoformat(),
        "comment": action.comment or None,
        "rule": action.rule,
        "scope": action.scope,
        "device_id": action.device_id,
        "until": action.until.isoformat() if action.until else None,
        "ends": action.ends,
    }


def channel_of(delivery: Delivery) -> dict[str, Any]:
    """The channel a commune's messages go through: its webhook, else its SMTP server."""
    if delivery.webhook is not None:
        return {"kind": "webhook", **delivery.webhook.model_dump(mode="json")}
    assert delivery.smtp is not None
    return {"kind": "smtp", **delivery.smtp.model_dump(mode="json", by_alias=True)}


def index_label(value: float | None, language: str) -> str:
    """``dégradé (3)`` for class 3 in French, ``moderate (3)`` in English."""
    if value is None:
        return "?"
    number = int(value)
    names = INDEX_CLASSES["fr" if language == "fr" else "en"]
    return f"{names[number - 1]} ({number})" if 1 <= number <= len(names) else str(number)


def default_title(rule: Rule, language: str) -> str:
    """A title made from the condition when the rule has none."""
    fr = language == "fr"
    unit = rule.display_unit
    if rule.condition == "above":
        level = format_quantity(rule.raise_value, unit, language)
        return (
            f"{_label_of(rule, language)} au-dessus de {level}"
            if fr
            else f"{_label_of(rule, language)} above {level}"
        )
    if rule.condition == "below":
        level = format_quantity(rule.raise_value, unit, language)
        return (
            f"{_label_of(rule, language)} en dessous de {level}"
            if fr
            else f"{_label_of(rule, language)} below {level}"
        )
    if rule.condition == "index_at_least":
        label = index_label(rule.raise_value, language)
        name = str(rule.index).upper()
        return f"indice {name} {label} ou pire" if fr else f"{name} index {label} or worse"
    if rule.condition == "anomaly":
        return f"anomalie « {rule.kind} »" if fr else f"anomaly '{rule.kind}'"
    return "appareils hors ligne" if fr else "devices offline"


def _label_of(rule: Rule, language: str) -> str:
    """The compared field in words ("PM10, moyenne sur 15 min")."""
    return (
        field_label(rule.source_field or "", rule.source_measurement, language) if rule.source_field else ""
    )


def _items_text(items: Iterable[tuple[str, str]], language: str) -> str:
    lines = list(items)
    header = "Détail :" if language == "fr" else "Details:"
    shown = [
        f"- {label} : {value}" if language == "fr" else f"- {label}: {value}"
        for label, value in lines[:MAX_LISTED]
    ]
    if len(lines) > MAX_LISTED:
        more = len(lines) - MAX_LISTED
        shown.append(f"… et {more} autres" if language == "fr" else f"… and {more} more")
    return "\n".join([header, *shown]) if shown else ""


def _items_html(items: Iterable[tuple[str, str]], language: str) -> str:
    import html

    lines = list(items)
    if not lines:
        return ""
    sep = " : " if language == "fr" else ": "
    rows = [f"<li>{html.escape(label)}{sep}{html.escape(value)}</li>" for label, value in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        more = len(lines) - MAX_LISTED
        rows.append(f"<li>… et {more} autres</li>" if language == "fr" else f"<li>… and {more} more</li>")
    return "<ul>\n" + "\n".join(rows) + "\n</ul>"


def _acknowledged_text(records: list[AlertRecord], language: str) -> str:
    """Who took the alert in hand, from the dashboards (one line per person and moment)."""
    lines = []
    for r in records:
        if not r.acknowledged_by or r.acknowledged_at is None:
            continue
        at = format_time(datetime.fromtimestamp(r.acknowledged_at, UTC), language)
        comment = r.acknowledged_comment
        if language == "fr":
            lines.append(
                f"Prise en charge par {r.acknowledged_by} le {at}" + (f" : « {comment} »" if comment else "")
            )
        else:
            lines.append(
                f"Acknowledged by {r.acknowledged_by} on {at}" + (f": “{comment}”" if comment else "")
            )
    return "\n".join(dict.fromkeys(lines))


def _dependants_text(devices: list[str], language: str) -> str:
    if not devices:
        return ""
    listed = ", ".join(devices[:MAX_LISTED]) + ("…" if len(devices) > MAX_LISTED else "")
    if language == "fr":
        return (
            f"{len(devices)} appareil(s) situés derrière cet équipement sont aussi injoignables "
            f"(pas de message séparé) : {listed}\n"
        )
    return f"{len(devices)} device(s) behind this equipment are unreachable too (no own message): {listed}\n"


def _dependants_html(devices: list[str], language: str) -> str:
    import html

    text = _dependants_text(devices, language).strip()
    return f"<p>{html.escape(text)}</p>" if text else ""
