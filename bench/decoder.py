"""Decoder throughput: messages per second on one core, against ``json.loads`` alone.

Run: ``.venv/bin/python -m bench.decoder [--quick]``. The payloads are realistic messages of
every family (a full native reading, a FIWARE normalized entity, a 100-reading batch); the
baseline parses the very same bytes with ``json.loads`` only, in the same run, so the ratio says
what the contract's checks cost on top of parsing, whatever the machine's load.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from sensors.communes import CommuneRegistry
from sensors.decoder import Decoder
from sensors.families import FAMILIES, FamilySpec
from sensors.topics import reading_topic

NOW_NS = time.time_ns()


def _values(spec: FamilySpec) -> dict[str, object]:
    values: dict[str, object] = {}
    for field in spec.fields:
        if field.kind == "bool":
            values[field.name] = True
        elif field.kind == "enum":
            values[field.name] = field.choices[0]
        else:
            assert field.minimum is not None and field.maximum is not None
            middle = field.minimum + (field.maximum - field.minimum) * 0.3
            values[field.name] = int(middle) if field.kind == "int" else round(middle, 2)
    return values


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + ".250Z"


def payloads() -> dict[str, list[tuple[str, bytes]]]:
    """Named workloads: lists of (topic, payload), one message per family."""
    native, normalized, batch = [], [], []
    for spec in FAMILIES.values():
        topic = reading_topic("78498", spec.family.value, "bench-1")
        values = _values(spec)
        native.append((topic, json.dumps({"ts": _iso(NOW_NS), **values}).encode()))
        readings = [{"ts": (NOW_NS // 1_000_000) - i * 60_000, **values} for i in range(100)]
        batch.append((topic, json.dumps(readings).encode()))
        if spec.fiware_type:
            entity: dict[str, object] = {"id": "x", "type": spec.fiware_type, "dateObserved": _iso(NOW_NS)}
            for name, value in values.items():
                field = spec.field(name)
                assert field is not None
                attribute: dict[str, object] = {"type": "Number", "value": value}
                if field.unit_code:
                    attribute["metadata"] = {"unitCode": {"type": "Text", "value": field.unit_code}}
                entity[name] = attribute
            normalized.append((topic, json.dumps(entity).encode()))
    return {"native reading": native, "FIWARE normalized": normalized, "batch of 100": batch}


def _rate(run: Callable[[str, bytes], object], messages: list[tuple[str, bytes]], seconds: float) -> float:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for topic, payload in messages:
            run(topic, payload)
        count += len(messages)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 s per measurement instead of 5")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 5.0
    decoder = Decoder(CommuneRegistry.load())

    def parse_only(topic: str, payload: bytes) -> object:
        return json.loads(payload.decode("utf-8"))

    print(f"{'workload':<20} {'decode msg/s':>14} {'json.loads msg/s':>18} {'ratio':>7} {'readings/s':>12}")
    for name, messages in payloads().items():
        assert all(decoder.decode(t, p).ok for t, p in messages), name
        readings = sum(len(decoder.decode(t, p).readings) for t, p in messages) / len(messages)
        decode_rate = _rate(decoder.decode, messages, seconds)
        json_rate = _rate(parse_only, messages, seconds)
        print(
            f"{name:<20} {decode_rate:>14,.0f} {json_rate:>18,.0f} {decode_rate / json_rate:>7.2f} "
            f"{decode_rate * readings:>12,.0f}"
        )


if __name__ == "__main__":
    main()
