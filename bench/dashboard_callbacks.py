"""Dashboards and API figures: callback latency, chart payload, a year of hourly aggregates.

    .venv/bin/python -m bench.dashboard_callbacks [--quick]

A DuckDB store is filled with 30 days of the nine communes' aggregates (commune level at every
resolution, device level at 15 min, 1 h and 1 day), a year of hourly commune aggregates, ATMO,
traffic, anomalies and alerts, all fabricated vectorised (tests/dashboard_fixtures.py). Then:

* the commune page's data callbacks, server side, for every family and range: p95 latency;
* the largest chart payload (the JSON Dash sends), against the baseline of drawing the same
  range from 1-minute aggregates without choosing a resolution or downsampling;
* the API returning a year of hourly aggregates of one commune (Arrow, CSV, JSON) over real
  HTTP, against reading the same rows from the store directly.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import plotly.graph_objects as go
import plotly.io as pio
from werkzeug.serving import make_server

from dashboards.access import CommuneData
from dashboards.app import create_app
from dashboards.config import DashboardSettings
from dashboards.pages import commune, device, overview
from dashboards.timerange import TimeRange
from sensors.communes import CommuneRegistry
from sensors.families import Family
from smartcity.client import Client
from storage.duckdb_store import DuckDBStore
from tests.dashboard_fixtures import aggregate_frame, fill_store, write_users

RANGES = ("3h", "24h", "7d", "30d", "1y")
FIELDS = {"air_quality": "pm25", "traffic": "intensity", "building": "activePower", "camera": "peopleCount"}
FIELDS["network"] = "throughputIn"


def fill(store: DuckDBStore, communes: list[str], now: datetime, days: int, year_communes: list[str]) -> None:
    """The benchmark's store: ``days`` of everything, and a year of hourly commune aggregates."""
    fill_store(store, communes, now, days=days, devices_per_commune=4, raw_hours=1.0)
    start = now - timedelta(days=365)
    for family in Family:
        old = aggregate_frame(family.value, "1h", year_communes, start, now - timedelta(days=days))
        store.write(f"{family.value}_1h_commune", old, tags=["insee"])


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of each of ``repeats`` calls."""
    spent = []
    for _ in range(repeats):
        begin = time.perf_counter()
        call()
        spent.append(time.perf_counter() - begin)
    return spent


def p95(values: list[float]) -> float:
    """The 95th percentile (inclusive method)."""
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def payload_bytes(figure: go.Figure) -> int:
    """Size of the figure as Dash serialises it for the browser."""
    return len(pio.to_json(figure, validate=False).encode())


def naive_figure(data: CommuneData, insee: str, family: str, field: str, span: TimeRange) -> go.Figure:
    """The baseline: every 1-minute mean/min/max of the range, as peers' dashboards draw them."""
    frame = data.aggregates(
        family, [insee], span, "1m", fields=[f"{field}_mean", f"{field}_min", f"{field}_max"]
    )
    x = frame.get_column("time").to_list()
    figure = go.Figure()
    for stat in ("mean", "min", "max"):
        figure.add_trace(go.Scatter(x=x, y=frame.get_column(f"{field}_{stat}").to_list(), mode="lines"))
    return figure


def main() -> None:
    """Fill the store, measure, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="7 days and 3 communes, fewer repeats")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log per request
    registry = CommuneRegistry.load()
    communes = registry.codes[:3] if args.quick else registry.codes
    days, repeats = (7, 3) if args.quick else (30, 7)
    poissy = communes[0]
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "bench.duckdb")
        begin = time.perf_counter()
        fill(store, communes, now, days, [poissy])
        print(
            f"store: {len(communes)} communes, {days} days (+1 year hourly for {poissy}), "
            f"filled in {time.perf_counter() - begin:.1f} s"
        )
        accounts = write_users(Path(tmp) / "users.toml", [("admin", ["*"])])
        settings = DashboardSettings(users_file=Path(tmp) / "users.toml")
        app = create_app(store, settings, registry)
        user = app.server.extensions["smartcity"].users.get("admin")
        data = CommuneData(store, user, registry)

        latencies: dict[str, list[float]] = {"family chart": [], "ATMO chart": [], "status tables": []}
        largest, largest_where = 0, ""
        for range_key in RANGES:
            for family, field in FIELDS.items():
                latencies["family chart"] += timed(
                    partial(
                        commune.family_panel,
                        data,
                        poissy,
                        family,
                        field,
                        range_key=range_key,
                        lang="fr",
                        settings=settings,
                        now=now,
                    ),
                    repeats,
                )
                figure, _ = commune.family_panel(
                    data, poissy, family, field, range_key=range_key, lang="fr", settings=settings, now=now
                )
                size = payload_bytes(figure)
                if size > largest:
                    largest, largest_where = size, f"{family}.{field} over {range_key}"
            latencies["ATMO chart"] += timed(
                partial(commune.atmo_panel, data, poissy, range_key, "fr", now), repeats
            )
            latencies["status tables"] += timed(
                partial(commune.status_panel, data, poissy, range_key, lang="fr", settings=settings, now=now),
                repeats,
            )
        every = [value for values in latencies.values() for value in values]
        print("\ncommune page data callbacks, server side (ms):")
        for name, values in latencies.items():
            print(
                f"  {name:14s} median {statistics.median(values) * 1e3:7.1f}  p95 {p95(values) * 1e3:7.1f}"
                f"  ({len(values)} calls)"
            )
        print(
            f"  {'all':14s} median {statistics.median(every) * 1e3:7.1f}  p95 {p95(every) * 1e3:7.1f}"
            "  (target p95 < 150)"
        )
        others = {
            "overview (all 9 communes)": timed(
                partial(overview.overview_content, data, "fr", settings, now), repeats
            ),
            "device page, 24 h raw": timed(
                partial(
                    device.device_panel,
                    data,
                    {"insee": poissy, "device_id": f"air-{poissy}-0", "family": "air_quality"},
                    "pm25",
                    range_key="24h",
                    lang="fr",
                    settings=settings,
                    now=now,
                ),
                repeats,
            ),
        }
        print("other pages (ms):")
        for name, values in others.items():
            print(f"  {name:26s} median {statistics.median(values) * 1e3:7.1f}  p95 {p95(values) * 1e3:7.1f}")

        span = TimeRange.last(timedelta(days=days), now)
        naive_time = timed(lambda: naive_figure(data, poissy, "air_quality", "pm25", span), 2)
        naive = payload_bytes(naive_figure(data, poissy, "air_quality", "pm25", span))
        ours_figure, _ = commune.family_panel(
            data,
            poissy,
            "air_quality",
            "pm25",
            range_key="30d" if days >= 30 else "7d",
            lang="fr",
            settings=settings,
            now=now,
        )
        ours = payload_bytes(ours_figure)
        print(f"\nlargest chart payload: {largest / 1024:.1f} KiB ({largest_where}; target < 500 KiB)")
        print(
            f"baseline, {days} days of 1-minute mean/min/max drawn as is: {naive / 1024:.1f} KiB, "
            f"built in {statistics.median(naive_time) * 1e3:.0f} ms; ours for the same range: "
            f"{ours / 1024:.1f} KiB (ratio {naive / ours:.0f}x smaller)"
        )

        server = make_server("127.0.0.1", 0, app.server, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        year = TimeRange.last(timedelta(days=365), now)
        direct = timed(
            lambda: store.read(
                "air_quality_1h_commune", start=year.start, end=year.end, where={"insee": [poissy]}
            ),
            repeats,
        )
        rows = store.read("air_quality_1h_commune", start=year.start, end=year.end, where={"insee": [poissy]})
        print(
            f"\nAPI, a year of hourly air_quality aggregates of one commune ({rows.height} rows x "
            f"{rows.width} columns), over HTTP:"
        )
        print(f"  store read directly (baseline): median {statistics.median(direct) * 1e3:.0f} ms")
        with Client(f"http://127.0.0.1:{server.port}", accounts["admin"].token) as client:
            arrow = timed(
                lambda: client.aggregates("air_quality", communes=[poissy], start="-365d", every="1h"),
                repeats,
            )
            print(
                f"  Client.aggregates (Arrow IPC): median {statistics.median(arrow) * 1e3:.0f} ms, "
                f"max {max(arrow) * 1e3:.0f} ms (target < 1000; "
                f"{statistics.median(arrow) / statistics.median(direct):.1f}x the direct read)"
            )
        headers = {"Authorization": f"Bearer {accounts['admin'].token}"}
        for answer_format in ("csv", "json"):
            url = (
                f"http://127.0.0.1:{server.port}/api/v1/aggregates/air_quality?communes={poissy}"
                f"&start=-365d&every=1h&format={answer_format}"
            )
            spent = timed(partial(httpx.get, url, headers=headers, timeout=60), repeats)
            size = len(httpx.get(url, headers=headers, timeout=60).content)
            print(
                f"  {answer_format.upper():4s} over HTTP: median {statistics.median(spent) * 1e3:.0f} ms, "
                f"{size / 1024 / 1024:.1f} MiB"
            )
        server.shutdown()
        thread.join(timeout=10)
        store.close()


if __name__ == "__main__":
    main()
