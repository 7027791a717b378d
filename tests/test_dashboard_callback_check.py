"""Forged Dash callbacks: whatever the body, a request that does not match the app's callback map
is a 400 that says what is wrong, never a 500 and never a call of the callback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboards.pages.common import choice_id
from tests.dashboard_fixtures import MONTROUGE, POISSY, DashboardEnv, dash_callback, make_env, status_callback
from tests.test_dashboard_callbacks import sign_in

CALLBACK = "/_dash-update-component"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardEnv]:
    built = make_env(tmp_path_factory.mktemp("dash"))
    yield built
    built.store.close()


@pytest.fixture(scope="module")
def client(env: DashboardEnv) -> FlaskClient:
    signed_in: FlaskClient = env.app.server.test_client()
    assert sign_in(signed_in, "poissy", env.accounts["poissy"].password).status_code == 302
    return signed_in


def family_click(ids: list[Any], clicks: list[Any], changed: str) -> dict[str, Any]:
    """The commune page's family-tab callback, as a click on a tab sends it."""
    pattern = '{"choice":"commune-family","key":["ALL"]}'
    outputs = [("commune-family", "data")] + [
        (pattern, p) for p in ("aria-selected", "tabIndex", "className")
    ]
    body = dash_callback([*outputs, ("commune-family-panel", "aria-labelledby")], [], changed)
    specs = body["outputs"]
    for index in (1, 2, 3):
        specs[index] = [{"id": i, "property": specs[index]["property"]} for i in ids]
    body["inputs"] = [
        [{"id": i, "property": "n_clicks", "value": c} for i, c in zip(ids, clicks, strict=True)]
    ]
    body["state"] = [[{"id": i, "property": "id", "value": i} for i in ids]]
    return body


TABS = [choice_id("commune-family", key) for key in ("air_quality", "traffic")]
CLICKED = '{"choice":"commune-family","key":"traffic"}.n_clicks'


def test_the_requests_the_page_sends_are_answered(client: FlaskClient) -> None:
    assert client.post(CALLBACK, json=status_callback(POISSY)).status_code == 200
    answer = client.post(CALLBACK, json=family_click(TABS, [0, 1], CLICKED))
    assert answer.status_code == 200, answer.text
    assert answer.json is not None and answer.json["response"]["commune-family"]["data"] == "traffic"


def _with(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**body, **changes}


VALID = status_callback(POISSY)
INPUTS = VALID["inputs"]

FORGED: list[tuple[str, Any, str]] = [
    ("not an object", [VALID], "JSON object"),
    ("no output", _with(VALID, output=None), "'output'"),
    ("unknown output", _with(VALID, output="commune-secret.children"), "commune-secret.children"),
    (
        "another callback's outputs",
        _with(VALID, outputs={"id": "commune-chart", "property": "figure"}),
        "commune-status.children",
    ),
    ("an input missing", _with(VALID, inputs=INPUTS[:2]), "3 entries"),
    ("an input too many", _with(VALID, inputs=[*INPUTS, INPUTS[0]]), "3 entries"),
    (
        "another component's input",
        _with(VALID, inputs=[{**INPUTS[0], "id": "device-key"}, *INPUTS[1:]]),
        "commune-insee.data",
    ),
    (
        "another property",
        _with(VALID, inputs=[{**INPUTS[0], "property": "children"}, *INPUTS[1:]]),
        "commune-insee.data",
    ),
    ("inputs not a list", _with(VALID, inputs={"commune-insee": POISSY}), "'inputs'"),
    ("a number for the commune", status_callback(78498), "commune-insee.data: expected str, got a number"),
    ("a list for the commune", status_callback([POISSY]), "commune-insee.data: expected str, got a list"),
    ("an object for the commune", status_callback({"insee": POISSY}), "expected str, got an object"),
    (
        "a string for the tick",
        _with(VALID, inputs=[*INPUTS[:2], {**INPUTS[2], "value": "soon"}]),
        "commune-tick.n_intervals: expected int | None, got a string",
    ),
    (
        "a trigger that is no input",
        _with(VALID, changedPropIds=["commune-chart.figure"]),
        "commune-chart.figure",
    ),
    ("a trigger that is no string", _with(VALID, changedPropIds=[["commune-insee.data"]]), "changedPropIds"),
    (
        "a tab outside the pattern",
        family_click([*TABS, {"choice": "device-range", "key": "7d"}], [0, 1, 0], CLICKED),
        '{"choice":"commune-family","key":["ALL"]}',
    ),
    ("a click count that is text", family_click(TABS, [0, "1"], CLICKED), "expected list[int | None]"),
    (
        "tabs that are not a list",
        _with(family_click(TABS, [0, 1], CLICKED), inputs=[{"id": TABS[0]}]),
        "list",
    ),
]


@pytest.mark.parametrize(("body", "named"), [(b, n) for _, b, n in FORGED], ids=[w for w, _, _ in FORGED])
def test_a_forged_callback_is_a_400_that_says_what_is_wrong(
    client: FlaskClient, body: Any, named: str
) -> None:
    answer = client.post(CALLBACK, json=body)
    assert answer.status_code == 400, answer.text
    assert named in answer.text
    assert MONTROUGE not in answer.text


def test_a_body_that_is_not_json_is_a_400(client: FlaskClient) -> None:
    answer = client.post(CALLBACK, data=b"{not json", content_type="application/json")
    assert answer.status_code == 400 and "JSON object" in answer.text


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(insee=JSON, range_key=JSON, tick=JSON)
def test_no_value_in_a_callback_input_is_a_server_error(
    client: FlaskClient, insee: Any, range_key: Any, tick: Any
) -> None:
    body = status_callback(insee)
    body["inputs"][1]["value"], body["inputs"][2]["value"] = range_key, tick
    answer = client.post(CALLBACK, json=body)
    assert answer.status_code in (200, 400), answer.text
    assert MONTROUGE not in answer.text
