"""Ingest at a steady rate: publish-to-queryable latency, and the ingestor's memory over a soak.

A paced MQTT 3.1.1 QoS 1 publisher (``bench.paced_publisher``: ``--publishers`` processes,
default 2, each on its share of the devices, payloads pre-built) sends realistic readings of the
simulated fleet (nine communes, five families, ten devices each) at ``--rate`` readings/s
(default: half of ``--max-rate``, the single-ingestor rate of ``bench.ingest_drain``), each
stamped with its publish time as its observed time. ``smartcity ingest --workers N`` (default 1)
writes them into a real influxd with its default batching (5,000 messages or 0.5 s).

* Validity: a run whose publisher sent less than 99 % of the asked readings, fell more than
  ``--max-behind`` seconds (default 1) behind its schedule, or was not acknowledged in full is
  refused: "INVALID RUN" and exit code 2, with no latency or memory figure. The publisher's own
  CPU per 1,000 readings, the time the broker held it back, and the broker's and influxd's CPU
  are printed with every run.

* Latency, measured from outside: a poller lists the air-quality readings of the last seconds in
  influxd five times a second; a reading's latency is the poll that first saw it minus its
  publish time (so it is over-estimated by up to the 0.2 s poll period plus the query time).
  The ingestor's own histogram (stored minus observed) is printed as a cross-check.
* Memory: the ingestor's RSS every 5 s; start (after a warm-up), end, peak and the slope.

    .venv/bin/python -m bench.ingest_steady --max-rate 20000 --minutes 10
    .venv/bin/python -m bench.ingest_steady --quick          # one minute
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.ingest_common import provision_database, servers, start_ingest, wait_for
from bench.paced_publisher import PacedPublisher, PublisherReport, template_payload
from bench.soak import procstat
from simulator import FleetConfig, generate_fleet

POLL_S = 0.2
WINDOW_S = 8.0


def templates() -> list[tuple[str, bytes]]:
    """One (topic, payload template) per device of the fleet, with realistic values from the
    simulator; the publisher patches each payload's ``ts`` in when it sends it."""
    end = datetime.now(UTC).replace(microsecond=0)
    fleet = generate_fleet(
        FleetConfig(devices_per_family=10, period_s=60, seed=5), end - timedelta(minutes=1), end
    )
    out: list[tuple[str, bytes]] = []
    for family, frame in fleet.frames.items():
        for row in frame.iter_rows(named=True):
            fields = {
                key: value
                for key, value in row.items()
                if key not in ("time", "insee", "device_id", "received_at") and value is not None
            }
            rest = json.dumps(fields, separators=(",", ":"))
            payload = template_payload("," + rest[1:] if fields else "}")
            out.append((f"smartcity/v1/{row['insee']}/{family}/{row['device_id']}", payload))
    return out


class LatencyPoller(threading.Thread):
    """Lists recent air-quality readings in influxd; records when each one first appeared."""

    def __init__(self, url: str, database: str) -> None:
        super().__init__(name="latency-poller", daemon=True)
        self.client = httpx.Client(base_url=url, timeout=10)
        self.database = database
        self.seen: set[tuple[int, str]] = set()
        self.latencies: list[tuple[float, float]] = []
        """(publish time s, latency s)"""
        self.stop = threading.Event()
        self.cpu_s = 0.0
        """This thread's own CPU, so the bench shows what measuring costs."""

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
            self._poll()
            self.cpu_s = time.thread_time()

    def _poll(self) -> None:
        since_ns = time.time_ns() - int(WINDOW_S * 1e9)
        query = f'SELECT "pm25", "device_id" FROM "raw"."air_quality" WHERE time > {since_ns}'
        response = self.client.post("/query", data={"q": query, "db": self.database, "epoch": "ns"})
        seen_at = time.time()
        for result in response.json().get("results", []):
            for series in result.get("series", []) or []:
                for observed_ns, _, device in series["values"]:
                    key = (int(observed_ns), str(device))
                    if key not in self.seen:
                        self.seen.add(key)
                        self.latencies.append((observed_ns / 1e9, seen_at - observed_ns / 1e9))


@dataclass
class SteadyRun:
    """What one steady run measured."""

    seconds: float
    warmup_s: float
    publisher: PublisherReport
    ingest_exit_code: int
    ingest_cpu_s: float
    poller_cpu_s: float
    broker_cpu_s: float
    influxd_cpu_s: float
    load_start: float
    load_end: float
    latencies: np.ndarray[Any, np.dtype[np.float64]]
    """publish -> queryable of the air-quality readings published after the warm-up, seconds;
    infinite for those the poller never saw (stored later than its window)"""
    ingest_histograms: dict[str, float]
    rss_start: int
    memory: list[tuple[float, int]] = field(default_factory=list)
    """(seconds since the first reading, ingest RSS bytes)"""


def run(
    rate: float, seconds: float, *, workers: int = 1, publishers: int = 2, warmup_s: float | None = None
) -> SteadyRun:
    """Publish at ``rate`` readings/s for ``seconds`` into a fresh broker, influxd and
    ``smartcity ingest --workers`` and measure latency, memory and CPU."""
    warmup = min(30.0, seconds / 5) if warmup_s is None else warmup_s
    with (
        tempfile.TemporaryDirectory(prefix="bench-steady-") as tmp,
        servers(Path(tmp)) as (mosquitto, influxd),
    ):
        settings = provision_database(influxd, "steady")
        ingest = start_ingest(Path(tmp) / "ingest", mosquitto.port, settings, "bench-steady", workers=workers)
        publisher = PacedPublisher(mosquitto.port, templates(), rate, seconds, processes=publishers)
        try:
            wait_for(
                lambda: ingest.metric("smartcity_ingest_broker_connected") == workers,
                timeout=60,
                what="ingest up",
            )
            poller = LatencyPoller(influxd.url, "steady")
            load_start = os.getloadavg()[0]
            rss_start = ingest.rss_bytes()
            cpu_start = ingest.cpu_seconds()  # start-up apart: only what the readings cost
            servers_cpu_start = _cpu(mosquitto), _cpu(influxd)
            poller.start()
            publisher.start()
            started = time.perf_counter()
            memory: list[tuple[float, int]] = []
            while (report := publisher.join(5.0)) is None:
                memory.append((time.perf_counter() - started, ingest.rss_bytes()))
            wait_for(
                lambda: ingest.metric("smartcity_ingest_rows_written_total") >= report.acked,
                timeout=120,
                what="the last readings written",
            )
            time.sleep(WINDOW_S / 2)  # let the poller see the last ones (a benchmark, not a test)
            poller.stop.set()
            poller.join(10)
            histograms = {
                name: _histogram_quantile(ingest, f"smartcity_ingest_{name}", 0.95)
                for name in ("lag_observed_seconds", "lag_received_seconds", "store_write_seconds")
            }
            cpu = ingest.cpu_seconds() - cpu_start
            broker_cpu, influxd_cpu = (
                _cpu(mosquitto) - servers_cpu_start[0],
                _cpu(influxd) - servers_cpu_start[1],
            )
            code = ingest.stop()
        except BaseException:
            # A failed run must not leave its ingestor or publishers behind (the servers go
            # with the context).
            publisher.kill()
            ingest.process.kill()
            raise
    publish_times = np.array([t for t, _ in poller.latencies])
    latencies = np.array([lat for _, lat in poller.latencies])
    if latencies.size:
        latencies = latencies[publish_times >= publish_times.min() + warmup]
    # A reading stored later than the poller's window after its publish time is never seen:
    # count it as that late at least, so a lagging run cannot hide its worst readings.
    published = sum(n for topic, n in report.sent_by_device.items() if "/air_quality/" in topic)
    unseen = max(0, published - len(poller.latencies))
    latencies = np.concatenate([latencies, np.full(unseen, np.inf)])
    return SteadyRun(
        seconds=seconds,
        warmup_s=warmup,
        publisher=report,
        ingest_exit_code=code,
        ingest_cpu_s=cpu,
        poller_cpu_s=poller.cpu_s,
        broker_cpu_s=broker_cpu,
        influxd_cpu_s=influxd_cpu,
        load_start=load_start,
        load_end=os.getloadavg()[0],
        latencies=latencies,
        ingest_histograms=histograms,
        rss_start=rss_start,
        memory=memory,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; exit 2 when the publisher did not hold the rate."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--max-rate", type=float, default=20000.0, help="max readings/s (from bench.ingest_drain)"
    )
    parser.add_argument("--rate", type=float, help="readings/s to publish (default: half of --max-rate)")
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    parser.add_argument("--quick", action="store_true", help="one minute")
    parser.add_argument("--workers", type=int, default=1, help="smartcity ingest --workers (default 1)")
    parser.add_argument("--publishers", type=int, default=2, help="publishing processes (default 2)")
    parser.add_argument(
        "--max-behind",
        type=float,
        default=1.0,
        help="seconds the publisher may fall behind its schedule before the run is invalid (default 1)",
    )
    args = parser.parse_args(argv)
    rate = args.rate or args.max_rate / 2
    seconds = 60.0 if args.quick else args.minutes * 60
    result = run(rate, seconds, workers=args.workers, publishers=args.publishers)
    report = result.publisher
    print(report.summary())
    shortfall = report.shortfall(max_behind_s=args.max_behind)
    print(_servers_cpu(result))
    if shortfall:
        print(
            f"INVALID RUN: the publisher did not hold the asked {rate:,.0f} readings/s ({shortfall}); "
            f"the machine could not publish at this rate, so this run measures nothing about "
            f"ingest at it and no figure is printed (load average {result.load_start:.1f} at the "
            f"start, {result.load_end:.1f} at the end, {os.cpu_count()} cores)"
        )
        return 2
    print(_figures(result))
    return 0


def _figures(result: SteadyRun) -> str:
    """The run's figures, one per line."""
    seconds, sent = result.seconds, result.publisher.sent
    lines = [
        f"ingest exit code {result.ingest_exit_code}; load average {result.load_start:.1f} at the "
        f"start, {result.load_end:.1f} at the end ({os.cpu_count()} cores)",
        f"ingest CPU {result.ingest_cpu_s:.1f}s ({result.ingest_cpu_s / seconds:.0%} of one core, "
        f"{1e6 * result.ingest_cpu_s / max(sent, 1):.1f} ms per 1,000 readings); latency poller "
        f"CPU {result.poller_cpu_s:.1f}s ({result.poller_cpu_s / seconds:.0%} of one core)",
    ]
    steady = result.latencies
    if steady.size:
        p50, p95, p99, top = (
            f"{q:.2f}s" if np.isfinite(q) else f"> {WINDOW_S:g}s"
            for q in (*np.percentile(steady, [50, 95, 99]), steady.max())
        )
        unseen = int(np.isinf(steady).sum())
        lines.append(
            f"publish -> queryable (air_quality, {steady.size} readings after {result.warmup_s:.0f}s "
            f"warm-up, poll {POLL_S}s; {unseen} not seen within {WINDOW_S:g}s, counted as later): "
            f"p50 {p50}  p95 {p95}  p99 {p99}  max {top}"
        )
    else:
        lines.append("publish -> queryable: no reading seen after the warm-up")
    h = result.ingest_histograms
    lines.append(
        f"ingestor's own histograms (p95 bucket bounds): stored - observed <= "
        f"{h['lag_observed_seconds']:g}s, stored - received <= {h['lag_received_seconds']:g}s, "
        f"one store write <= {h['store_write_seconds']:g}s"
    )
    memory = result.memory
    if memory:
        lines.append(
            f"ingest RSS: start {result.rss_start / 2**20:.0f} MiB, end {memory[-1][1] / 2**20:.0f} "
            f"MiB, max {max(rss for _, rss in memory) / 2**20:.0f} MiB"
        )
    after = [(t, rss) for t, rss in memory if t >= result.warmup_s]
    if len(after) >= 2:
        times = np.array([t for t, _ in after]) / 60
        rss = np.array([r for _, r in after]) / 2**20
        slope = float(np.polyfit(times, rss, 1)[0])
        lines.append(
            f"ingest RSS after warm-up: start {rss[0]:.0f} MiB, end {rss[-1]:.0f} MiB, "
            f"peak {rss.max():.0f} MiB, slope {slope:+.2f} MiB/min over {times[-1] - times[0]:.1f} min"
        )
    return "\n".join(lines)


def _servers_cpu(result: SteadyRun) -> str:
    """The broker's and influxd's CPU over the run: when the publisher is held back, whether the
    broker had a core to itself."""
    per_1000 = 1e6 / max(result.publisher.sent, 1)
    return (
        f"broker CPU {result.broker_cpu_s:.1f}s ({result.broker_cpu_s / result.seconds:.0%} of one "
        f"core, {result.broker_cpu_s * per_1000:.1f} ms per 1,000 readings); influxd CPU "
        f"{result.influxd_cpu_s:.1f}s ({result.influxd_cpu_s / result.seconds:.0%} of one core, "
        f"{result.influxd_cpu_s * per_1000:.1f} ms per 1,000 readings)"
    )


def _cpu(server: Any) -> float:
    return procstat.cpu_seconds(server.process.pid) if server.process else 0.0


def _histogram_quantile(ingest: Any, name: str, q: float) -> float:
    """The bucket bound under which a ``q`` share of a histogram's observations fall."""
    text = httpx.get(f"http://127.0.0.1:{ingest.metrics_port}/metrics", timeout=5).text
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            label = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if label == "+Inf" else float(label), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0
    for bound, cumulative in buckets:
        if total and cumulative >= q * total:
            return bound
    return float("nan")


if __name__ == "__main__":
    raise SystemExit(main())
