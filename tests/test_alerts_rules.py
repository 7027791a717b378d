"""Rules files, topology files and templates are validated with messages an operator can act on."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.durations import format_duration, parse_duration
from alerts.messages import VARIABLES, TemplateError, Templates, format_number, format_quantity, format_time
from alerts.rules import INDEX_CLASSES, RulesError, index_class, load_rules, parse_rules
from alerts.topology import Topology, TopologyError
from sensors.communes import CommuneRegistry
from tests.alerts_fixtures import START

REGISTRY = CommuneRegistry.load()
DELIVERY = {"*": {"recipients": ["a@b.fr"], "webhook": {"url": "https://relay.example/h", "secret_env": "S"}}}


def _rule(**keys: Any) -> dict[str, Any]:
    base = {
        "name": "pm10",
        "communes": ["78498"],
        "family": "air_quality",
        "condition": "above",
        "measurement": "air_quality_15m_commune",
        "field": "pm10_mean",
        "raise": 50,
    }
    return {k: v for k, v in {**base, **keys}.items() if v is not None}


def _index_rule(name: str, index: str, level: object, **keys: Any) -> dict[str, Any]:
    return _rule(name=name, condition="index_at_least", index=index, measurement=None, field=None, **keys) | {
        "raise": level
    }


def _errors(*rules: dict[str, Any], delivery: dict[str, Any] | None = None) -> str:
    with pytest.raises(RulesError) as info:
        parse_rules({"delivery": DELIVERY if delivery is None else delivery, "rules": list(rules)}, REGISTRY)
    return str(info.value)


def test_the_shipped_example_covers_the_nine_communes(repo_root: Path) -> None:
    rules = load_rules(repo_root / "examples" / "alerts.toml", REGISTRY)
    assert {r.condition for r in rules.rules} == {"above", "below", "index_at_least", "anomaly", "offline"}
    assert all(rules.delivery_for(c.insee) is not None for c in REGISTRY)
    assert set(REGISTRY.codes) <= set(rules.delivery)
    assert rules.defaults.topology is not None and rules.defaults.topology.is_file()
    assert len(Topology.load(rules.defaults.topology)) > 0


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {"communes": ["78498", "12345"]},
            "rule 'pm10' (rules[0]): key 'communes': value ['78498', '12345']",
        ),
        ({"communes": ["12345"]}, "unknown INSEE code(s) '12345'"),
        ({"family": "trains"}, "key 'family': value 'trains': expected one of air_quality, traffic"),
        ({"field": "pm10_avg"}, "key 'field': value 'pm10_avg': expected a field of air_quality_15m_commune"),
        ({"measurement": "air_quality_2h"}, "key 'measurement': value 'air_quality_2h'"),
        ({"measurement": None}, "key 'measurement': value None: expected a measurement"),
        ({"raise": None}, "key 'raise': value None: expected a number"),
        ({"raise": 50, "clear": 60}, "key 'clear': value 60: expected a level at or below raise (50)"),
        ({"for": "quinze minutes"}, "key 'for': value 'quinze minutes': expected a duration"),
        ({"severity": "urgent"}, "key 'severity': value 'urgent': expected 'info', 'warning' or 'critical'"),
        ({"colour": "red"}, "key 'colour': value 'red': unknown key"),
        ({"name": "PM 10!"}, "key 'name': value 'PM 10!': expected lower-case letters"),
        ({"condition": "anomaly", "kind": None, "raise": None}, "key 'kind': value None: expected one of"),
        ({"condition": "offline", "raise": 3}, "key 'raise': value 3"),
        ({"recipients": ["pas-une-adresse"]}, "expected email addresses, got 'pas-une-adresse'"),
        (
            {"family": ["air_quality", "traffic"]},
            "key 'family': value ['air_quality', 'traffic']: expected one family",
        ),
        (
            {"condition": "offline", "raise": None, "family": ["air_quality", "bus"]},
            "expected a list of families among air_quality",
        ),
    ],
)
def test_each_mistake_is_named_with_its_rule_key_value_and_expectation(
    keys: dict[str, Any], expected: str
) -> None:
    assert expected in _errors(_rule(**keys))


def test_index_classes_are_accepted_in_french_with_or_without_accents() -> None:
    rules = parse_rules(
        {
            "delivery": DELIVERY,
            "rules": [
                _index_rule("a", "atmo", "Dégradé"),
                _index_rule("b", "eaqi", "tres mauvais"),
                _index_rule("c", "atmo", 4, clear="moyen"),
            ],
        },
        REGISTRY,
    )
    assert [r.raise_value for r in rules.rules] == [3.0, 5.0, 4.0]
    assert rules.rules[2].clear_value == 2.0
    assert [index_class(name) for name in INDEX_CLASSES["fr"]] == [1, 2, 3, 4, 5, 6]
    message = _errors(_index_rule("pm10", "atmo", "horrible"))
    assert "key 'raise': value 'horrible'" in message
    assert "'dégradé'" in message


def test_delivery_problems_are_reported() -> None:
    assert "no [delivery] for 78498" in _errors(_rule(), delivery={"78160": DELIVERY["*"]})
    assert "unknown INSEE code(s) '99999' in [delivery]" in _errors(
        _rule(), delivery={**DELIVERY, "99999": DELIVERY["*"]}
    )
    secret_in_file = {
        "*": {"recipients": ["a@b.fr"], "webhook": {"url": "https://r.example", "secret_env": "hunter2!"}}
    }
    assert "expected the NAME of an environment variable" in _errors(_rule(), delivery=secret_in_file)
    no_channel = {"*": {"recipients": ["a@b.fr"]}}
    assert "expected a [webhook] or an [smtp] table" in _errors(_rule(), delivery=no_channel)
    nobody = {"*": {"webhook": {"url": "https://r.example", "secret_env": "S"}}}
    assert "nobody to tell" in _errors(_rule(), delivery=nobody)
    assert "used by two rules" in _errors(_rule(), _rule())


def test_every_problem_of_a_file_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[delivery."*"]\nrecipients = ["a@b.fr"]\nwebhook = { url = "https://r.example", secret_env = "S" }\n'
        '[[rules]]\nname = "one"\ncommunes = "*"\nfamily = "air_quality"\ncondition = "sideways"\n'
        '[[rules]]\nname = "two"\ncommunes = "*"\nfamily = "network"\ncondition = "offline"\n'
        'silence = "soon"\n'
    )
    with pytest.raises(RulesError) as info:
        load_rules(path, REGISTRY)
    text = str(info.value)
    assert str(path) in text
    assert "rule 'one' (rules[0]): key 'condition': value 'sideways'" in text
    assert "rule 'two' (rules[1]): key 'silence': value 'soon'" in text


def test_unreadable_and_invalid_toml_files(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "absent.toml", REGISTRY)
    broken = tmp_path / "broken.toml"
    broken.write_text("[[rules]\nname = ")
    with pytest.raises(RulesError, match="not valid TOML"):
        load_rules(broken, REGISTRY)


def test_durations() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration(90) == timedelta(seconds=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    for bad in ("", "soon", "-5m", True, -1):
        with pytest.raises(ValueError, match="expected"):
            parse_duration(bad)


# -- topology -------------------------------------------------------------------------------


def test_topology_knows_ancestors_and_the_root_cause(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(
        "# comment\ndevice_id,parent,insee\nolt,,92049\nont,olt,92049\naq,ont,92049\nalone,,92049\n"
    )
    topology = Topology.load(path)
    assert topology.ancestors("aq") == ["ont", "olt"]
    assert topology.down_ancestor("aq", {"ont", "olt"}) == "olt"
    assert topology.down_ancestor("aq", {"ont"}) == "ont"
    assert topology.down_ancestor("alone", {"olt"}) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("device,parent\na,b\n", "expected a header with the columns device_id and parent"),
        ("# comment\ndevice_id,parent\na,b\n# another\na,c\n", r"devices.csv:5: device 'a' is listed twice"),
        ("device_id,parent\na,a\n", "its own parent"),
        ("device_id,parent\na,b\nb,a\n", "form a cycle"),
        ("device_id,parent\na/b,c\n", "not a valid device id"),
    ],
)
def test_topology_mistakes(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(text)
    with pytest.raises(TopologyError, match=message):
        Topology.load(path)


# -- templates and formatting ---------------------------------------------------------------


def test_french_number_and_time_conventions() -> None:
    assert format_number(62.25) == "62,25"
    assert format_number(50.0) == "50"
    assert format_number(-27.5) == "-27,5"
    assert format_number(12345.678) == "12\u202f345,68"
    assert format_quantity(62.25, "µg/m³") == "62,25\u00a0µg/m³"
    # 14 July 2026 10:00 UTC is 12:00 in Paris (summer time); 10:00 UTC in January is 11:00.
    assert format_time(START) == "14/07/2026 à 12:00 (heure de Paris)"
    assert format_time(START.replace(month=1)) == "14/01/2026 à 11:00 (heure de Paris)"


def test_an_operator_template_replaces_the_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "firing.subject").write_text("ALERTE $commune: $value")
    templates = Templates(tmp_path)
    variables = {name: f"<{name}>" for name in VARIABLES}
    rendered = templates.render("firing", "fr", variables, html_items="", html_dependants="")
    assert rendered.subject == "ALERTE <commune>: <value>"
    assert "&lt;commune&gt;" in rendered.html  # values are escaped in HTML
    assert "<commune>" in rendered.text


def test_a_template_with_an_unknown_variable_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "resolved.txt").write_text("Resolved in $comune at $time")
    with pytest.raises(TemplateError, match=r"en/resolved.txt: unknown variable\(s\) \$comune"):
        Templates(tmp_path)
    (tmp_path / "en" / "resolved.txt").write_text("costs 5$ at $time")
    with pytest.raises(TemplateError, match="write \\$\\$ for a dollar sign"):
        Templates(tmp_path)


def test_fields_are_named_in_words_for_commune_staff() -> None:
    from alerts.labels import field_label

    assert field_label("pm10_mean", "air_quality_15m_commune", "fr") == "PM10, moyenne sur 15 min"
    assert field_label("pm10_mean", "air_quality_15m_commune", "en") == "PM10, 15 min mean"
    assert field_label("temperature_max", "building_1d", "fr") == "température, maximum sur la journée"
    assert field_label("opticalRxPower", "network", "fr") == "puissance optique reçue"
    assert field_label("sub_no2", "atmo_daily", "fr") == "sous-indice dioxyde d'azote (NO2)"
    assert field_label("mystery_field", "x", "fr") == "mystery_field"  # unknown: its own name
