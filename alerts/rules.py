"""The alert rules file: TOML, validated at start-up with errors that name the rule, the key,
the value and what was expected.

The reference for operators is docs/alerts.md; ``examples/alerts.toml`` is a full example.
"""

from __future__ import annotations

import os
import re
import tomllib
import unicodedata
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

import processing.indices  # noqa: F401 - the index modules register themselves in the catalogue
from alerts.durations import parse_duration
from processing.windows import WINDOW_WIDTHS as WINDOWS
from sensors.catalogue import index_spec, indices, statistic_unit, statistics_of
from sensors.communes import CommuneRegistry
from sensors.families import FAMILIES, Family, family_spec

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Severity = Literal["info", "warning", "critical"]
Language = Literal["fr", "en"]
ConditionName = Literal["above", "below", "index_at_least", "anomaly", "offline"]
AnomalyKind = Literal["out_of_bounds", "spike", "stuck", "drift", "offline"]

INDEX_MEASUREMENTS: dict[str, str] = {
    # What an index_at_least rule may name -> the index measurement (six-class indices only).
    spec.rule_name: name
    for name, spec in indices().items()
    if spec.rule_name is not None
}
INDEX_CLASSES: dict[str, tuple[str, ...]] = {
    # Class names of the ATMO index (arrêté of 10 July 2020) and their EAQI equivalents; both
    # indices have six classes, so either vocabulary names the same class number.
    "fr": ("bon", "moyen", "dégradé", "mauvais", "très mauvais", "extrêmement mauvais"),
    "en": ("good", "fair", "moderate", "poor", "very poor", "extremely poor"),
}

DERIVED_MEASUREMENTS: dict[str, tuple[Family, dict[str, str], timedelta]] = {
    # measurement -> (family, field -> unit, default lookback): the indices of the catalogue.
    name: (spec.family, spec.units, spec.staleness)
    for name, spec in indices().items()
}

_RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class RulesError(ValueError):
    """The rules file is invalid; the message lists every problem, one per line."""


def _normalise_class(text: str) -> str:
    stripped = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[\s_-]+", " ", stripped.strip().lower())


_CLASS_NUMBERS: dict[str, int] = {
    _normalise_class(name): number
    for names in INDEX_CLASSES.values()
    for number, name in enumerate(names, start=1)
}


def index_class(value: object) -> int:
    """The class number (1-6) of an index class given by number or by name, in French or English."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 6:
        return value
    if isinstance(value, float) and value.is_integer() and 1 <= value <= 6:
        return int(value)
    if isinstance(value, str) and _normalise_class(value) in _CLASS_NUMBERS:
        return _CLASS_NUMBERS[_normalise_class(value)]
    names = ", ".join(repr(n) for n in INDEX_CLASSES["fr"])
    raise ValueError(f"expected an index class 1 to 6 or one of {names}")


def _shown(value: object) -> object:
    """A value as the operator wrote it: TOML's 50 is validated as 50.0 but shown as 50."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check_env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            "expected the NAME of an environment variable (capitals, digits, underscores), "
            "e.g. 'SMARTCITY_WEBHOOK_SECRET_78498': secrets never go in the rules file"
        )
    return value


def _check_emails(values: list[str]) -> list[str]:
    bad = [v for v in values if not _EMAIL.match(v)]
    if bad:
        raise ValueError(f"expected email addresses, got {', '.join(repr(b) for b in bad)}")
    return values


EnvName = Annotated[str, AfterValidator(_check_env_name)]
Emails = Annotated[list[str], AfterValidator(_check_emails)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class WebhookChannel(_Strict):
    """An email webhook: a relay or transactional-email service that accepts signed JSON."""

    url: str
    secret_env: EnvName
    """Environment variable holding the HMAC secret shared with the receiver."""
    timeout_s: float = Field(10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value


class SmtpChannel(_Strict):
    """Direct delivery to a mail server."""

    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    """``starttls`` (submission, port 587), ``ssl`` (implicit TLS, port 465), ``none`` (local relay)."""
    username: str | None = None
    password_env: EnvName | None = None
    """Environment variable holding the password; required with ``username``."""
    sender: str = Field(alias="from")
    ca_file: Path | None = None
    """A CA bundle to trust instead of the system's (a commune's internal mail server)."""
    timeout_s: float = Field(30.0, gt=0, le=300)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not _EMAIL.match(value.rsplit("<", maxsplit=1)[-1].rstrip(">").strip()):
            raise ValueError("expected an email address, e.g. 'alertes@ville-poissy.fr'")
        return value

    @model_validator(mode="after")
    def _auth(self) -> SmtpChannel:
        if self.username and not self.password_env:
            raise ValueError("key 'password_env': missing: a username needs a password_env")
        return self


class Delivery(_Strict):
    """Who is told for one commune (or ``"*"``, every commune without its own), and how."""

    recipients: Emails = Field(default_factory=list)
    webhook: WebhookChannel | None = None
    smtp: SmtpChannel | None = None
    language: Language | None = None

    @model_validator(mode="after")
    def _one_channel(self) -> Delivery:
        if self.webhook is None and self.smtp is None:
            raise ValueError("expected a [webhook] or an [smtp] table: a commune needs a channel")
        return self


class Defaults(_Strict):
    """Values every rule inherits unless it sets its own."""

    cooldown: Duration = timedelta(minutes=30)
    clear_for: Duration = timedelta(0)
    language: Language | None = None
    dashboard_url: str | None = None
    topology: Path | None = None
    """A devices CSV (device_id, parent) for suppressing children of an offline device."""
    templates_dir: Path | None = None


class Rule(_Strict):
    """One alert rule. Which keys apply depends on ``condition`` (see docs/alerts.md)."""

    name: str
    title: str | dict[Language, str] | None = None
    """One title, or one per language: ``title = { fr = "...", en = "..." }``."""
    description: str | None = None
    communes: list[str] | Literal["*"]
    family: str | list[str]
    condition: ConditionName
    measurement: str | None = None
    field: str | None = None
    index: str | None = None
    kind: AnomalyKind | None = None
    raise_level: float | str | None = Field(None, alias="raise")
    clear_level: float | str | None = Field(None, alias="clear")
    hold_for: Duration = Field(timedelta(0), alias="for")
    clear_for: Duration | None = None
    cooldown: Duration | None = None
    lookback: Duration | None = None
    silence: Duration | None = None
    severity: Severity = "warning"
    recipients: Emails = Field(default_factory=list)
    unit: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _RULE_NAME.match(value):
            raise ValueError("expected lower-case letters, digits, '-', '_' or '.', at most 64 characters")
        return value

    @field_validator("communes", mode="before")
    @classmethod
    def _communes(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and value != "*":
            value = [value]
        if isinstance(value, list):
            registry = (info.context or {}).get("registry")
            if registry is not None:
                unknown = [c for c in value if not isinstance(c, str) or c not in registry]
                if unknown:
                    raise ValueError(
                        f"unknown INSEE code(s) {', '.join(repr(u) for u in unknown)}: expected codes "
                        f'of the commune registry ({", ".join(registry.codes)}) or "*"'
                    )
            if not value:
                raise ValueError('expected at least one INSEE code, or "*" for every commune')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        problems: list[str] = []

        def problem(key: str, value: object, expected: str) -> None:
            problems.append(f"key {key!r}: value {_shown(value)!r}: expected {expected}")

        families = ", ".join(f.value for f in Family)
        spec = family_spec(self.single_family)
        several = self.condition in ("anomaly", "offline")
        if isinstance(self.family, list):
            if not several:
                problem("family", self.family, f"one family for a {self.condition} condition")
            elif not self.family or any(family_spec(f) is None for f in self.family):
                problem("family", self.family, f"a list of families among {families}")
        elif spec is None and not (self.family == "*" and several):
            problem(
                "family", self.family, f"one of {families}" + ' (or "*" or a list for anomaly and offline)'
            )
        if self.condition in ("above", "below"):
            self._check_threshold(problem)
        elif self.condition == "index_at_least":
            self._check_index(problem)
        elif self.condition == "anomaly":
            if self.kind is None:
                problem("kind", None, "one of out_of_bounds, spike, stuck, drift, offline")
            if self.field is not None and spec is not None and spec.field(self.field) is None:
                problem("field", self.field, f"a field of {self.family}: {', '.join(spec.numeric_fields)}")
        for key, value in (("raise", self.raise_level), ("clear", self.clear_level)):
            if value is not None and self.condition in ("anomaly", "offline"):
                problem(key, value, f"nothing: {self.condition} conditions have no level")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _check_threshold(self, problem: Any) -> None:
        spec = family_spec(self.single_family)
        if self.measurement is None:
            problem(
                "measurement", None, f"a measurement, e.g. '{self.family}_15m_commune' or '{self.family}'"
            )
        elif spec is not None:
            fields = measurement_fields(spec.family, self.measurement)
            if fields is None:
                problem(
                    "measurement",
                    self.measurement,
                    f"'{self.family}' (raw), '{self.family}_<window>' or '{self.family}_<window>_commune' "
                    f"with a window in {', '.join(WINDOWS)}, or one of "
                    + ", ".join(m for m, d in DERIVED_MEASUREMENTS.items() if d[0] == spec.family),
                )
            elif self.field is None or self.field not in fields:
                shown = ", ".join(list(fields)[:12]) + (", ..." if len(fields) > 12 else "")
                problem("field", self.field, f"a field of {self.measurement}: {shown}")
        for key, value in (("raise", self.raise_level), ("clear", self.clear_level)):
            if value is not None and (isinstance(value, str | bool)):
                problem(key, value, "a number")
        if self.raise_level is None:
            problem("raise", None, "a number: the level at which the alert is raised")
        if isinstance(self.raise_level, int | float) and isinstance(self.clear_level, int | float):
            if self.condition == "above" and self.clear_level > self.raise_level:
                problem(
                    "clear",
                    self.clear_level,
                    f"a level at or below raise ({_shown(self.raise_level)}) for 'above'",
                )
            if self.condition == "below" and self.clear_level < self.raise_level:
                problem(
                    "clear",
                    self.clear_level,
                    f"a level at or above raise ({_shown(self.raise_level)}) for 'below'",
                )

    def _check_index(self, problem: Any) -> None:
        known = " or ".join(f"{key!r} ({measurement})" for key, measurement in INDEX_MEASUREMENTS.items())
        if self.index not in INDEX_MEASUREMENTS:
            problem("index", self.index, known)
        else:
            family = index_spec(INDEX_MEASUREMENTS[self.index]).family.value
            if self.family != family:
                problem("family", self.family, f"{family!r} for an index condition on {self.index!r}")
        try:
            raised = index_class(self.raise_level)
            object.__setattr__(self, "raise_level", float(raised))
        except ValueError as exc:
            problem("raise", self.raise_level, str(exc).removeprefix("expected "))
            return
        if self.clear_level is None:
            return
        try:
            cleared = index_class(self.clear_level)
        except ValueError as exc:
            problem("clear", self.clear_level, str(exc).removeprefix("expected "))
            return
        if cleared > raised:
            problem("clear", self.clear_level, f"a class at or below the raise class ({raised})")
        object.__setattr__(self, "clear_level", float(cleared))

    # -- what the evaluator needs, derived from the validated keys --------------------------

    @property
    def single_family(self) -> str:
        """The family when the rule names exactly one ("" otherwise)."""
        return self.family if isinstance(self.family, str) and self.family != "*" else ""

    @property
    def families(self) -> list[str]:
        """Every family the rule watches ("*" expanded)."""
        if self.family == "*":
            return [f.value for f in Family]
        return list(self.family) if isinstance(self.family, list) else [self.family]

    @property
    def source_measurement(self) -> str:
        """The measurement this rule reads."""
        if self.condition == "index_at_least":
            return INDEX_MEASUREMENTS[self.index or "atmo"]
        if self.condition == "anomaly":
            return "anomalies"
        if self.condition == "offline":
            return ",".join(self.families) if self.family != "*" else "*"
        return self.measurement or self.single_family

    @property
    def source_field(self) -> str | None:
        """The field whose value is compared (None for anomaly and offline conditions)."""
        if self.condition == "index_at_least":
            return "index"
        return self.field if self.condition in ("above", "below") else None

    @property
    def raise_value(self) -> float | None:
        """The numeric raise level (an index class number for index conditions)."""
        return float(self.raise_level) if isinstance(self.raise_level, int | float) else None

    @property
    def clear_value(self) -> float | None:
        """The numeric clear level; the raise level when none is given (no hysteresis)."""
        if isinstance(self.clear_level, int | float):
            return float(self.clear_level)
        return self.raise_value

    @property
    def display_unit(self) -> str:
        """The unit of the compared value, for messages."""
        if self.unit is not None:
            return self.unit
        if self.condition == "offline":
            return "min"
        spec = family_spec(self.single_family)
        if spec is None or self.condition not in {"above", "below"}:
            return ""
        fields = measurement_fields(spec.family, self.source_measurement) or {}
        return fields.get(self.field or "", "")

    @property
    def default_lookback(self) -> timedelta:
        """How far back the evaluator reads for the latest value, unless ``lookback`` is set."""
        if self.lookback is not None:
            return self.lookback
        measurement = self.source_measurement
        if self.condition == "anomaly":
            return timedelta(days=30)
        if measurement in DERIVED_MEASUREMENTS:
            return DERIVED_MEASUREMENTS[measurement][2]
        for window, size in WINDOWS.items():
            if f"_{window}" in measurement:
                return max(3 * size, timedelta(minutes=15))
        return timedelta(minutes=15)

    def silence_after(self, family: str) -> timedelta:
        """How long a device of ``family`` may stay silent before an offline rule counts it offline."""
        if self.silence is not None:
            return self.silence
        spec = family_spec(family)
        return timedelta(seconds=3 * (spec.reporting_period_s if spec else 60.0))

    def title_in(self, language: str) -> str | None:
        """The title in ``language``; the other language's when only that one is written."""
        if self.title is None or isinstance(self.title, str):
            return self.title
        return self.title.get("en" if language == "en" else "fr") or next(iter(self.title.values()), None)

    def covers(self, insee: str) -> bool:
        """Whether the rule applies to this commune."""
        return self.communes == "*" or insee in self.communes


def measurement_fields(family: Family, measurement: str) -> dict[str, str] | None:
    """Fields (name -> unit) of a raw, aggregate or derived measurement of ``family``, or None."""
    spec = FAMILIES[family]
    units = {
        f.name: ("" if f.unit == "1" else f.unit) for f in spec.fields if f.kind in ("float", "int", "bool")
    }
    if measurement == family.value:
        return units
    if measurement in DERIVED_MEASUREMENTS:
        owner, fields, _ = DERIVED_MEASUREMENTS[measurement]
        return dict(fields) if owner == family else None
    match = re.fullmatch(rf"{family.value}_({'|'.join(WINDOWS)})(_commune)?", measurement)
    if not match:
        return None
    return {
        f"{field.name}_{stat.name}": statistic_unit(stat.name, units[field.name])
        for field in spec.fields
        if field.name in spec.numeric_fields
        for stat in statistics_of(field)
    }


class RulesFile(_Strict):
    """A whole rules file."""

    defaults: Defaults = Field(default_factory=Defaults)
    delivery: dict[str, Delivery] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    source: Path | None = Field(None, exclude=True)

    @field_validator("delivery", mode="before")
    @classmethod
    def _delivery_keys(cls, value: Any, info: ValidationInfo) -> Any:
        registry = (info.context or {}).get("registry")
        if isinstance(value, dict) and registry is not None:
            unknown = [k for k in value if k != "*" and k not in registry]
            if unknown:
                raise ValueError(
                    f"unknown INSEE code(s) {', '.join(repr(u) for u in unknown)} in [delivery]: expected "
                    'codes of the commune registry or "*"'
                )
        return value

    @model_validator(mode="after")
    def _whole(self, info: ValidationInfo) -> RulesFile:
        problems: list[str] = []
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                problems.append(
                    f"rule {rule.name!r}: key 'name': the name is used by two rules: expected unique names"
                )
            seen.add(rule.name)
        registry: CommuneRegistry | None = (info.context or {}).get("registry")
        if registry is not None:
            for rule in self.rules:
                communes = registry.codes if rule.communes == "*" else rule.communes
                lacking = [c for c in communes if self.delivery_for(c) is None]
                if lacking:
                    problems.append(
                        f"rule {rule.name!r}: key 'communes': no [delivery] for {', '.join(lacking)}: "
                        'expected a [delivery."<insee>"] or [delivery."*"] table with a webhook or SMTP'
                    )
                for insee in communes:
                    delivery = self.delivery_for(insee)
                    if delivery is not None and not (delivery.recipients or rule.recipients):
                        problems.append(
                            f"rule {rule.name!r}: key 'recipients': nobody to tell for {insee}: expected "
                            "recipients in the rule or in the commune's [delivery]"
                        )
                        break
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def delivery_for(self, insee: str) -> Delivery | None:
        """The delivery settings of a commune: its own, else the ``"*"`` ones, else None."""
        return self.delivery.get(insee) or self.delivery.get("*")

    def rule(self, name: str) -> Rule:
        """The rule of this name; ``KeyError`` naming the known rules otherwise."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(f"no rule named {name!r}; the rules are: {', '.join(r.name for r in self.rules)}")

    def missing_secrets(self, environ: dict[str, str] | None = None) -> list[str]:
        """Environment variables named by the delivery settings that are not set."""
        env = os.environ if environ is None else environ
        names = set()
        for delivery in self.delivery.values():
            if delivery.webhook:
                names.add(delivery.webhook.secret_env)
            if delivery.smtp and delivery.smtp.password_env:
                names.add(delivery.smtp.password_env)
        return sorted(n for n in names if not env.get(n))


def load_rules(path: str | Path, registry: CommuneRegistry) -> RulesFile:
    """Read and validate a rules file; raise ``RulesError`` listing every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise RulesError(f"cannot read rules file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"rules file {path} is not valid TOML: {exc}") from exc
    return parse_rules(data, registry, source=path)


def parse_rules(data: dict[str, Any], registry: CommuneRegistry, *, source: Path | None = None) -> RulesFile:
    """Validate rules already parsed from TOML; relative paths are resolved against ``source``."""
    try:
        rules = RulesFile.model_validate({**data, "source": source}, context={"registry": registry})
    except ValidationError as exc:
        raise RulesError(explain(exc, data, source)) from None
    if source is not None:
        base = source.parent
        defaults = rules.defaults
        updates = {
            key: base / value
            for key, value in (("topology", defaults.topology), ("templates_dir", defaults.templates_dir))
            if value is not None and not value.is_absolute()
        }
        if updates:
            rules = rules.model_copy(update={"defaults": defaults.model_copy(update=updates)})
    return rules


def explain(exc: ValidationError, data: dict[str, Any], source: Path | None) -> str:
    """One line per problem: where (rule name, key), the value given, and what was expected."""
    where = f"rules file {source}" if source else "rules"
    lines = [f"{where} is invalid:"]
    raw = data.get("rules")
    raw_rules: list[Any] = raw if isinstance(raw, list) else []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        prefix = _describe_location(loc, raw_rules)
        keys = [p for p in loc if not p.isdigit() and p not in ("rules", "delivery")]
        value = error.get("input")
        for part in message.split("\n"):
            line = (
                "expected " + part.removeprefix("Input should be ")
                if part.startswith("Input should be ")
                else part
            )
            if line.startswith(("key ", "rule ")) or not keys:
                lines.append(f"  {prefix}: {line}" if prefix else f"  {line}")
            else:
                key = ".".join(loc[loc.index(keys[0]) :]) if prefix.startswith("rule") else ".".join(keys)
                shown = "" if isinstance(value, dict) else f": value {value!r}"
                if error["type"] == "missing":
                    shown, line = "", "missing: expected a value"
                elif error["type"] == "extra_forbidden":
                    line = "unknown key: expected one of the keys in docs/alerts.md"
                lines.append(f"  {prefix}{': ' if prefix else ''}key {key!r}{shown}: {line}")
    return "\n".join(lines)


def _describe_location(loc: list[str], raw_rules: list[Any]) -> str:
    if len(loc) >= 2 and loc[0] == "rules" and loc[1].isdigit():
        index = int(loc[1])
        raw = raw_rules[index] if index < len(raw_rules) else {}
        name = raw.get("name") if isinstance(raw, dict) else None
        return f"rule {name!r} (rules[{index}])" if name else f"rules[{index}] (no name)"
    if len(loc) >= 2 and loc[0] == "delivery":
        return f'[delivery."{loc[1]}"]'
    if loc and loc[0] == "defaults":
        return "[defaults]"
    return ""
