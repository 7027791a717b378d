"""The query API for notebooks: ``/api/v1/...`` on the dashboards' Flask server.

Every call needs ``Authorization: Bearer <token>`` (tokens from ``smartcity dashboard
add-token``) and reads through the same ``CommuneData`` as the pages, so the same commune
rights hold. Answers are Arrow IPC streams, CSV or JSON (``format=`` or the Accept header).
Errors are JSON ``{"error": "..."}`` with 400 (bad query, too large), 401 (no or unknown
token), 403 (a commune that is not the user's).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import wraps
from typing import Any, Literal

import flask
import polars as pl

from dashboards.access import INDICES, AccessError, BadQuery, CommuneData, Forbidden
from dashboards.auth import app_context, current_time
from dashboards.timerange import WINDOWS, TimeRange, TimeRangeError
from dashboards.tokens import TokenRefused, bearer_data
from sensors.catalogue import STATISTICS, Level, aggregate_measurement, statistics_of
from sensors.families import family_spec
from storage.errors import StoreError

Format = Literal["arrow", "csv", "json"]
ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"
STATS = tuple(name for name, stat in STATISTICS.items() if stat.of in ("plain", "both"))
COUNTER_STATS = tuple(name for name, stat in STATISTICS.items() if stat.of in ("counter", "both"))

log = logging.getLogger(__name__)

api = flask.Blueprint("api_v1", __name__, url_prefix="/api/v1")


class ApiError(Exception):
    """An error answered as JSON with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> flask.Response:
    response = flask.jsonify({"error": message, "status": status})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="smartcity"'
    return response


def _authenticated_data() -> CommuneData:
    header = flask.request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing API token: send 'Authorization: Bearer <token>'")
    try:
        return bearer_data(token.strip())
    except TokenRefused as exc:
        raise ApiError(401, str(exc)) from exc


Handler = Callable[..., pl.DataFrame]


def endpoint(handler: Handler) -> Callable[..., flask.Response]:
    """Authenticate, run the handler with the user's data, encode the frame; map errors to statuses."""

    @wraps(handler)
    def wrapper(**kwargs: Any) -> flask.Response:
        try:
            data = _authenticated_data()
            answer_format = _negotiate()
            frame = handler(data, **kwargs)
            limit = app_context().settings.api.max_rows
            if frame.height > limit:
                raise ApiError(
                    400,
                    f"answer too large: {frame.height} rows, the limit is {limit}; narrow the time range, "
                    "the communes or the fields, or ask for a coarser resolution (every=)",
                )
            return _encode(frame, answer_format)
        except ApiError as exc:
            return _error(exc.status, exc.message)
        except Forbidden as exc:
            return _error(403, str(exc))
        except (BadQuery, TimeRangeError, AccessError) as exc:
            return _error(400, str(exc))
        except StoreError:
            # The store's own message may carry the query it was sent: logged, never answered.
            log.exception("API %s: the store failed", flask.request.path)
            return _error(503, "the store did not answer; try again later")
        except Exception:
            log.exception("API %s failed", flask.request.path)
            return _error(500, "internal error: the operator will find it in the server's log")

    return wrapper


def _negotiate() -> Format:
    asked = flask.request.args.get("format")
    if asked is not None:
        if asked not in ("arrow", "csv", "json"):
            raise ApiError(400, f"unknown format {asked!r}: expected arrow, csv or json")
        return asked  # type: ignore[return-value]
    # JSON first: a client that accepts anything (curl's */*) gets the documented default.
    accept = flask.request.accept_mimetypes
    best = accept.best_match(["application/json", "text/csv", ARROW_MEDIA_TYPE], default="application/json")
    return {"text/csv": "csv", ARROW_MEDIA_TYPE: "arrow"}.get(best or "", "json")  # type: ignore[return-value]


def _encode(frame: pl.DataFrame, answer_format: Format) -> flask.Response:
    if answer_format == "arrow":
        buffer = io.BytesIO()
        frame.write_ipc_stream(buffer)
        return flask.Response(buffer.getvalue(), mimetype=ARROW_MEDIA_TYPE)
    # Text formats carry times as ISO 8601 in UTC, with the Z that says so.
    texts = frame.with_columns(
        pl.col(name).dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    )
    if answer_format == "csv":
        return flask.Response(texts.write_csv(), mimetype="text/csv", content_type="text/csv; charset=utf-8")
    columns = [{"name": name, "type": str(dtype)} for name, dtype in frame.schema.items()]
    body = json.dumps({"columns": columns})[:-1] + ',"rows":' + texts.write_json() + "}"
    return flask.Response(body, mimetype="application/json")


# -- parameters -----------------------------------------------------------------------------


def _list(name: str) -> list[str]:
    values: list[str] = []
    for raw in flask.request.args.getlist(name):
        values.extend(v.strip() for v in raw.split(",") if v.strip())
    return values


def _span(max_days: float, what: str) -> TimeRange:
    start = flask.request.args.get("start")
    if not start:
        raise ApiError(400, "missing start: give a relative time like start=-7d or an ISO 8601 time")
    # Relative times count from the app's clock, as the pages' do.
    span = TimeRange.parse(start, flask.request.args.get("end"), current_time())
    if span.span > timedelta(days=max_days):
        raise ApiError(
            400,
            f"time range too long for {what}: {span.span.total_seconds() / 86400:.1f} days asked, "
            f"at most {max_days:g} days; split the range or use a coarser resolution",
        )
    return span


def _communes(data: CommuneData) -> list[str]:
    codes = _list("communes") or _list("commune")
    limit = app_context().settings.api.max_communes
    if len(codes) > limit:
        raise ApiError(400, f"too many communes: {len(codes)} asked, at most {limit} per call")
    return data.resolve(codes)


def _family(name: str) -> None:
    if family_spec(name) is None:
        raise BadQuery(f"unknown family {name!r}: expected air_quality, traffic, building, camera or network")


def _aggregate_fields(family: str) -> list[str] | None:
    """The columns asked for with ``fields=`` and ``stats=``; None for every column.

    Cumulative counters (building energy, network error counters) are aggregated as
    ``increase``, ``resets`` and ``count`` rather than ``mean``/``min``/``max``/``p95``.
    """
    spec = family_spec(family)
    assert spec is not None
    asked_fields, asked_stats = _list("fields"), _list("stats")
    known_stats = dict.fromkeys((*STATS, *COUNTER_STATS))
    if bad := [s for s in asked_stats if s not in known_stats]:
        raise ApiError(400, f"unknown statistic(s) {', '.join(bad)}: expected {', '.join(known_stats)}")
    if bad := [f for f in asked_fields if f not in spec.numeric_fields]:
        raise ApiError(
            400,
            f"unknown field(s) {', '.join(bad)} for {family}: "
            f"expected some of {', '.join(spec.numeric_fields)}",
        )
    if not asked_fields and not asked_stats:
        return None
    columns = []
    for name in asked_fields or spec.numeric_fields:
        field = spec.field(name)
        assert field is not None
        applicable = COUNTER_STATS if field.counter else STATS
        stored = [stat.name for stat in statistics_of(field)]  # the catalogue's defaults
        columns += [f"{name}_{stat}" for stat in (asked_stats or stored) if stat in applicable]
    if not columns:
        raise ApiError(
            400,
            f"none of the statistics {', '.join(asked_stats)} applies to {', '.join(asked_fields)}: "
            f"counters have {', '.join(COUNTER_STATS)}, other fields {', '.join(STATS)}",
        )
    return columns


# -- endpoints ------------------------------------------------------------------------------


@api.get("/communes")
@endpoint
def communes(data: CommuneData) -> pl.DataFrame:
    """The communes the token's user may see."""
    rows = data.communes()
    return pl.DataFrame(
        {
            "insee": [c.insee for c in rows],
            "name": [c.name for c in rows],
            "department": [c.department for c in rows],
            "epci": [c.epci for c in rows],
            "population": [c.population for c in rows],
            "latitude": [c.latitude for c in rows],
            "longitude": [c.longitude for c in rows],
        },
        schema={
            "insee": pl.String,
            "name": pl.String,
            "department": pl.String,
            "epci": pl.String,
            "population": pl.Int64,
            "latitude": pl.Float64,
            "longitude": pl.Float64,
        },
    )


@api.get("/aggregates/<family>")
@endpoint
def aggregates(data: CommuneData, family: str) -> pl.DataFrame:
    """Rolling aggregates of a family at one resolution (``every``), per commune or per device."""
    _family(family)
    every = flask.request.args.get("every", "1h")
    if every not in WINDOWS:
        raise ApiError(400, f"unknown resolution every={every!r}: expected one of {', '.join(WINDOWS)}")
    level = flask.request.args.get("level", "commune")
    if level not in ("commune", "device"):
        raise ApiError(400, f"unknown level {level!r}: expected commune or device")
    limits = app_context().settings.api
    span = _span(limits.max_days_by_window[every], f"every={every}")
    coarser = data.kept_window(family, span, every, level=_level(level))
    if coarser != every:
        kept = data.store.retention(aggregate_measurement(family, every, _level(level)))
        raise ApiError(
            400,
            f"aggregates at every={every} are kept {kept.days if kept else 0} days and this range starts "
            f"earlier: use every={coarser} for it",
        )
    codes = _communes(data)
    fields = _aggregate_fields(family)
    devices = _list("devices")
    frame = data.aggregates(family, codes, span, every, level=_level(level), fields=fields)
    return (
        frame.filter(pl.col("device_id").is_in(devices))
        if devices and "device_id" in frame.columns
        else frame
    )


def _level(value: str) -> Level:
    return "device" if value == "device" else "commune"


@api.get("/indices/<name>")
@endpoint
def indices(data: CommuneData, name: str) -> pl.DataFrame:
    """An index measurement: atmo_daily, eaqi_hourly, traffic_congestion, building_energy_daily..."""
    if name not in INDICES:
        raise ApiError(400, f"unknown index {name!r}: expected one of {', '.join(INDICES)}")
    limits = app_context().settings.api
    span = _span(limits.max_days_by_window["1h"], name)
    return data.index(name, _communes(data), span, fields=_list("fields") or None)


@api.get("/atmo")
@endpoint
def atmo(data: CommuneData) -> pl.DataFrame:
    """The daily ATMO index of communes (``atmo_daily``)."""
    limits = app_context().settings.api
    span = _span(limits.max_days_by_window["1d"], "atmo")
    return data.index("atmo_daily", _communes(data), span)


@api.get("/anomalies")
@endpoint
def anomalies(data: CommuneData) -> pl.DataFrame:
    """Anomalies that started in the range; ``kinds=``, ``families=`` and ``devices=`` filter them."""
    limits = app_context().settings.api
    span = _span(limits.max_days_by_window["1d"], "anomalies")
    frame = data.anomalies(_communes(data), span)
    return _filter_tags(
        frame, {"kind": _list("kinds"), "family": _list("families"), "device_id": _list("devices")}
    )


@api.get("/alerts")
@endpoint
def alerts(data: CommuneData) -> pl.DataFrame:
    """Alert transitions (pending, firing, resolved) in the range; ``states=`` filters them."""
    limits = app_context().settings.api
    span = _span(limits.max_days_by_window["1d"], "alerts")
    frame = data.alerts(_communes(data), span)
    return _filter_tags(frame, {"state": _list("states"), "rule": _list("rules")})


@api.get("/readings/<family>")
@endpoint
def readings(data: CommuneData, family: str) -> pl.DataFrame:
    """Raw readings of one commune, for short ranges only (``max_raw_days``)."""
    _family(family)
    spec = family_spec(family)
    assert spec is not None
    limits = app_context().settings.api
    span = _span(limits.max_raw_days, "raw readings")
    codes = _communes(data)
    if len(codes) != 1:
        raise ApiError(400, "raw readings are read one commune at a time: give exactly one communes= code")
    fields = _list("fields") or None
    known = {f.name for f in spec.fields} | {"received_at"}
    if fields and (bad := [f for f in fields if f not in known]):
        raise ApiError(
            400,
            f"unknown field(s) {', '.join(bad)} for {family}: expected some of {', '.join(sorted(known))}",
        )
    devices = _list("devices")
    frame = data.readings(family, codes[0], span, fields=fields)
    return (
        frame.filter(pl.col("device_id").is_in(devices))
        if devices and "device_id" in frame.columns
        else frame
    )


def _filter_tags(frame: pl.DataFrame, filters: dict[str, Sequence[str]]) -> pl.DataFrame:
    for column, values in filters.items():
        if values and column in frame.columns:
            frame = frame.filter(pl.col(column).is_in(list(values)))
    return frame


@api.get("/<path:unknown>")
def not_found(unknown: str) -> flask.Response:
    """Unknown API paths answer JSON too, rather than the dashboards' HTML."""
    return _error(404, f"no such endpoint /api/v1/{unknown}: see docs/api.md")
