"""Dash callback requests checked against the app's own callback map before any callback runs.

The renderer sends ``/_dash-update-component`` a body that names a callback by its outputs and
gives the value of each of its inputs and states. Anyone signed in can forge that body; Dash
itself trusts it and fails deep inside (KeyError, TypeError) with a 500. Here every part is
checked first, and a mismatch is a ``CallbackRefused`` whose message names what is wrong:

- the callback: ``output`` must be a key of the callback map, ``outputs`` its outputs;
- each input and state: the component id and property the callback declares, one entry each
  (a list of entries for an ``ALL`` pattern, with ids of the pattern's shape);
- each value: of the type the callback function's annotation declares (pydantic, strict), so
  a list or an object never reaches a function written for a string;
- ``changedPropIds``: inputs of this callback.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

Json = Any
"""A decoded JSON value."""

WILDCARDS = {"ALL", "ALLSMALLER", "MATCH"}
"""Dash's pattern-matching wildcards, as they appear in a serialised id (``["ALL"]``)."""


class CallbackRefused(ValueError):
    """A callback request that does not match any callback of the app, or not its types."""


@dataclass(frozen=True, slots=True)
class Dependency:
    """One declared output, input or state: a component id (a string, or a pattern) and a property."""

    component_id: str | dict[str, Json]
    prop: str

    @property
    def name(self) -> str:
        """``id.property`` as Dash writes it."""
        shown = self.component_id
        return f"{json.dumps(shown, separators=(',', ':')) if isinstance(shown, dict) else shown}.{self.prop}"

    @property
    def many(self) -> bool:
        """Whether the request carries a list of entries (``ALL`` / ``ALLSMALLER`` patterns)."""
        return isinstance(self.component_id, dict) and any(
            _wildcard(v) in ("ALL", "ALLSMALLER") for v in self.component_id.values()
        )

    def matches(self, entry_id: Json) -> bool:
        """Whether a concrete id sent by the renderer is this dependency's id (or fits its pattern)."""
        pattern = self.component_id
        if not isinstance(pattern, dict):
            return isinstance(entry_id, str) and entry_id == pattern
        if not isinstance(entry_id, dict) or set(entry_id) != set(pattern):
            return False
        for key, expected in pattern.items():
            value = entry_id[key]
            if _wildcard(expected) is not None:
                if not isinstance(value, str | int | float | bool):
                    return False
            elif value != expected:
                return False
        return True


def _wildcard(value: Json) -> str | None:
    if isinstance(value, list) and len(value) == 1 and value[0] in WILDCARDS:
        return str(value[0])
    return None


def dependency(spec: Mapping[str, Json]) -> Dependency:
    """A dependency from its ``to_dict()`` form (``{"id": ..., "property": ...}``)."""
    raw = str(spec["id"])
    component_id: str | dict[str, Json] = json.loads(raw) if raw.startswith("{") else raw
    return Dependency(component_id, str(spec["property"]).split("@", 1)[0])


@dataclass(frozen=True, slots=True)
class Typed:
    """The annotation of a callback argument: its validator and how to name it in a message."""

    adapter: TypeAdapter[Any]
    text: str


def typed(annotation: Any) -> Typed:
    """The strict validator of ``annotation`` (JSON values only ever reach callbacks)."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
    return Typed(TypeAdapter(annotation, config={"strict": True}), text)


@dataclass(frozen=True, slots=True)
class CallbackSpec:
    """What a request for one callback must carry, and the type of each argument."""

    outputs: tuple[Dependency, ...]
    multi_output: bool
    inputs: tuple[Dependency, ...]
    states: tuple[Dependency, ...]
    types: tuple[Typed | None, ...]
    """Per input then state: the annotation of the function's argument, None when it has none."""


def callback_spec(entry: Mapping[str, Any]) -> CallbackSpec:
    """The spec of one entry of ``app.callback_map``."""
    declared = entry["output"]
    outputs = declared if isinstance(declared, list | tuple) else [declared]
    inputs = tuple(dependency(i) for i in entry["inputs"])
    states = tuple(dependency(s) for s in entry["state"])
    return CallbackSpec(
        outputs=tuple(dependency(o.to_dict()) for o in outputs),
        multi_output=isinstance(declared, list | tuple),
        inputs=inputs,
        states=states,
        types=_argument_types(entry, len(inputs) + len(states)),
    )


def _argument_types(entry: Mapping[str, Any], count: int) -> tuple[Typed | None, ...]:
    """The annotation of each argument the callback function receives, in input-then-state order."""
    function: Callable[..., Any] | None = entry.get("callback")
    if function is None:
        return (None,) * count
    original = inspect.unwrap(function)
    try:
        hints = typing.get_type_hints(original)
    except (NameError, TypeError):  # annotations that do not resolve: nothing to check against
        return (None,) * count
    names: list[str | None] = [None] * count
    indices = entry.get("inputs_state_indices")
    if isinstance(indices, dict):  # inputs given by name: ``inputs={"name": Input(...)}``
        for name, index in indices.items():
            if isinstance(index, int) and index < count:
                names[index] = name
    else:
        positional = [
            p.name
            for p in inspect.signature(original).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names[: len(positional)] = positional[:count]
    return tuple(typed(hints[name]) if name is not None and name in hints else None for name in names)


def check_request(body: Json, specs: Callable[[str], CallbackSpec | None]) -> None:
    """Raise ``CallbackRefused`` unless ``body`` is a request for a callback ``specs`` knows, in its types."""
    if not isinstance(body, dict):
        raise CallbackRefused("the request body must be a JSON object")
    output = body.get("output")
    if not isinstance(output, str):
        raise CallbackRefused("'output' must be a string naming the callback's outputs")
    spec = specs(output)
    if spec is None:
        raise CallbackRefused(f"no callback has the outputs {output!r}")
    _check_outputs(body.get("outputs"), spec)
    values: list[Json] = []
    for group, declared in (("inputs", spec.inputs), ("state", spec.states)):
        entries = body.get(group, [])
        if not isinstance(entries, list) or len(entries) != len(declared):
            raise CallbackRefused(
                f"'{group}' must be a list of {len(declared)} entr{'y' if len(declared) == 1 else 'ies'} "
                f"({', '.join(d.name for d in declared) or 'none'})"
            )
        values.extend(_entry_value(entry, dep) for entry, dep in zip(entries, declared, strict=True))
    for value, expected, dep in zip(values, spec.types, (*spec.inputs, *spec.states), strict=True):
        if expected is None:
            continue
        try:
            expected.adapter.validate_python(value)
        except ValidationError:
            raise CallbackRefused(
                f"bad callback input {dep.name}: expected {expected.text}, got {_json_kind(value)}"
            ) from None
    _check_changed(body.get("changedPropIds", []), body.get("inputs", []))


def _check_outputs(outputs: Json, spec: CallbackSpec) -> None:
    sent = outputs if spec.multi_output else [outputs]
    if not isinstance(sent, list) or len(sent) != len(spec.outputs):
        raise CallbackRefused(f"'outputs' must describe the {len(spec.outputs)} output(s) of the callback")
    for item, dep in zip(sent, spec.outputs, strict=True):
        for one in item if dep.many and isinstance(item, list) else [item]:
            if not (isinstance(one, dict) and _same(one, dep)):
                raise CallbackRefused(f"'outputs' does not match the callback's output {dep.name}")


def _same(entry: dict[str, Json], dep: Dependency) -> bool:
    prop = entry.get("property")
    return isinstance(prop, str) and prop.split("@", 1)[0] == dep.prop and dep.matches(entry.get("id"))


def _entry_value(entry: Json, dep: Dependency) -> Json:
    """The value an input or state entry hands the function: a list of values for ``ALL``."""
    if dep.many:
        if not isinstance(entry, list):
            raise CallbackRefused(f"bad callback input {dep.name}: expected a list of matching components")
        return [_entry_value(item, Dependency(_concrete(item, dep), dep.prop)) for item in entry]
    if not (isinstance(entry, dict) and _same(entry, dep)):
        raise CallbackRefused(f"bad callback input: expected {dep.name} in this place")
    return entry.get("value")


def _concrete(item: Json, dep: Dependency) -> str | dict[str, Json]:
    """The id of one entry of a pattern's list, once checked against the pattern."""
    if not isinstance(item, dict) or not dep.matches(item.get("id")):
        raise CallbackRefused(f"bad callback input: an entry of {dep.name} has an id outside its pattern")
    component_id: dict[str, Json] = item["id"]
    return component_id


def _check_changed(changed: Json, inputs: list[Json]) -> None:
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise CallbackRefused("'changedPropIds' must be a list of 'id.property' strings")
    known = {
        f"{_id_text(item['id'])}.{str(item['property']).split('@', 1)[0]}"
        for entry in inputs
        for item in (entry if isinstance(entry, list) else [entry])
    }
    unknown = [c for c in changed if c not in known]
    if unknown:
        raise CallbackRefused(f"'changedPropIds' names {unknown[0]!r}: not an input of this callback")


def _id_text(component_id: Json) -> str:
    # As the renderer writes a dict id in changedPropIds: keys sorted, no spaces.
    if isinstance(component_id, dict):
        return json.dumps(component_id, sort_keys=True, separators=(",", ":"))
    return str(component_id)


def _json_kind(value: Json) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
