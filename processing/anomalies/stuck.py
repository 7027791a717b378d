"""Stuck (flatline) anomalies: runs of identical readings longer than the field ever repeats when
healthy, learned from the whole fleet."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from processing.anomalies.frame import (
    DEV,
    FIRST,
    SECOND_NS,
    AnomalyOptions,
    Prepared,
    empty_anomalies,
    new_group,
)


@dataclass(slots=True)
class FlatRuns:
    """Runs of identical readings collected chunk by chunk, with how often each field repeats."""

    runs: dict[str, list[pl.DataFrame]] = field(default_factory=dict)
    comparable: dict[str, int] = field(default_factory=dict)
    """Field -> consecutive pairs of readings both present."""
    repeated: dict[str, int] = field(default_factory=dict)
    """Field -> such pairs with equal values."""

    def add(self, other: FlatRuns) -> None:
        """Take in another chunk's runs."""
        for name, frames in other.runs.items():
            self.runs.setdefault(name, []).extend(frames)
        for name, count in other.comparable.items():
            self.comparable[name] = self.comparable.get(name, 0) + count
        for name, count in other.repeated.items():
            self.repeated[name] = self.repeated.get(name, 0) + count


def flat_runs(prep: Prepared) -> FlatRuns:
    """Every run of two or more identical consecutive readings of a device's field."""
    out = FlatRuns()
    frame = prep.frame
    last_of_device = pl.col(FIRST).shift(-1, fill_value=True)
    for name in prep.gauge_fields():
        x = pl.col(name)
        comparable = x.is_not_null() & x.shift(1).is_not_null() & ~pl.col(FIRST)
        same = comparable & (x == x.shift(1))
        flags = frame.select(comparable.alias("c"), same.alias("s"))
        out.comparable[name] = int(flags["c"].sum())
        out.repeated[name] = int(flags["s"].sum())
        if out.repeated[name] == 0:
            continue
        runs = (
            frame.select(
                DEV, "time", x, pl.col("time").shift(1).alias("_start"), last_of_device.alias("_last")
            )
            .with_row_index("_row")
            .filter(flags["s"])
            .with_columns(new_group([], pl.col("_row").diff() != 1))
            .group_by("group", maintain_order=True)
            .agg(
                pl.col(DEV).first(),
                pl.col("_start").first().alias("time"),
                pl.col("time").last().alias("_end"),
                pl.col(name).first().alias("observed"),
                (pl.len() + 1).alias("readings"),
                pl.col("_last").last().alias("open"),
            )
            .with_columns((pl.col("_end") - pl.col("time")).dt.total_nanoseconds().alias("duration_ns"))
            .drop("group")
        )
        out.runs[name] = [runs]
    return out


def find_stuck(
    prep: Prepared, opts: AnomalyOptions, flat: FlatRuns, hourly: pl.DataFrame | None
) -> pl.DataFrame:
    """Stuck anomalies from the runs of every chunk: the allowed duration is learned from all of
    them at once (see ``processing.anomalies.detect_stuck``)."""
    found: list[pl.DataFrame] = []
    for name, frames in flat.runs.items():
        comparable, repeated = flat.comparable[name], flat.repeated[name]
        if comparable == 0 or 1 - repeated / comparable < opts.stuck_min_change_rate:
            continue  # constant by nature (a lane number): repeating is its normal behaviour
        spec = prep.field_spec(name)
        runs = pl.concat(frames)
        # At a physical bound the value is clipped, not frozen: zero vehicles at night.
        at_bound = pl.lit(False)
        if spec.minimum is not None:
            at_bound = at_bound | (pl.col("observed") <= spec.minimum)
        if spec.maximum is not None:
            at_bound = at_bound | (pl.col("observed") >= spec.maximum)
        runs = runs.filter(~at_bound)
        if runs.height == 0:
            continue
        allowed_ns = _allowed_flatline_ns(runs["duration_ns"], comparable - repeated, opts)
        stuck = runs.filter(
            (pl.col("duration_ns") > allowed_ns) & (pl.col("readings") >= opts.stuck_min_readings)
        )
        if stuck.height:
            found.append(
                stuck.select(
                    "time",
                    DEV,
                    pl.lit(name).alias("field"),
                    pl.when(pl.col("open"))
                    .then(None)
                    .otherwise(pl.col("_end").dt.epoch("ns"))
                    .alias("end_ns"),
                    "observed",
                    (pl.col("duration_ns") / allowed_ns).alias("score"),
                    "open",
                )
            )
    if not found:
        return empty_anomalies()
    stuck_rows = pl.concat(found)
    fields = sorted(set(stuck_rows["field"]))
    if hourly is not None and all(f in hourly.columns for f in fields):
        # The median of hourly medians: cheap, and as robust as the median of the readings.
        medians = (
            hourly.group_by(DEV)
            .agg(pl.col(fields).median())
            .unpivot(index=DEV, variable_name="field", value_name="expected")
        )
        stuck_rows = stuck_rows.join(medians, on=[DEV, "field"], how="left")
    return prep.with_tags(stuck_rows).with_columns(kind=pl.lit("stuck"))


def _allowed_flatline_ns(durations: pl.Series, changes: int, opts: AnomalyOptions) -> float:
    """How long a field may legitimately repeat a value, learned from the whole fleet.

    Most readings start a new run (the value changed); ``durations`` are the runs of two or more
    equal readings. The longest legitimate repeat is the (1 - tail) quantile over every run, which
    only falls among the repeats when they are more than ``tail`` of all runs.
    """
    total_runs = changes + durations.len()
    share = opts.stuck_tail * total_runs / max(durations.len(), 1)
    longest = 0.0
    if share < 1:
        value = durations.quantile(1 - share, interpolation="higher")
        longest = float(value) if isinstance(value, int | float) else 0.0
    return max(opts.stuck_min_duration_s * SECOND_NS, opts.stuck_factor * longest)
