"""Fabricated store contents for the dashboard tests and benchmark, in docs/measurements.md schemas.

Everything is built with vectorised numpy/polars from a seed, so a test can derive what a page
must show from the same frames it wrote. Nothing here depends on processing being done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dash
import flask
import httpx
import numpy as np
import polars as pl
from werkzeug.serving import make_server

from dashboards.config import DashboardSettings
from dashboards.tokens import TokenStore
from dashboards.users import User, UserDirectory, hash_password
from dashboards.views import paris_day_start
from sensors.communes import CommuneRegistry
from sensors.families import Family, family_spec
from storage.base import TIME, Store
from tests.servers import free_port, wait_until

WINDOW_WIDTH = {
    "1m": timedelta(minutes=1),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
ATMO_LABELS = ("bon", "moyen", "dégradé", "mauvais", "très mauvais", "extrêmement mauvais")
ATMO_COLORS = ("#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#872181")
TIME_DTYPE = pl.Datetime("ns", "UTC")


def _times(start: datetime, end: datetime, width: timedelta) -> pl.Series:
    return (
        pl.datetime_range(start, end - width, width, eager=True, time_zone="UTC").cast(TIME_DTYPE).alias(TIME)
    )


def floor_time(moment: datetime, width: timedelta) -> datetime:
    """``moment`` rounded down to a multiple of ``width`` since the epoch."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // width) * width


def aggregate_frame(
    family: str,
    window: str,
    communes: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    devices_per_commune: int = 0,
    seed: int = 7,
) -> pl.DataFrame:
    """Aggregates of every numeric field of ``family``: commune level, or per device when asked.

    The mean follows a daily cycle around a level that differs per commune; min <= mean <= p95
    <= max always holds.
    """
    spec = family_spec(family)
    assert spec is not None
    width = WINDOW_WIDTH[window]
    times = _times(floor_time(start, width), end, width)
    keys = pl.DataFrame({"insee": list(communes)})
    if devices_per_commune:
        keys = keys.join(pl.DataFrame({"device_no": list(range(devices_per_commune))}), how="cross").select(
            "insee",
            (pl.lit(f"{family[:3]}-") + pl.col("insee") + "-" + pl.col("device_no").cast(pl.String)).alias(
                "device_id"
            ),
        )
    frame = keys.join(times.to_frame(), how="cross")
    n = frame.height
    rng = np.random.default_rng(seed)
    hours = frame.get_column(TIME).dt.hour().to_numpy() + frame.get_column(TIME).dt.minute().to_numpy() / 60
    commune_level = frame.get_column("insee").cast(pl.Int64).to_numpy() % 17 / 17
    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(spec.numeric_fields):
        field = spec.field(name)
        assert field is not None
        low = field.minimum if field.minimum is not None else 0.0
        high = field.maximum if field.maximum is not None else 100.0
        scale = min(high - low, 100.0) / 4
        base = low + scale * (1 + commune_level) + scale * 0.5 * np.sin((hours - 6 - index) / 24 * 2 * np.pi)
        mean = base + rng.normal(0, scale * 0.05, n)
        spread = np.abs(rng.normal(scale * 0.1, scale * 0.02, n))
        if field.counter:
            # Cumulative counters are aggregated as their increase (docs/measurements.md).
            columns[f"{name}_increase"] = np.abs(mean)
            columns[f"{name}_resets"] = np.zeros(n, dtype=np.int64)
            columns[f"{name}_count"] = np.full(
                n, max(int(width / timedelta(seconds=spec.reporting_period_s)), 1)
            )
            continue
        columns[f"{name}_mean"] = np.clip(mean, low, high)
        columns[f"{name}_min"] = np.clip(mean - spread, low, high)
        columns[f"{name}_max"] = np.clip(mean + spread, low, high)
        columns[f"{name}_p95"] = np.clip(mean + 0.8 * spread, low, high)
        columns[f"{name}_count"] = np.full(n, max(int(width / timedelta(seconds=spec.reporting_period_s)), 1))
    return frame.with_columns(pl.DataFrame(columns)).with_columns(
        pl.col("^.*_(count|resets)$").cast(pl.Int64)
    )


def atmo_frame(communes: Sequence[str], days: Sequence[datetime], seed: int = 11) -> pl.DataFrame:
    """``atmo_daily`` rows: one per commune and day, random classes."""
    rng = np.random.default_rng(seed)
    keys = pl.DataFrame({"insee": list(communes)}).join(
        pl.DataFrame({TIME: pl.Series(list(days)).cast(TIME_DTYPE)}), how="cross"
    )
    index = rng.integers(1, 7, keys.height)
    labels = np.array(ATMO_LABELS)[index - 1]
    colors = np.array(ATMO_COLORS)[index - 1]
    frame = keys.with_columns(
        pl.Series("index", index, dtype=pl.Int64),
        pl.Series("label", labels),
        pl.Series("color", colors),
        pl.lit(True).alias("complete"),
        pl.lit("pm10").alias("pollutant"),
        *[
            pl.Series(f"sub_{p}", np.minimum(index, rng.integers(1, 7, keys.height)), dtype=pl.Int64)
            for p in ("pm25", "pm10", "no2", "o3", "so2")
        ],
    )
    return frame


def traffic_frame(communes: Sequence[str], start: datetime, end: datetime) -> pl.DataFrame:
    """Commune-level ``traffic_congestion`` every 15 minutes."""
    times = _times(floor_time(start, timedelta(minutes=15)), end, timedelta(minutes=15))
    frame = pl.DataFrame({"insee": list(communes)}).join(times.to_frame(), how="cross")
    level = (frame.get_column(TIME).dt.hour().to_numpy() // 5) % 5
    labels = np.array(["fluide", "dense", "chargé", "saturé", "bloqué"])[level]
    return frame.with_columns(
        pl.lit("_commune").alias("device_id"),
        pl.Series("level", level, dtype=pl.Int64),
        pl.Series("label", labels),
        pl.lit(0.8).alias("speed_ratio"),
        pl.lit(0.2).alias("occupancy"),
        pl.lit(120.0).alias("intensity"),
    )


def raw_frame(
    family: str,
    communes: Sequence[str],
    *,
    devices_per_commune: int,
    start: datetime,
    end: datetime,
    period: timedelta,
    seed: int = 3,
) -> pl.DataFrame:
    """Raw readings with ``received_at`` 2 s after the observed time."""
    spec = family_spec(family)
    assert spec is not None
    agg = aggregate_frame(
        family, "1m", communes, start, end, devices_per_commune=devices_per_commune, seed=seed
    )
    times = _times(floor_time(start, period), end, period)
    keys = agg.select("insee", "device_id").unique(maintain_order=True)
    frame = keys.join(times.to_frame(), how="cross")
    rng = np.random.default_rng(seed)
    values = {name: rng.normal(20, 2, frame.height) for name in spec.numeric_fields}
    return frame.with_columns(pl.DataFrame(values)).with_columns(
        (pl.col(TIME).dt.epoch("ns") + 2_000_000_000).alias("received_at")
    )


def write_raw(
    store: Store,
    family: str,
    communes: Sequence[str],
    *,
    devices_per_commune: int,
    now: datetime,
    hours: float,
    seed: int = 3,
) -> None:
    """``hours`` of raw readings, one a minute, of ``devices_per_commune`` devices, up to ``now``."""
    raw = raw_frame(
        family,
        communes,
        devices_per_commune=devices_per_commune,
        start=now - timedelta(hours=hours),
        end=now,
        period=timedelta(seconds=60),
        seed=seed,
    )
    store.write(family, raw, tags=["insee", "device_id"])


def anomaly_frame(rows: Sequence[tuple[str, str, str, str, str, datetime, float, float]]) -> pl.DataFrame:
    """``anomalies`` rows from (insee, family, device_id, field, kind, start, observed, expected)."""
    return pl.DataFrame(
        {
            "insee": [r[0] for r in rows],
            "family": [r[1] for r in rows],
            "device_id": [r[2] for r in rows],
            "field": [r[3] for r in rows],
            "kind": [r[4] for r in rows],
            TIME: pl.Series([r[5] for r in rows]).cast(TIME_DTYPE),
            "observed": [r[6] for r in rows],
            "expected": [r[7] for r in rows],
            "score": [9.0] * len(rows),
            "open": [True] * len(rows),
            "end_ns": pl.Series([None] * len(rows), dtype=pl.Int64),
        }
    )


def alert_frame(rows: Sequence[tuple[str, str, str, str, datetime, str]]) -> pl.DataFrame:
    """``alert_events`` rows from (insee, rule, scope, state, time, summary)."""
    return pl.DataFrame(
        {
            "insee": [r[0] for r in rows],
            "rule": [r[1] for r in rows],
            "scope": [r[2] for r in rows],
            "state": [r[3] for r in rows],
            TIME: pl.Series([r[4] for r in rows]).cast(TIME_DTYPE),
            "summary": [r[5] for r in rows],
            "severity": ["warning"] * len(rows),
            "value": [80.0] * len(rows),
            "threshold": [50.0] * len(rows),
        }
    )


@dataclass(frozen=True)
class Scenario:
    """What ``fill_store`` wrote, so tests derive their expectations from it."""

    now: datetime
    communes: tuple[str, ...]
    atmo: pl.DataFrame
    anomalies: pl.DataFrame
    alerts: pl.DataFrame


def fill_store(
    store: Store,
    communes: Sequence[str],
    now: datetime,
    *,
    days: int = 3,
    windows: Sequence[str] = ("1m", "15m", "1h", "1d"),
    devices_per_commune: int = 2,
    raw_hours: float = 2.0,
) -> Scenario:
    """A few days of aggregates, ATMO, traffic, raw readings, anomalies and alerts."""
    start = now - timedelta(days=days)
    for family in Family:
        for window in windows:
            store.write(
                f"{family.value}_{window}_commune",
                aggregate_frame(family.value, window, communes, start, now),
                tags=["insee"],
            )
            if devices_per_commune and window != "1m":
                store.write(
                    f"{family.value}_{window}",
                    aggregate_frame(
                        family.value, window, communes, start, now, devices_per_commune=devices_per_commune
                    ),
                    tags=["insee", "device_id"],
                )
        if devices_per_commune:
            write_raw(
                store,
                family.value,
                communes,
                devices_per_commune=devices_per_commune,
                now=now,
                hours=raw_hours,
            )
    today = paris_day_start(now)
    day_starts = [(today - timedelta(days=d)).astimezone(UTC) for d in range(days, -1, -1)]
    atmo = atmo_frame(communes, day_starts)
    store.write("atmo_daily", atmo, tags=["insee"])
    store.write("traffic_congestion", traffic_frame(communes, start, now), tags=["insee", "device_id"])
    first = communes[0]
    anomalies = anomaly_frame(
        [
            (
                code,
                "air_quality",
                f"air-{code}-0",
                "pm25",
                kind,
                now - timedelta(hours=1 + i),
                480.0 + i,
                12.5,
            )
            for i, (code, kind) in enumerate((c, k) for c in communes for k in ("spike", "stuck"))
        ]
    )
    store.write("anomalies", anomalies, tags=["insee", "family", "device_id", "field", "kind"])
    alerts = alert_frame(
        [
            (
                code,
                "pm25-high",
                f"{code}/air_quality",
                "firing",
                now - timedelta(minutes=30),
                "firing: pm25 = 62.5",  # as alerts.engine writes it
            )
            for code in communes
        ]
        + [
            (
                first,
                "reseau-coupe",
                f"{first}/network",
                "resolved",
                now - timedelta(minutes=20),
                "suppressed: parent device net-78498-01 is offline",
            )
        ]
    )
    store.write("alert_events", alerts, tags=["insee", "rule", "scope"])
    return Scenario(now=now, communes=tuple(communes), atmo=atmo, anomalies=anomalies, alerts=alerts)


@dataclass(frozen=True)
class Account:
    """A user written to a users file, with the clear password and API token tests sign in with."""

    name: str
    password: str
    token: str
    communes: tuple[str, ...]


def write_users(path: Path, accounts: Sequence[tuple[str, Sequence[str]]]) -> dict[str, Account]:
    """A users file holding these (name, communes) users, each with a password and a token."""
    directory = UserDirectory(path)
    tokens = TokenStore(path.parent / "tokens.sqlite")
    made: dict[str, Account] = {}
    users = []
    for name, communes in accounts:
        password = f"pw-{name}-secret"
        token, _ = tokens.create(name, "test", timedelta(days=90))
        users.append(User(name=name, communes=frozenset(communes), password_hash=hash_password(password)))
        made[name] = Account(name, password, token, tuple(communes))
    directory.save(users)
    return made


def add_grouped_user(
    path: Path, name: str, *, epci: Sequence[str] = (), departements: Sequence[str] = ()
) -> Account:
    """A user granted whole EPCI or départements, added to a users file, with a password and a token."""
    password = f"pw-{name}-secret"
    token, _ = TokenStore(path.parent / "tokens.sqlite").create(name, "test", timedelta(days=90))
    user = User(
        name,
        frozenset(),
        hash_password(password),
        epci=frozenset(epci),
        departements=frozenset(departements),
    )
    UserDirectory(path).upsert(user)
    return Account(name, password, token, ())


POISSY, MONTROUGE, CONFLANS = "78498", "92049", "78172"
GPSEO = "200059889"
"""The CU Grand Paris Seine et Oise (Poissy and Conflans-Sainte-Honorine are members)."""


@dataclass
class DashboardEnv:
    """A filled store, a users file and an app over them."""

    store: Store
    settings: DashboardSettings
    registry: CommuneRegistry
    scenario: Scenario
    accounts: dict[str, Account]
    app: dash.Dash


def make_env(directory: Path, now: datetime | None = None, **settings: object) -> DashboardEnv:
    """Three communes of data, users ``poissy`` (Poissy only) and ``admin`` (every commune), an app."""
    from dashboards.app import create_app
    from storage.duckdb_store import DuckDBStore

    store = DuckDBStore()
    scenario = fill_store(store, [POISSY, MONTROUGE, CONFLANS], now or datetime.now(UTC))
    accounts = write_users(directory / "users.toml", [("poissy", [POISSY]), ("admin", ["*"])])
    # No basemap: the tests run without internet.
    config = DashboardSettings.model_validate(
        {"users_file": directory / "users.toml", "basemap": "none", **settings}
    )
    registry = CommuneRegistry.load()
    # The pages see the scenario's moment, so a suite that runs past Paris midnight still finds
    # "today" where the data put it.
    app = create_app(store, config, registry, clock=lambda: scenario.now)
    return DashboardEnv(store, config, registry, scenario, accounts, app)


def dash_callback(
    outputs: Sequence[tuple[str, str]], inputs: Sequence[tuple[str, str, Any]], changed: str
) -> dict[str, Any]:
    """The body of a Dash callback request, as the renderer sends it to ``/_dash-update-component``."""
    specs = [{"id": i, "property": p} for i, p in outputs]
    output = (
        f"{outputs[0][0]}.{outputs[0][1]}"
        if len(outputs) == 1
        else ".." + "...".join(f"{i}.{p}" for i, p in outputs) + ".."
    )
    return {
        "output": output,
        "outputs": specs[0] if len(specs) == 1 else specs,
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "changedPropIds": [changed],
        "state": [],
    }


def status_callback(insee: Any) -> dict[str, Any]:
    """The commune page's status callback for ``insee`` (forged at will by the tests)."""
    return dash_callback(
        [("commune-status", "children")],
        [
            ("commune-insee", "data", insee),
            ("commune-range-key", "data", "24h"),
            ("commune-tick", "n_intervals", None),
        ],
        "commune-insee.data",
    )


@contextmanager
def serve_dashboard(
    users_file: Path, settings: dict[str, str], *, workers: int = 1, timeout: float = 60
) -> Iterator[str]:
    """``smartcity dashboard`` (gunicorn) as a child process on a free port; yields its base URL.

    ``settings`` are ``SMARTCITY_...`` environment variables (the store, the dashboard's options).
    """
    port = free_port()
    env = {
        **os.environ,
        "SMARTCITY_DASHBOARD__USERS_FILE": str(users_file),
        "SMARTCITY_DASHBOARD__PORT": str(port),
        **settings,
    }
    log_path = users_file.parent / f"dashboard-{port}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "smartcity.cli", "dashboard", "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"smartcity dashboard exited: {log_path.read_text()}")
        try:
            return httpx.get(f"{base}/login", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, timeout=timeout, what="smartcity dashboard to answer")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def filled_influxd(directory: Path, fill: Callable[[Store], object]) -> Iterator[dict[str, str]]:
    """A real ``influxd`` in ``directory``, provisioned and filled by ``fill``, stopped on exit.

    Yields the ``SMARTCITY_STORE__*`` environment variables of a dashboard reading it.
    """
    from storage.influx import InfluxStore
    from tests.storage_fixtures import provisioned_influxd

    with provisioned_influxd(directory) as (_, settings):
        store = InfluxStore(settings)
        fill(store)
        store.close()
        yield {
            "SMARTCITY_STORE__BACKEND": "influxdb",
            "SMARTCITY_STORE__INFLUXDB__URL": settings.url,
            "SMARTCITY_STORE__INFLUXDB__DATABASE": settings.database,
        }


@contextmanager
def served_in_thread(app: flask.Flask) -> Iterator[str]:
    """Serve a Flask app on a free local port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
