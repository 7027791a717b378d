"""A soak's figures: markdown tables, a PNG plot, and the knee's verdict."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench.soak.disk import FAMILY_NAMES, FamilyDisk
from bench.soak.procstat import Sample
from bench.soak.run import SoakConfig, SoakResult
from dashboards.config import DashboardSettings
from storage.config import DuckDBSettings, InfluxSettings

# The knee's rules, all here: docs/performance.md ("Soak") and docs/sizing.md cite them.
LAG_LIMIT_S = 5.0
"""publish -> stored p95, and the minute aggregates' p95 beyond their schedule, that break a step."""
CORE_LIMIT = 0.9
"""A component busier than this share of a core on average breaks a step."""
FLEET_SLOWDOWN = 1.1
"""The fleet falls behind when its publication takes longer than this times its schedule (plus
``FLEET_SLACK_S``): the broker's acknowledgements or the publishers could not keep the rate."""
FLEET_SLACK_S = 10.0
DASHBOARD_LAG_LIMIT_S = 5.0
"""Dashboard callbacks p95 that breaks a step: a wait staff notice on every refresh."""
DASHBOARD_REFRESH_S = float(DashboardSettings().refresh_s)
"""How often a staff session refreshes its page (the pages' ``dcc.Interval``, the platform's
default, which the soak keeps): each refresh fires at least one callback."""
MIN_CALLBACK_SHARE = 0.5
"""A step whose sessions made fewer callbacks than this share of one per session per refresh
has no dashboard figure to judge: it is invalid for the dashboards, not held."""
MB = 1024 * 1024


def percentile(values: list[float], q: float) -> float:
    """The ``q`` percentile (0-100, linear), NaN without values."""
    return float(np.percentile(values, q)) if values else float("nan")


def latency(result: SoakResult, kind: str) -> list[float]:
    """Probe latencies (s) of one kind: stored, aggregated, alerted."""
    return result.latencies.filter(pl.col("kind") == kind)["seconds"].to_list()


def readings_per_s(result: SoakResult) -> float:
    """The fleet's rate on the wall clock: its readings over the span it covers, at the speed-up
    (the publication itself lasts a little longer: devices are spread over their period)."""
    return result.readings / (result.config.span_s / result.config.speedup)


def cpu_seconds(result: SoakResult) -> dict[str, float]:
    """CPU seconds of each component over the measured run."""
    return dict(result.samples[-1].cpu) if result.samples else {}


def rss_growth_mb_per_h(samples: list[Sample], name: str) -> float:
    """How fast a component's RSS still grows at the end of the run, MB/h: the median of the
    last quarter's samples against the median of the quarter before, over the time between.

    A leak reads as its rate. A one-time step (a cache filled once, the first whole-day pass)
    in the first half of the second half reads as none, where a line fitted through the second
    half turned it into a slope; a step later than that cannot be told from growth in one run.
    """
    points = [(s.at, s.rss.get(name, 0)) for s in samples if s.rss.get(name)]
    quarter = len(points) // 4
    if quarter < 3 or points[-1][0] - points[-2 * quarter][0] < 300:
        return float("nan")
    third = np.array(points[-2 * quarter : -quarter], dtype=float)
    fourth = np.array(points[-quarter:], dtype=float)
    hours = (np.median(fourth[:, 0]) - np.median(third[:, 0])) / 3600
    return float((np.median(fourth[:, 1]) - np.median(third[:, 1])) / MB / hours)


def _growth(samples: list[Sample], name: str) -> str:
    growth = rss_growth_mb_per_h(samples, name)
    return "n/a (run too short)" if np.isnan(growth) else f"{growth:+.0f}"


def processing_interval(result: SoakResult) -> float:
    """The processing schedule of the run, seconds."""
    return result.config.process_interval_s or 60.0


def breaks(result: SoakResult) -> list[str]:
    """Why this run is past the knee (empty: it held)."""
    found = []
    stored = percentile(latency(result, "stored"), 95)
    if stored > LAG_LIMIT_S:
        found.append(f"ingest: publish -> stored p95 {stored:.1f} s > {LAG_LIMIT_S:g} s")
    beyond = percentile(latency(result, "aggregated"), 95) - processing_interval(result)
    if beyond > LAG_LIMIT_S:
        found.append(
            f"processing: minute aggregates p95 {beyond:.1f} s beyond its "
            f"{processing_interval(result):g} s schedule"
        )
    for name, seconds in cpu_seconds(result).items():
        cores = seconds / result.wall_s if result.wall_s else 0.0
        if cores > CORE_LIMIT and name not in ("harness",):
            found.append(f"{name}: {cores:.2f} cores busy (> {CORE_LIMIT})")
    if result.feed_planned_s and result.feed_wall_s > result.feed_planned_s * FLEET_SLOWDOWN + FLEET_SLACK_S:
        found.append(
            f"fleet: took {result.feed_wall_s:.0f} s to publish {result.feed_planned_s:.0f} s of load "
            "(the broker's acknowledgements or the publishers fell behind)"
        )
    if result.lost:
        first = ", ".join(f"{device} at {at}" for _, device, at in result.missing[:3])
        found.append(f"{result.lost} readings lost" + (f" (first: {first})" if first else ""))
    d = result.dashboard
    if d is not None and d.callbacks and d.p95_ms > DASHBOARD_LAG_LIMIT_S * 1000:
        found.append(
            f"dashboards: callbacks p95 {d.p95_ms / 1000:.1f} s > {DASHBOARD_LAG_LIMIT_S:g} s "
            f"under {result.config.users} sessions"
        )
    return found


def expected_callbacks(config: SoakConfig) -> float:
    """The fewest callbacks the sessions make over a run that keeps up: one per session per
    refresh (a refresh fires at least one)."""
    return config.users * config.minutes * 60 / DASHBOARD_REFRESH_S


def dashboard_invalid(result: SoakResult) -> list[str]:
    """Why the run's dashboard figure cannot be judged (empty: it can, or no sessions ran)."""
    users = result.config.users
    if not users:
        return []
    d = result.dashboard
    if d is None:
        return ["the sessions wrote no statistics (see dashboard-load.log)"]
    found = []
    floor = expected_callbacks(result.config) * MIN_CALLBACK_SHARE
    if d.callbacks < floor:
        found.append(
            f"{d.callbacks} callbacks, fewer than {floor:.0f} ({MIN_CALLBACK_SHARE:.0%} of one per "
            f"session every {DASHBOARD_REFRESH_S:g} s)"
        )
    if d.failures:
        found.append(f"{d.failures} dashboard requests failed")
    return found


def verdict(result: SoakResult) -> str:
    """The step's verdict in a line: what broke, else whether the dashboards could be judged,
    else held."""
    broken = breaks(result)
    invalid = dashboard_invalid(result)
    if broken:
        return (
            "broke: " + "; ".join(broken) + ("; dashboards invalid: " + "; ".join(invalid) if invalid else "")
        )
    if invalid:
        return "invalid for dashboards: " + "; ".join(invalid) + " (every other rule held)"
    return "held"


def families_text(config: SoakConfig) -> str:
    """Which families the fleet was made of, for the reports."""
    if set(config.families) == set(FAMILY_NAMES):
        return "all five families in equal numbers"
    if len(config.families) == 1:
        return f"{config.families[0]} only"
    return ", ".join(config.families) + " in equal numbers"


def markdown(result: SoakResult, command: str, plot: str | None = None) -> str:
    """Every table of one run."""
    c = result.config
    rate = readings_per_s(result)
    lines = [
        f"### Soak: {c.store}, {result.devices} devices ({', '.join(c.families)}), "
        f"speed-up {c.speedup:g}, {c.minutes:g} min",
        "",
        f"`{command}`",
        "",
        f"- uptime before: `{result.uptime_before}`",
        f"- uptime after: `{result.uptime_after}`",
        f"- fleet: {result.devices} devices ({families_text(c)}, default faults) over "
        f"{c.commune_count} communes, one reading per "
        f"{c.period_s:g} s of simulated time, {result.sim_days:.3f} simulated days in "
        f"{result.feed_wall_s:.0f} s: {result.readings} readings, {rate:.0f} readings/s of wall time "
        f"(at real time: the load of {result.devices * c.speedup:.0f} devices)",
        f"- processing every {processing_interval(result):g} s, "
        f"alerts every {c.alerts_interval_s or 60:g} s, "
        f"{c.users} dashboard sessions, {c.ingest_workers or 'default'} ingest worker(s)",
        "",
        "| latency | n | p50 | p95 | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, kind in (
        ("publish -> stored (s)", "stored"),
        ("reading -> in minute aggregates (s)", "aggregated"),
        ("fault -> alert delivered (s)", "alerted"),
    ):
        values = latency(result, kind)
        lines.append(
            f"| {label} | {len(values)} | {percentile(values, 50):.2f} | {percentile(values, 95):.2f} | "
            f"{max(values) if values else float('nan'):.2f} |"
        )
    if result.dashboard is not None:
        d = result.dashboard
        lines.append(
            f"| dashboard callbacks (ms) | {d.callbacks} | {d.p50_ms:.0f} | {d.p95_ms:.0f} | {d.max_ms:.0f} |"
        )
    lines += [
        "",
        "| component | CPU s | cores | CPU s / 1,000 readings | RSS start MB | RSS end MB | RSS max MB "
        "| RSS growth MB/h (last quarter) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cpu = cpu_seconds(result)
    first = result.samples[0].rss if result.samples else {}
    last = result.samples[-2].rss if len(result.samples) > 1 else {}
    for name, seconds in cpu.items():
        peak = max((s.rss.get(name, 0) for s in result.samples), default=0)
        lines.append(
            f"| {name} | {seconds:.1f} | {seconds / result.wall_s:.2f} | "
            f"{seconds / max(result.readings, 1) * 1000:.3f} | {first.get(name, 0) / MB:.0f} | "
            f"{last.get(name, 0) / MB:.0f} | {peak / MB:.0f} | {_growth(result.samples, name)} |"
        )
    lines += ["", disk_table(result), "", counts_table(result)]
    judged = verdict(result)
    lines += [
        "",
        "Knee criteria: "
        + (
            judged
            if judged != "held"
            else "held (every lag p95 within limits, dashboard callbacks included, no core "
            "saturated, nothing lost)"
        ),
    ]
    if plot:
        lines += ["", f"![soak plot]({plot})"]
    return "\n".join(lines) + "\n"


def _kept_days(store: str) -> tuple[float, float, float]:
    """Days the default retention keeps raw readings, minute aggregates and the other
    aggregates (inf: for ever), from the store settings' defaults."""
    if store == "influxdb":
        influx = InfluxSettings()
        minute = influx.minute_retention_days or influx.aggregate_retention_days
        return influx.raw_retention_days, minute, influx.aggregate_retention_days
    return math.inf, DuckDBSettings().minute_retention_days or math.inf, math.inf


def kept_mb(disk: FamilyDisk, per_device_days: float, store: str, years: int) -> float:
    """MB one device of the family leaves on disk after ``years`` of the default retention,
    from its bytes over ``per_device_days`` measured device-days (extrapolated)."""
    raw_days, minute_days, agg_days = _kept_days(store)
    span = 365.0 * years
    raw = disk.raw_bytes / per_device_days
    minute = disk.minute_bytes / per_device_days
    other = (disk.aggregate_bytes - disk.minute_bytes) / per_device_days
    return (raw * min(raw_days, span) + minute * min(minute_days, span) + other * min(agg_days, span)) / MB


def _retention_words(store: str) -> str:
    raw_days, minute_days, agg_days = _kept_days(store)

    def days(value: float) -> str:
        return "for ever" if math.isinf(value) else f"{value:,.0f} days"

    return (
        f"{store} default retention: raw {days(raw_days)}, minute aggregates "
        f"{days(minute_days)}, other aggregates {days(agg_days)}"
    )


def disk_table(result: SoakResult) -> str:
    """Bytes per device-day per family, and what one and five years leave on disk (extrapolated)."""
    c = result.config
    per_family = result.devices / len(c.families)
    days = result.sim_days or 1.0
    lines = [
        f"Disk ({c.store}; bytes apportioned to families, see bench/soak/disk.py; a year and five "
        f"years are extrapolated from {days:.3f} measured simulated days, {_retention_words(c.store)}):",
        "",
        "| family | raw B/device-day | aggregates B/device-day | of which 1-minute | "
        "kept after a year, MB per 1,000 devices | after five years |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    # A family outside the fleet holds only probe readings, if any: no per-device figure.
    for disk in (d for d in result.disk if d.family in c.families):
        device_days = per_family * days
        raw = disk.raw_bytes / device_days
        agg = disk.aggregate_bytes / device_days
        minute = disk.minute_bytes / device_days
        year = kept_mb(disk, device_days, c.store, 1) * 1000
        five = kept_mb(disk, device_days, c.store, 5) * 1000
        lines.append(
            f"| {disk.family} | {raw:,.0f} | {agg:,.0f} | {minute:,.0f} | {year:,.0f} | {five:,.0f} |"
        )
    if result.aggregate_windows:
        total = sum(result.aggregate_windows.values()) or 1.0
        shares = ", ".join(f"{name} {size / total:.0%}" for name, size in result.aggregate_windows.items())
        lines += ["", f"Aggregates by window (share of the aggregates policy's bytes): {shares}."]
    return "\n".join(lines)


def expected_refusals(result: SoakResult) -> int:
    """Messages the decoder must refuse in whole (malformed) or in part (a field out of bounds):
    each is an ingest error and a dead-letter by design."""
    return result.faults.get("malformed", 0) + result.faults.get("out_of_bounds", 0)


def counts_table(result: SoakResult) -> str:
    """Errors, dead-letters and lost readings: zero expected (dead-letters: the malformed
    payloads the fleet injected)."""
    m = result.ingest_metrics
    errors = sum(result.log_errors.values())
    refused = expected_refusals(result)
    rows = [
        ("fleet readings expected in the store", sum(result.expected_rows.values())),
        ("stored", sum(result.stored_rows.values())),
        ("lost", result.lost),
        (
            "dead-letters (expected: payloads injected malformed or with a field out of bounds)",
            f"{result.deadletters} ({refused})",
        ),
        ("ingest errors (expected: idem)", f"{int(m.get('smartcity_ingest_errors_total', 0))} ({refused})"),
        (
            "store failures / spooled batches",
            f"{int(m.get('smartcity_ingest_store_failures_total', 0))} / "
            f"{int(m.get('smartcity_ingest_spooled_batches_total', 0))}",
        ),
        ("rows the store refused", int(m.get("smartcity_ingest_store_rejected_rows_total", 0))),
        ("ERROR lines in the logs", f"{errors} { ({k: v for k, v in result.log_errors.items() if v}) }"),
        ("probe readings / faults sent", f"{result.probes.sent_readings} / {result.probes.sent_faults}"),
        ("fleet alerts delivered", result.probes.fleet_alerts),
        ("dashboard requests failed", result.dashboard.failures if result.dashboard else "-"),
        ("exit codes", result.exit_codes),
    ]
    return "\n".join(["| count | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)])


def plot(result: SoakResult, path: Path) -> None:
    """RSS and CPU of each component, and the probe latencies, over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rss_axis, cpu_axis, lag_axis) = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    samples = result.samples
    minutes = [s.at / 60 for s in samples]
    for name in samples[0].rss if samples else []:
        rss_axis.plot(minutes, [s.rss.get(name, 0) / MB for s in samples], label=name)
        cores = [0.0] + [
            (b.cpu.get(name, 0) - a.cpu.get(name, 0)) / max(b.at - a.at, 1e-9)
            for a, b in itertools.pairwise(samples)
        ]
        cpu_axis.plot(minutes, cores, label=name)
    rss_axis.set_ylabel("RSS (MB)")
    rss_axis.legend(fontsize="small", ncol=3)
    cpu_axis.set_ylabel("CPU (cores)")
    start = time.time() - result.wall_s
    for kind in ("stored", "aggregated", "alerted"):
        frame = result.latencies.filter(pl.col("kind") == kind)
        if frame.height:
            at = [(a - start) / 60 for a in frame["at"].to_list()]
            lag_axis.scatter(at, frame["seconds"].to_list(), s=8, label=kind)
    lag_axis.set_yscale("log")
    lag_axis.set_ylabel("probe latency (s)")
    lag_axis.set_xlabel("minutes")
    lag_axis.legend(fontsize="small")
    figure.suptitle(
        f"soak {result.config.store}: {result.devices} devices, speed-up {result.config.speedup:g}; "
        f"{result.uptime_before.split('load average:')[-1].strip()} load before"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def knee_markdown(steps: list[tuple[int, SoakResult]], command: str) -> str:
    """One row per fleet step, and which part broke first."""
    lines = [
        "### Knee",
        "",
        f"`{command}`",
        "",
        "One reading per minute per device on the real clock (speed-up 1): a step of N devices is "
        "N/60 readings per second of wall time, with N series in the store. "
        f"Fleet: {families_text(steps[0][1].config) if steps else '-'}.",
        "",
        f"A step breaks when publish -> stored p95 or the minute aggregates' p95 beyond their "
        f"schedule pass {LAG_LIMIT_S:g} s, dashboard callbacks p95 passes "
        f"{DASHBOARD_LAG_LIMIT_S:g} s, a component averages more than {CORE_LIMIT:g} core, the "
        "fleet falls behind its schedule or a reading is lost; it is invalid for the dashboards "
        f"when the sessions made fewer than {MIN_CALLBACK_SHARE:.0%} of one callback per session "
        f"every {DASHBOARD_REFRESH_S:g} s, or a request failed.",
        "",
        "| devices | readings/s | stored p95 s | aggregates p95 s | alert p95 s | callbacks p95 ms "
        "| callbacks | busiest component (cores) | lost | uptime after | verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    # The fleet the step ran, not the size asked: devices are rounded up to whole communes.
    for _, result in steps:
        cpu = cpu_seconds(result)
        busiest = max((k for k in cpu if k != "harness"), key=lambda k: cpu[k], default="-")
        cores = cpu.get(busiest, 0.0) / result.wall_s if result.wall_s else 0.0
        lines.append(
            f"| {result.devices} | {readings_per_s(result):.0f} | "
            f"{percentile(latency(result, 'stored'), 95):.2f} | "
            f"{percentile(latency(result, 'aggregated'), 95):.1f} | "
            f"{percentile(latency(result, 'alerted'), 95):.1f} | "
            f"{result.dashboard.p95_ms if result.dashboard else float('nan'):.0f} | "
            f"{result.dashboard.callbacks if result.dashboard else '-'} | "
            f"{busiest} ({cores:.2f}) | "
            f"{result.lost} | `{result.uptime_after.split('load average:')[-1].strip()}` | "
            f"{verdict(result)} |"
        )
    return "\n".join(lines) + "\n"
