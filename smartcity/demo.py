"""The whole platform in one process, on the embedded default: what ``smartcity demo`` runs.

Flow, as in production but in threads of one process:

    simulated fleet --MQTT--> embedded broker --> ingest --> DuckDB store
    DuckDB store --> processing (aggregates, indices, anomalies) --> DuckDB store
    DuckDB store --> alerts --> signed webhook --> a local mailbox that prints the messages
    DuckDB store --> dashboards (Dash) and the query API, served by gunicorn

The DuckDB file belongs to one process, so everything runs in gunicorn's one worker process
(``smartcity.commands.demo``): the dashboards are served as in production, and the other parts
run in threads beside them.

The fleet first catches up from where the stored data ends (or from ``history`` ago on a first
run) as fast as the broker takes it, then follows the clock. To show an incident at once, one
commune's network switch and the devices behind it were unplugged a little while before start:
offline alerts (grouped, children suppressed behind their switch) follow the first evaluation.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from alerts.engine import Evaluator
from alerts.receiver import SignedWebhookReceiver, print_message
from alerts.service import build_evaluator, run_options
from dashboards.app import create_app
from dashboards.i18n import PARIS
from dashboards.tokens import TokenStore
from dashboards.users import (
    ALL_COMMUNES,
    User,
    UserDirectory,
    hash_password,
)
from ingest.service import Ingestor
from processing.runner import Runner
from sensors.communes import CommuneRegistry
from sensors.families import FAMILIES
from simulator.faults import FaultRates
from simulator.fleet import Fleet, FleetConfig, generate_fleet
from simulator.publisher import PublishOptions, publish_fleet
from smartcity.broker import EmbeddedBroker
from smartcity.settings import Settings
from storage.base import Store
from storage.duckdb_store import DuckDBStore

log = logging.getLogger(__name__)

DEMO_USER = "demo"
DEMO_EPCI_USER = "gpseo"
DEMO_EPCI = "200059889"
"""The CU Grand Paris Seine et Oise: five of the demo's communes are among its members."""
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
"""The example alert rules and device topology the demo runs with."""
MAILBOX_PLACEHOLDER = "http://127.0.0.1:8099/"
"""The webhook address written in examples/alerts.toml, replaced by the demo's own mailbox."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo runs; every field has the default ``smartcity demo`` uses."""

    data_dir: Path = Path("var/demo")
    host: str = "127.0.0.1"
    broker_port: int = 0
    dashboard_port: int = 8050
    history: timedelta = timedelta(hours=6)
    """How far back the fleet starts on a first run (later runs continue from the store)."""
    period_s: float = 60.0
    devices_per_family: int = 2
    seed: int = 42
    faults: str = "default"
    interval_s: float = 15.0
    """How often processing and the alert evaluator run."""
    incident_commune: str | None = None
    """The commune whose switch is unplugged; the registry's first when None."""
    incident_age: timedelta = timedelta(minutes=12)
    password: str | None = None
    """The demo user's password; None keeps the one of an earlier run (or makes one on the first)."""


@dataclass(slots=True)
class DemoInfo:
    """What the person running the demo needs to know."""

    url: str
    user: str
    password: str | None
    """The password, when this run made or set it; None when an earlier run's is kept."""
    epci_user: str
    epci_password: str | None
    """The EPCI user's password, when this run made it (its first); None afterwards."""
    epci_siren: str
    broker: str
    incident: str
    incident_commune: str
    devices: int
    resumed_from: datetime | None
    """The newest stored reading the fleet continued from, or None on a first run."""


@dataclass
class Demo:
    """Every part of the platform wired together in threads; ``start()`` then ``stop()``."""

    settings: Settings
    options: DemoOptions = field(default_factory=DemoOptions)
    on_message: Callable[[dict[str, Any]], None] = print_message
    stop_event: threading.Event = field(default_factory=threading.Event)
    dashboard_port: int = 0
    """The port the server of this process listens on (when the options asked for any port)."""
    wsgi_app: Any = None
    """The dashboards, set by ``start()``, for the server this process runs in (gunicorn)."""
    _threads: list[threading.Thread] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def start(self) -> DemoInfo:
        """Start everything in flow order; the dashboards' app is then ``wsgi_app``, to serve."""
        opts = self.options
        data = opts.data_dir
        data.mkdir(parents=True, exist_ok=True)
        registry = CommuneRegistry.load(self.settings.communes_file)

        broker = EmbeddedBroker(opts.host, opts.broker_port)
        broker.start()
        self._closers.append(broker.stop)

        store = DuckDBStore.from_settings(
            self.settings.store.duckdb.model_copy(update={"path": data / "smartcity.duckdb"})
        )
        self._closers.append(store.close)

        mqtt_settings = self.settings.mqtt.model_copy(
            update={"host": broker.host, "port": broker.port, "protocol": "3.1.1"}
        )
        ingest_settings = self.settings.ingest.model_copy(
            update={
                "client_id": "smartcity-demo-ingest",
                "shared_group": None,
                "spool_dir": data / "spool",
                "deadletter_file": data / "deadletter.jsonl",
                "metrics_port": 0,
                "log_interval_s": 60.0,
            }
        )
        ingestor = Ingestor(mqtt_settings, ingest_settings, store, registry)
        ingestor.start()
        self._closers.append(lambda: None if ingestor.stop() else log.warning("ingest did not stop cleanly"))

        fleet, incident, incident_commune, resumed_from = self._fleet(store, registry)
        self._thread("demo-fleet", self._publish, fleet, broker)
        self._wait_caught_up(store, fleet)

        runner = Runner.from_settings(store, self.settings.processing)
        self._thread("demo-processing", runner.run_forever, opts.interval_s, stop=self.stop_event.is_set)

        self.wsgi_app = self._dashboards(store, registry)
        url = f"http://{opts.host}:{self.dashboard_port or opts.dashboard_port}"
        evaluator = self._alerts(store, registry, dashboard_url=url)
        self._thread(
            "demo-alerts",
            evaluator.run,
            self.stop_event,
            **{**run_options(self.settings.alerts), "interval_s": opts.interval_s},
        )

        password = demo_user(self.settings.dashboard.users_file, opts.password)
        epci_password = demo_epci_user(self.settings.dashboard.users_file)
        return DemoInfo(
            url=url,
            user=DEMO_USER,
            password=password,
            epci_user=DEMO_EPCI_USER,
            epci_password=epci_password,
            epci_siren=DEMO_EPCI,
            broker=f"{broker.host}:{broker.port}",
            incident=incident,
            incident_commune=incident_commune,
            devices=fleet.devices.height,
            resumed_from=resumed_from,
        )

    def stop(self) -> None:
        """Stop in flow order: the fleet first, the store last; safe to call twice."""
        self.stop_event.set()
        for thread in self._threads:
            thread.join(30)
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # one part failing to stop must not leave the others running
                log.exception("while stopping the demo")

    # --- the parts --------------------------------------------------------------------------

    def _thread(self, name: str, target: Callable[..., object], *args: object, **kwargs: Any) -> None:
        thread = threading.Thread(target=target, name=name, args=args, kwargs=kwargs, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _fleet(self, store: Store, registry: CommuneRegistry) -> tuple[Fleet, str, str, datetime | None]:
        """The fleet from where the store's data ends until a day ahead, with the incident staged."""
        opts = self.options
        now = datetime.now(UTC)
        period = timedelta(seconds=opts.period_s)
        last = _last_stored(store)
        start = last + period if last else now - opts.history
        start = datetime.fromtimestamp(start.timestamp() // opts.period_s * opts.period_s, UTC)
        config = FleetConfig(
            devices_per_family=opts.devices_per_family,
            period_s=opts.period_s,
            seed=opts.seed,
            faults=FaultRates.parse(opts.faults),
            registry=registry,
        )
        fleet = generate_fleet(config, start, now + timedelta(days=1))
        insee = opts.incident_commune or registry.codes[0]
        # The switch numbered 01 and every device numbered 01 behind it (examples/devices.csv)
        # stop reporting incident_age ago.
        unplugged = pl.col("device_id").str.ends_with("-01") & (pl.col("insee") == insee)
        cut = now - opts.incident_age
        frames = {
            family: frame.filter(~(unplugged & (pl.col("time") >= cut)))
            for family, frame in fleet.frames.items()
        }
        name = registry[insee].name
        incident = (
            f"the network switch net-{insee}-01 of {name} and the devices behind it stopped "
            f"reporting at {cut.astimezone(PARIS):%H:%M} (Paris time)"
        )
        return replace(fleet, frames=frames), incident, insee, last

    def _publish(self, fleet: Fleet, broker: EmbeddedBroker) -> None:
        options = PublishOptions(
            host=broker.host,
            port=broker.port,
            protocol="3.1.1",
            client_id="smartcity-demo-fleet",
            speedup=0.0,
            live=True,
        )
        try:
            report = publish_fleet(fleet, options, stop=self.stop_event)
            log.info("demo fleet stopped: %s", report.summary())
        except Exception:
            log.exception("the demo fleet stopped publishing")

    def _wait_caught_up(self, store: Store, fleet: Fleet, timeout: float = 600.0) -> None:
        """Block until the readings of the past are stored, so processing and alerts start on a
        store that is up to date (a replay in progress would look like every device offline)."""
        now = datetime.now(UTC)
        targets: dict[str, datetime] = {}
        for family, frame in fleet.frames.items():
            past = frame.filter(pl.col("time") < now)
            if not past.is_empty():
                targets[family] = past["time"].max()  # type: ignore[assignment]
        deadline = time.monotonic() + timeout
        while not self.stop_event.is_set():
            behind = [family for family, target in targets.items() if _last_of(store, family) < target]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fleet's history did not reach the store in time: {behind}")
            self.stop_event.wait(0.5)

    def _dashboards(self, store: Store, registry: CommuneRegistry) -> Any:
        """The dashboards' WSGI app over the demo's store, for the server this process runs in."""
        opts = self.options
        settings = self.settings.dashboard.model_copy(
            update={
                "users_file": opts.data_dir / "users.toml",
                "host": opts.host,
                # Written by _alerts before the dashboards read them: charts draw the rules'
                # levels, device pages show the parent switch.
                "alert_rules_file": opts.data_dir / "alerts.toml",
                "topology_file": opts.data_dir / "devices.csv",
            }
        )
        self.settings = self.settings.model_copy(update={"dashboard": settings})
        return create_app(store, settings, registry).server

    def _alerts(self, store: Store, registry: CommuneRegistry, *, dashboard_url: str) -> Evaluator:
        """The alert evaluator over the example rules, delivering to a local signed mailbox."""
        data = self.options.data_dir
        secret = _demo_secret(data / "webhook.secret")
        mailbox = SignedWebhookReceiver([secret], self.on_message, host=self.options.host, port=0)
        mailbox.start()
        self._closers.append(mailbox.stop)
        rules_file = data / "alerts.toml"
        rules = (EXAMPLES / "alerts.toml").read_text("utf-8")
        rules_file.write_text(
            rules.replace(MAILBOX_PLACEHOLDER, f"http://{self.options.host}:{mailbox.port}/"), "utf-8"
        )
        (data / "devices.csv").write_text((EXAMPLES / "devices.csv").read_text("utf-8"), "utf-8")
        settings = self.settings.alerts.model_copy(
            update={
                "outbox_dir": data / "outbox",
                "state_file": data / "alerts_state.json",
                "audit_file": data / "alerts_audit.jsonl",
                "dashboard_url": dashboard_url,
            }
        )
        evaluator = build_evaluator(settings, store, registry, rules_file=rules_file)
        for name in evaluator.rules.missing_secrets():
            os.environ[name] = secret
        self._closers.append(evaluator.outbox.close)
        return evaluator


DEMO_TOKEN_DAYS = 90
"""Lifetime of a token made by ``smartcity demo add-token``."""


def demo_user(users_file: Path, password: str | None = None) -> str | None:
    """Make sure the demo user exists; return its password when this call made or set one.

    An existing demo user keeps its password and its API tokens across restarts: a restart must
    not lock out a notebook. ``password`` sets a new one (tokens kept).
    """
    return _ensure_user(users_file, User(DEMO_USER, frozenset({ALL_COMMUNES})), password)


def demo_epci_user(users_file: Path) -> str | None:
    """Make sure the EPCI user (every member commune of ``DEMO_EPCI``) exists; its new password."""
    return _ensure_user(users_file, User(DEMO_EPCI_USER, frozenset(), epci=frozenset({DEMO_EPCI})))


def _ensure_user(users_file: Path, wanted: User, password: str | None = None) -> str | None:
    directory = UserDirectory(users_file)
    existing = directory.get(wanted.name)
    if existing is not None and password is None:
        return None
    chosen = password or secrets.token_urlsafe(9)
    tokens = existing.tokens if existing is not None else ()
    directory.upsert(replace(wanted, password_hash=hash_password(chosen), tokens=tokens))
    return chosen


def demo_token(users_file: Path, name: str = "notebook") -> str:
    """A new API token for the demo user (which must exist: run the demo once), printed once."""
    if UserDirectory(users_file).get(DEMO_USER) is None:
        raise ValueError(f"no demo user in {users_file}: run `smartcity demo` once first")
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    # Where `smartcity dashboard` keeps tokens by default: beside the users file.
    tokens = TokenStore(users_file.parent / "tokens.sqlite")
    secret, _record = tokens.create(DEMO_USER, f"{name}-{stamp}", timedelta(days=DEMO_TOKEN_DAYS))
    return secret


def _demo_secret(path: Path) -> str:
    """The mailbox's signing secret, kept so that messages queued before a restart still verify."""
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_hex(16)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


def _last_of(store: Store, family: str) -> datetime:
    series = store.series(family)
    if series.is_empty():
        return datetime.min.replace(tzinfo=UTC)
    last: datetime = series["last_time"].max()  # type: ignore[assignment]
    return last


def _last_stored(store: Store) -> datetime | None:
    """The newest reading time of any family, or None for an empty store."""
    stored = set(store.measurements())
    lasts = [_last_of(store, family.value) for family in FAMILIES if family.value in stored]
    found = [t for t in lasts if t.year > 1]
    return max(found) if found else None
