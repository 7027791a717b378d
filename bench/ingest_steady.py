"""Ingest at a steady rate: publish-to-queryable latency, and the ingestor's memory over a soak.

A paced paho publisher, in a process of its own, sends realistic readings of the simulated
fleet (nine communes, five families, ten devices each) at ``--rate`` readings/s (default: half
of ``--max-rate``, the single-ingestor rate of ``bench.ingest_drain``), each stamped with its
publish time as its observed time. ``smartcity ingest --workers N`` (default 1) writes them into
a real influxd with its default batching (5,000 messages or 0.5 s).

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
import contextlib
import json
import multiprocessing
import multiprocessing.queues
import os
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.ingest_common import provision_database, servers, start_ingest, wait_for
from simulator import FleetConfig, generate_fleet

POLL_S = 0.2
MAX_UNACKED = 2000
WINDOW_S = 8.0


def templates() -> list[tuple[str, dict[str, Any]]]:
    """One (topic, fields) per device of the fleet, with realistic values from the simulator."""
    end = datetime.now(UTC).replace(microsecond=0)
    fleet = generate_fleet(
        FleetConfig(devices_per_family=10, period_s=60, seed=5), end - timedelta(minutes=1), end
    )
    out: list[tuple[str, dict[str, Any]]] = []
    for family, frame in fleet.frames.items():
        for row in frame.iter_rows(named=True):
            fields = {
                key: value
                for key, value in row.items()
                if key not in ("time", "insee", "device_id", "received_at") and value is not None
            }
            out.append((f"smartcity/v1/{row['insee']}/{family}/{row['device_id']}", fields))
    return out


class PacedPublisher:
    """Publishes at a fixed rate with QoS 1 from a process of its own (so the poller's JSON
    parsing never delays it); each payload's ``ts`` is its publish time (ms)."""

    def __init__(self, port: int, rate: float, seconds: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._results: multiprocessing.queues.Queue[tuple[int, int, float]] = context.Queue()
        self._process = context.Process(
            target=_publish_paced, args=(port, rate, seconds, self._results), name="paced-publisher"
        )
        self.sent = 0
        self.acked = 0
        self.behind_max = 0.0

    def start(self) -> None:
        """Start publishing."""
        self._process.start()

    def is_alive(self) -> bool:
        """Whether it still publishes."""
        return self._process.is_alive()

    def join(self, timeout: float) -> None:
        """Wait for the end of publishing (or ``timeout``), then collect its figures."""
        self._process.join(timeout)
        if not self._process.is_alive() and not self.sent:
            self.sent, self.acked, self.behind_max = self._results.get(timeout=10)


def _publish_paced(port: int, rate: float, seconds: float, results: Any) -> None:
    acked = 0
    sent = 0
    behind_max = 0.0

    def on_publish(*args: Any) -> None:
        nonlocal acked
        acked += 1

    try:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-steady-pub", protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.on_publish = on_publish
        client.connect("127.0.0.1", port)
        client.loop_start()
        devices = templates()
        last_ms: dict[int, int] = {}
        count = len(devices)
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate)
            behind_max = max(behind_max, (due - sent) / rate)
            # Never more unacknowledged than the in-flight window and as much again queued: a
            # reading is stamped when it leaves, and a publisher that cannot keep up shows as
            # behind schedule rather than as latency of the ingestor.
            while sent < due and sent - acked < MAX_UNACKED:
                index = sent % count
                topic, fields = devices[index]
                # A device never sends two readings in the same millisecond.
                now_ms = max(time.time_ns() // 1_000_000, last_ms.get(index, 0) + 1)
                last_ms[index] = now_ms
                client.publish(topic, json.dumps({"ts": now_ms, **fields}), qos=1)
                sent += 1
            time.sleep(0.005)
        # What paho still queues goes out now; a publisher far behind its schedule needs long.
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: acked >= sent, timeout=max(120.0, seconds), what="the broker's acknowledgements")
        client.disconnect()
        client.loop_stop()
    finally:
        results.put((sent, acked, behind_max))


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

    def run(self) -> None:
        while not self.stop.wait(POLL_S):
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


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
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
    args = parser.parse_args(argv)
    rate = args.rate or args.max_rate / 2
    seconds = 60.0 if args.quick else args.minutes * 60
    warmup = min(30.0, seconds / 5)

    with (
        tempfile.TemporaryDirectory(prefix="bench-steady-") as tmp,
        servers(Path(tmp)) as (mosquitto, influxd),
    ):
        settings = provision_database(influxd, "steady")
        ingest = start_ingest(
            Path(tmp) / "ingest", mosquitto.port, settings, "bench-steady", workers=args.workers
        )
        try:
            wait_for(
                lambda: ingest.metric("smartcity_ingest_broker_connected") == 1, timeout=60, what="ingest up"
            )
            poller = LatencyPoller(influxd.url, "steady")
            publisher = PacedPublisher(mosquitto.port, rate, seconds)
            load_start = os.getloadavg()[0]
            rss_start = ingest.rss_bytes()
            cpu_start = ingest.cpu_seconds()  # start-up apart: only what the readings cost
            poller.start()
            started = time.perf_counter()
            publisher.start()
            memory: list[tuple[float, int]] = []
            while publisher.is_alive():
                publisher.join(5.0)
                memory.append((time.perf_counter() - started, ingest.rss_bytes()))
            wait_for(
                lambda: ingest.metric("smartcity_ingest_rows_written_total") >= publisher.acked,
                timeout=120,
                what="the last readings written",
            )
            time.sleep(WINDOW_S / 2)  # let the poller see the last ones (a benchmark, not a test)
            poller.stop.set()
            poller.join(10)
            lag_p95 = _histogram_quantile(ingest, "smartcity_ingest_lag_observed_seconds", 0.95)
            received_p95 = _histogram_quantile(ingest, "smartcity_ingest_lag_received_seconds", 0.95)
            write_p95 = _histogram_quantile(ingest, "smartcity_ingest_store_write_seconds", 0.95)
            cpu = ingest.cpu_seconds() - cpu_start
            code = ingest.stop()
        except BaseException:
            # A failed run must not leave its ingestor behind (the servers go with the context).
            ingest.process.kill()
            raise

    publish_times = np.array([t for t, _ in poller.latencies])
    latencies = np.array([lat for t, lat in poller.latencies])
    steady = latencies[publish_times >= publish_times.min() + warmup] if latencies.size else latencies
    print(
        f"published {publisher.sent} readings ({publisher.acked} acknowledged by the broker) at "
        f"{rate:,.0f}/s for {seconds / 60:.1f} min (publisher at most {publisher.behind_max:.2f}s "
        f"behind schedule); ingest exit code {code}"
    )
    if publisher.behind_max > 1.0 or publisher.acked < publisher.sent:
        print(
            "WARNING: the publisher did not hold the rate (the machine is too busy): the figures "
            "below are not those of the asked rate"
        )
    load = os.getloadavg()[0]
    per_1000 = 1e6 * cpu / max(publisher.acked, 1)
    print(
        f"ingest CPU {cpu:.1f}s ({cpu / seconds:.0%} of one core, {per_1000:.1f} ms per 1,000 readings); "
        f"load average {load_start:.1f} at the start, {load:.1f} at the end ({os.cpu_count()} cores)"
    )
    if steady.size:
        p50, p95, p99 = np.percentile(steady, [50, 95, 99])
        print(
            f"publish -> queryable (air_quality, {steady.size} readings after {warmup:.0f}s warm-up, "
            f"poll {POLL_S}s): p50 {p50:.2f}s  p95 {p95:.2f}s  p99 {p99:.2f}s  max {steady.max():.2f}s"
        )
    print(
        f"ingestor's own histograms (p95 bucket bounds): stored - observed <= {lag_p95:g}s, "
        f"stored - received <= {received_p95:g}s, one store write <= {write_p95:g}s"
    )
    if memory:
        print(
            f"ingest RSS: start {rss_start / 2**20:.0f} MiB, end {memory[-1][1] / 2**20:.0f} MiB, "
            f"max {max(rss for _, rss in memory) / 2**20:.0f} MiB"
        )
    after = [(t, rss) for t, rss in memory if t >= warmup]
    if len(after) >= 2:
        times = np.array([t for t, _ in after]) / 60
        rss = np.array([r for _, r in after]) / 2**20
        slope = float(np.polyfit(times, rss, 1)[0])
        print(
            f"ingest RSS after warm-up: start {rss[0]:.0f} MiB, end {rss[-1]:.0f} MiB, "
            f"peak {rss.max():.0f} MiB, slope {slope:+.2f} MiB/min over {times[-1] - times[0]:.1f} min"
        )
    return 0


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
