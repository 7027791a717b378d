"""The commune page's status table stays readable and light for a commune of many devices."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl

from dashboards.i18n import format_duration
from dashboards.pages import commune
from sensors.families import Family
from tests.dashboard_fixtures import MONTROUGE, POISSY, make_env
from tests.test_dashboard_callbacks import data_of, texts


def _rows(table: object) -> list[str]:
    """Each body row of a table as the text of its cells."""
    body = table.children[2]  # type: ignore[attr-defined]  # caption, head, body
    return [texts([cell.children for cell in line.children]) for line in body.children]


def test_a_large_commune_lists_its_offline_devices_first_and_says_how_many_are_not_listed(
    tmp_path: Path,
) -> None:
    env = make_env(tmp_path, status_rows=10)
    now = env.scenario.now
    extra = [f"tra-{POISSY}-x{n:02d}" for n in range(12)]
    silent = extra[-3:]
    # The extra devices reported a minute ago, but three of them stopped two hours ago.
    rows = pl.DataFrame(
        {
            "time": [now - (timedelta(hours=2) if d in silent else timedelta(minutes=1)) for d in extra],
            "insee": [POISSY] * len(extra),
            "device_id": extra,
            "intensity": [12.0] * len(extra),
        }
    ).with_columns(pl.col("time").dt.cast_time_unit("ns"))
    env.store.write("traffic", rows, tags=["insee", "device_id"])
    total = sum(env.store.series(f.value, where={"insee": POISSY}).height for f in Family)

    tables = commune.status_panel(
        data_of(env, "poissy"), POISSY, "24h", lang="fr", settings=env.settings, now=now
    )

    listed = _rows(tables[0])
    assert len(listed) == 10
    assert all(any(d in row for row in listed) for d in silent)
    caption = tables[0].children[0].children
    assert f"10 sur {total} listés" in caption and "hors ligne d’abord" in caption
    english = commune.status_panel(
        data_of(env, "poissy"), POISSY, "24h", lang="en", settings=env.settings, now=now
    )
    assert f"10 of {total} listed" in english[0].children[0].children
    assert MONTROUGE not in texts(tables)
    # The listed devices' lateness is still read: the fixture's readings arrive 2 s late.
    (air,) = [row for row in listed if f"air-{POISSY}-0" in row]
    assert format_duration(2.0, "fr") in air
    env.store.close()


def test_a_commune_that_fits_lists_every_device_under_the_plain_caption(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    tables = commune.status_panel(
        data_of(env, "poissy"), POISSY, "24h", lang="en", settings=env.settings, now=env.scenario.now
    )
    devices = env.store.series("traffic", where={"insee": POISSY}).get_column("device_id").to_list()
    assert all(any(d in row for row in _rows(tables[0])) for d in devices)
    assert tables[0].children[0].children == "Device status"
    env.store.close()
