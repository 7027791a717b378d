"""docs/contract.md matches the code: field tables, error reasons, limits, and working examples.

The field tables are generated from ``sensors.families``; to regenerate them after changing a
family, run ``.venv/bin/python -m tests.test_contract_docs`` and paste its output.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sensors.communes import CommuneRegistry
from sensors.decoder import Decoder
from sensors.families import FAMILIES, FamilySpec, FieldSpec
from sensors.fiware import DESCRIPTIVE_ATTRIBUTES, UNIT_NAMES
from sensors.readings import REASONS

CONTRACT = Path(__file__).resolve().parent.parent / "docs" / "contract.md"
EXAMPLE = re.compile(r"<!-- example: (?P<topic>\S+) (?P<expect>\S+) -->\s*```json\n(?P<body>.*?)```", re.S)
EXAMPLES_CLOCK = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
"""The examples are dated 14 March 2025; they are decoded as if received that day."""


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 2**63 - 1:
        return "2⁶³−1"
    if float(value).is_integer():
        return f"{int(value):,}".replace(",", " ")
    return f"{value:g}"


def _row(field: FieldSpec) -> str:
    if field.kind == "enum":
        bounds = "one of " + ", ".join(f"`{choice}`" for choice in field.choices)
    elif field.kind == "bool":
        bounds = "`true` / `false`"
    else:
        bounds = f"{_number(field.minimum)} … {_number(field.maximum)}"
    description = field.description + (
        " (cumulative counter: its increase is what counts)" if field.counter else ""
    )
    unit = field.unit or "—"
    code = f"`{field.unit_code}`" if field.unit_code else "—"
    return f"| `{field.name}` | {field.kind} | {unit} | {code} | {bounds} | {description} |"


def field_table(spec: FamilySpec) -> str:
    """The Markdown table of a family's fields, as docs/contract.md shows it."""
    lines = [
        "| field | kind | unit | FIWARE `unitCode` | valid values | description |",
        "|---|---|---|---|---|---|",
        *(_row(field) for field in spec.fields),
    ]
    return "\n".join(lines)


def _section(text: str, family: str) -> str:
    match = re.search(rf"<!-- fields:{family} -->\n(.*?)\n<!-- /fields -->", text, re.S)
    assert match, f"docs/contract.md has no generated field table for {family}"
    return match.group(1)


@pytest.fixture(scope="module")
def contract() -> str:
    return CONTRACT.read_text("utf-8")


@pytest.mark.parametrize("spec", list(FAMILIES.values()), ids=lambda spec: spec.family.value)
def test_field_tables_match_the_families(contract: str, spec: FamilySpec) -> None:
    table = _section(contract, spec.family.value)
    assert table == field_table(spec), "regenerate with: .venv/bin/python -m tests.test_contract_docs"
    for field in spec.fields:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{field.name}` |"))
        assert f"| {field.unit or '—'} |" in row


def test_every_error_reason_is_documented(contract: str) -> None:
    for reason in REASONS:
        assert f"| `{reason}` |" in contract, reason


def test_every_fiware_type_unit_code_and_ignored_attribute_is_documented(contract: str) -> None:
    for spec in FAMILIES.values():
        if spec.fiware_type:
            assert f"`{spec.fiware_type}`" in contract
    for code in UNIT_NAMES:
        assert f"`{code}`" in contract, code
    for attribute in DESCRIPTIVE_ATTRIBUTES:
        assert f"`{attribute}`" in contract, attribute


def test_every_allowed_camera_key_and_ignored_attribute_is_documented(contract: str) -> None:
    for spec in FAMILIES.values():
        for key in sorted(spec.allowed_metadata or ()) + sorted(spec.ignored_attributes):
            assert f"`{key}`" in contract, (spec.family, key)


def test_limits_are_the_decoders_defaults(contract: str) -> None:
    decoder = Decoder(CommuneRegistry.load())
    assert f"{decoder.max_payload_bytes // 1024} KiB" in contract
    assert f"{decoder.max_batch:,}".replace(",", " ") in contract


def test_examples_decode_as_documented(contract: str) -> None:
    clock = int(EXAMPLES_CLOCK.timestamp()) * 1_000_000_000
    decoder = Decoder(CommuneRegistry.load(), clock=lambda: clock)
    examples = list(EXAMPLE.finditer(contract))
    assert len(examples) >= 12
    for example in examples:
        payload = example["body"].encode()
        json.loads(payload)  # every example is valid JSON, even the refused ones
        decoded = decoder.decode(example["topic"], payload)
        reasons = sorted({error.reason for error in decoded.errors})
        if example["expect"] == "ok":
            assert decoded.ok and decoded.readings, (example["topic"], decoded.errors)
        else:
            assert reasons == example["expect"].split(","), (example["topic"], decoded.errors)


def test_every_family_has_native_and_fiware_examples(contract: str) -> None:
    examples = [(m["topic"], m["body"]) for m in EXAMPLE.finditer(contract)]
    for spec in FAMILIES.values():
        own = [body for topic, body in examples if f"/{spec.family.value}/" in topic]
        assert any('"ts"' in body for body in own), spec.family
        if spec.fiware_type:
            assert any('"metadata"' in body for body in own), f"{spec.family}: normalized example"
            assert any(
                f'"type": "{spec.fiware_type}"' in body and '"metadata"' not in body for body in own
            ), f"{spec.family}: keyValues example"


if __name__ == "__main__":
    for family_spec in FAMILIES.values():
        print(f"<!-- fields:{family_spec.family.value} -->\n{field_table(family_spec)}\n<!-- /fields -->\n")
