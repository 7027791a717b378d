"""Charts tell the truth: the axis is the period asked for, incomplete intervals are marked and
never drawn as drops, and alert rules and regulatory levels are lines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from dashboards.access import CommuneData
from dashboards.chart_truth import thresholds_for
from dashboards.i18n import PARIS
from dashboards.pages.common import span_of
from dashboards.timerange import TimeRange
from dashboards.users import User
from dashboards.views import family_chart
from sensors.communes import CommuneRegistry
from storage.base import TIME, TIME_DTYPE
from storage.duckdb_store import DuckDBStore
from tests.dashboard_fixtures import POISSY, floor_time

NOW = datetime(2026, 12, 5, 10, 7, tzinfo=UTC)
QUARTER = timedelta(minutes=15)


@pytest.fixture
def data() -> Iterator[CommuneData]:
    store = DuckDBStore()
    yield CommuneData(store, User("agent", frozenset([POISSY])), CommuneRegistry.load())
    store.close()


def _local(moment: datetime) -> str:
    return moment.astimezone(PARIS).strftime("%Y-%m-%d %H:%M")


def test_the_axis_spans_the_chosen_period_even_without_data(data: CommuneData) -> None:
    span = span_of("1y", NOW)
    chart = family_chart(data, POISSY, "air_quality", "pm10", span, lang="fr", max_points=2000, now=NOW)
    axis = chart.figure.layout.xaxis
    assert axis.type == "date"
    assert list(axis.range) == [_local(NOW - timedelta(days=365)), _local(NOW)]


def test_a_running_interval_and_a_silent_one_are_marked_not_drawn_as_drops(data: CommuneData) -> None:
    """Energy per 15 minutes: 10 kWh each, except the quarter still running (3.5 kWh so far) and
    one where a meter was silent (half the readings, 5 kWh)."""
    last = floor_time(NOW, QUARTER)  # 10:00, running until 10:15
    times = [last - QUARTER * i for i in range(8, -1, -1)]
    increase = [10.0] * 9
    counts = [60] * 9
    increase[3], counts[3] = 5.0, 30
    increase[-1], counts[-1] = 3.5, 28
    frame = pl.DataFrame(
        {
            TIME: pl.Series(times).cast(TIME_DTYPE),
            "insee": [POISSY] * 9,
            "energy_increase": increase,
            "energy_resets": [0] * 9,
            "energy_count": counts,
        }
    )
    data.store.write("building_15m_commune", frame, tags=["insee"])
    span = TimeRange(NOW - timedelta(days=2), NOW)  # drawn per 15 minutes
    figure = family_chart(
        data, POISSY, "building", "energy", span, lang="fr", max_points=2000, now=NOW
    ).figure
    line, marks = figure.data
    assert min(line.y) == 10.0  # no drop on the line
    assert marks.name == "intervalle incomplet (en cours ou mesures manquantes)"
    assert sorted(marks.y) == [3.5, 5.0]
    assert _local(last) in marks.x


def test_alert_rules_and_atmo_levels_are_drawn_as_labelled_lines(data: CommuneData, tmp_path: Path) -> None:
    rules = tmp_path / "alerts.toml"
    rules.write_text(
        '[delivery."*"]\nrecipients = ["a@b.fr"]\n[delivery."*".webhook]\nurl = "http://127.0.0.1:9/"\n'
        'secret_env = "X"\n\n[[rules]]\nname = "pm10-eleve"\n'
        'title = { fr = "Particules PM10 élevées", en = "High PM10" }\ncommunes = "*"\n'
        'family = "air_quality"\ncondition = "above"\nmeasurement = "air_quality_15m_commune"\n'
        'field = "pm10_mean"\nraise = 45\n',
        "utf-8",
    )
    levels = thresholds_for(
        rules, "air_quality", "pm10", window="15m", commune_level=True, insee=POISSY, lang="fr"
    )
    assert [(lv.value, lv.kind) for lv in levels] == [(45.0, "rule"), (50.0, "regulatory")]
    assert "Particules PM10 élevées" in levels[0].label and "45,0" in levels[0].label
    assert levels[1].label.startswith("seuil ATMO « mauvais »")
    span = TimeRange(NOW - timedelta(days=2), NOW)  # per 15 minutes, as the rule compares
    figure = family_chart(
        data, POISSY, "air_quality", "pm10", span, lang="fr", max_points=2000, now=NOW, thresholds=levels
    ).figure
    assert sorted(shape.y0 for shape in figure.layout.shapes) == [45.0, 50.0]
    written = " ".join(a.text for a in figure.layout.annotations)
    assert "Particules PM10 élevées" in written and "seuil ATMO" in written
    # A level of another window, or of a commune the rule does not cover, is not drawn.
    assert thresholds_for(
        rules, "air_quality", "pm10", window="1h", commune_level=True, insee=POISSY, lang="fr"
    ) == [levels[1]]
