"""Batch decoding: which JSON library, and what the batch decoder costs against the reference.

The realistic backlog of ``bench.ingest_drain`` (the fleet's one-reading messages) is decoded,
in this process, one core, in the same run:

* parsing only, per message: ``json.loads``, ``orjson.loads``, ``msgspec.json`` untyped, and
  ``msgspec.json`` typed with the family's Struct (the batch decoder's fast path: it also checks
  types, bounds and unknown keys);
* the reference decoder (``sensors.decoder.Decoder``), message by message, then frames;
* the batch decoder (``sensors.batch_decoder.BatchDecoder``), 5,000 messages a batch (the
  ingestor's default), frames included.

    .venv/bin/python -m bench.ingest_decode            # 200,000 messages
    .venv/bin/python -m bench.ingest_decode --quick    # 50,000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import msgspec
import orjson

from bench.ingest_common import realistic_messages
from sensors.batch_decoder import BatchDecoder, struct_for
from sensors.communes import CommuneRegistry
from sensors.decoder import Decoder
from sensors.families import FAMILIES
from sensors.frames import readings_to_frames
from sensors.topics import parse_topic

BATCH = 5000


def _best(run: Callable[[], object], repeats: int) -> float:
    """The best of ``repeats`` CPU times of ``run`` (the least disturbed by the neighbours)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50,000 messages")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    messages = realistic_messages(50_000 if args.quick else 200_000)
    topics: list[str] = messages["topic"].to_list()
    payloads: list[bytes] = messages["payload"].to_list()
    count = len(payloads)
    received = list(range(count))
    decoder = Decoder(CommuneRegistry.load())
    batch_decoder = BatchDecoder(decoder)
    typed = {spec.family.value: msgspec.json.Decoder(struct_for(spec)) for spec in FAMILIES.values()}
    families = []
    for message_topic in topics:
        parsed = parse_topic(message_topic)
        assert not isinstance(parsed, str)
        families.append(parsed.family)
    untyped = msgspec.json.Decoder()

    def reference() -> None:
        readings = []
        stamps = []
        for position, (message_topic, payload) in enumerate(zip(topics, payloads, strict=True)):
            decoded = decoder.decode(message_topic, payload)
            readings += decoded.readings
            stamps += [position] * len(decoded.readings)
        readings_to_frames(readings, stamps)

    def batches() -> None:
        for start in range(0, count, BATCH):
            end = start + BATCH
            batch_decoder.decode(topics[start:end], payloads[start:end], received[start:end])

    contenders: list[tuple[str, Callable[[], object]]] = [
        ("json.loads (parse only)", lambda: [json.loads(p) for p in payloads]),
        ("orjson.loads (parse only)", lambda: [orjson.loads(p) for p in payloads]),
        ("msgspec untyped (parse only)", lambda: [untyped.decode(p) for p in payloads]),
        (
            "msgspec typed, family Struct",
            lambda: [typed[f].decode(p) for f, p in zip(families, payloads, strict=True)],
        ),
        ("reference decoder + frames", reference),
        ("batch decoder (frames included)", batches),
    ]
    print(f"{count:,} realistic messages, one reading each; best of {args.repeats} CPU times")
    results = {}
    for name, run in contenders:
        seconds = _best(run, args.repeats)
        results[name] = seconds
        print(f"{name:34s} {1e6 * seconds / count:6.2f} µs per message  {count / seconds:12,.0f} msg/s")
    ratio = results["reference decoder + frames"] / results["batch decoder (frames included)"]
    print(f"batch decoder: {ratio:.1f}x the reference decoder's speed")
    print(f"load average: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
