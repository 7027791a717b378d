"""A Dash page driven without a browser, from the app's own callback map: what the renderer sends.

``DashPage`` reads ``/_dash-layout`` and ``/_dash-dependencies`` as the browser does after
loading a page, keeps the components' properties, and fires callbacks by the renderer's rules:

- on load, and whenever a callback puts components in the page: every server callback whose
  inputs are all in the page and that does not ``prevent_initial_call``;
- whenever a property changes (a callback's answer, a click, the interval's tick, the location
  set by ``dcc.Location`` on mount): every callback that has it as an input, with it in
  ``changedPropIds``;
- a callback waits while another pending one has one of its inputs among its outputs, so it
  fires once with both changes (the renderer does the same).

Nothing here knows a page's ids: a new page or a renamed component needs no change, and a
request the app would refuse fails the session at once. Clientside callbacks run in the browser
and are not sent. Unlike the browser, a callback whose inputs appear in the page through another
callback is not fired when it says ``prevent_initial_call`` (the browser fires it, and the app
answers 204, no update).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dashboards.callback_check import Dependency, dependency

Json = Any
Key = str
"""A component's id as Dash writes it: the string, or a dict id as compact JSON with sorted keys."""

LAYOUT = "/_dash-layout"
DEPENDENCIES = "/_dash-dependencies"
CALLBACK = "/_dash-update-component"
MAX_ROUNDS = 50
"""Most rounds of callbacks one user action may cause; more means a loop between callbacks."""


def key_of(component_id: Json) -> Key:
    """The key of a component id (``stringify_id`` in Dash)."""
    if isinstance(component_id, dict):
        return json.dumps(component_id, sort_keys=True, separators=(",", ":"))
    return str(component_id)


@dataclass(frozen=True, slots=True, eq=False)
class Callback:
    """One server callback of the app, as ``/_dash-dependencies`` describes it (one object each)."""

    output: str
    outputs: tuple[Dependency, ...]
    inputs: tuple[Dependency, ...]
    state: tuple[Dependency, ...]
    prevent_initial_call: bool

    @property
    def name(self) -> str:
        """A short name for the statistics: the first output."""
        first = self.outputs[0]
        shown = first.component_id
        return f"{shown.get('choice', 'pattern') if isinstance(shown, dict) else shown}.{first.prop}"


def callbacks_of(dependencies: list[dict[str, Json]]) -> list[Callback]:
    """The server callbacks (not the clientside ones) of a ``/_dash-dependencies`` answer."""
    found = []
    for spec in dependencies:
        if spec.get("clientside_function"):
            continue
        output = str(spec["output"])
        parts = output[2:-2].split("...") if output.startswith("..") else [output]
        outputs = []
        for part in parts:
            component, _, prop = part.rpartition(".")
            outputs.append(dependency({"id": component, "property": prop}))
        found.append(
            Callback(
                output=output,
                outputs=tuple(outputs),
                inputs=tuple(dependency(i) for i in spec["inputs"]),
                state=tuple(dependency(s) for s in spec["state"]),
                prevent_initial_call=bool(spec.get("prevent_initial_call")),
            )
        )
    return found


@dataclass(slots=True)
class Component:
    """A component of the page that has an id: its type and current properties."""

    component_id: Json
    type: str
    props: dict[str, Json]
    owner: tuple[Key, str] | None
    """The nearest component with an id that holds this one, and in which of its properties."""


class CallbackFailed(RuntimeError):
    """The app did not answer a callback with 200."""


Post = Callable[[Callback, dict[str, Json]], Json]
"""Sends a callback request; returns the decoded answer, raises ``CallbackFailed`` on a non-200."""


@dataclass
class DashPage:
    """The state of one page in a browser tab, and the callbacks it fires."""

    callbacks: list[Callback]
    post: Post
    components: dict[Key, Component] = field(default_factory=dict)
    fired: int = 0

    # -- the page's components ----------------------------------------------------------------

    def _add(self, node: Json, owner: tuple[Key, str] | None) -> list[Key]:
        """Register the components with an id in ``node``; their keys."""
        added: list[Key] = []
        for child, child_owner in _walk(node, owner):
            key = key_of(child["props"]["id"])
            self.components[key] = Component(
                child["props"]["id"], str(child.get("type", "")), dict(child["props"]), child_owner
            )
            added.append(key)
        return added

    def _remove_under(self, key: Key, prop: str) -> None:
        held = [k for k, c in self.components.items() if c.owner == (key, prop)]
        for k in held:
            for inner in list(self.components[k].props):
                self._remove_under(k, inner)
            self.components.pop(k, None)

    def _set(self, key: Key, props: dict[str, Json]) -> tuple[list[tuple[Key, str]], list[Key]]:
        """Apply new properties to a component; the changed (key, prop) and the components added."""
        component = self.components.get(key)
        if component is None:
            return [], []
        added: list[Key] = []
        for prop, value in props.items():
            self._remove_under(key, prop)
            component.props[prop] = value
            added += self._add(value, (key, prop))
        return [(key, prop) for prop in props], added

    def find(self, predicate: Callable[[Component], bool]) -> list[Key]:
        """The keys of the components for which ``predicate`` holds, in page order."""
        return [k for k, c in self.components.items() if predicate(c)]

    # -- requests -------------------------------------------------------------------------------

    def _matching(self, dep: Dependency) -> list[Key]:
        return [k for k, c in self.components.items() if dep.matches(c.component_id)]

    def _entries(self, deps: tuple[Dependency, ...], with_values: bool) -> list[Json]:
        entries: list[Json] = []
        for dep in deps:
            items = []
            for key in self._matching(dep):
                component = self.components[key]
                item: dict[str, Json] = {"id": component.component_id, "property": dep.prop}
                if with_values:
                    item["value"] = component.props.get(dep.prop)
                items.append(item)
            entries.append(items if dep.many else (items[0] if items else None))
        return entries

    def request(self, callback: Callback, changed: list[str]) -> dict[str, Json]:
        """The body the renderer sends for ``callback`` with the page as it is."""
        outputs = self._entries(callback.outputs, with_values=False)
        return {
            "output": callback.output,
            "outputs": outputs if callback.output.startswith("..") else outputs[0],
            "inputs": self._entries(callback.inputs, with_values=True),
            "changedPropIds": changed,
            "state": self._entries(callback.state, with_values=True),
        }

    # -- the renderer's rules -------------------------------------------------------------------

    def _present(self, callback: Callback) -> bool:
        """Whether the callback's inputs are in the page (a pattern may match none) and an output."""
        inputs = all(dep.many or self._matching(dep) for dep in callback.inputs)
        return inputs and any(self._matching(dep) for dep in callback.outputs)

    def _initial(self, added: list[Key]) -> dict[Callback, set[str]]:
        new = set(added)
        return {
            cb: set()
            for cb in self.callbacks
            if not cb.prevent_initial_call
            and any(k in new for dep in cb.inputs for k in self._matching(dep))
            and self._present(cb)
        }

    def _triggered(self, changed: list[tuple[Key, str]]) -> dict[Callback, set[str]]:
        found: dict[Callback, set[str]] = {}
        for key, prop in changed:
            component = self.components.get(key)
            if component is None:
                continue
            for cb in self.callbacks:
                inputs = any(dep.prop == prop and dep.matches(component.component_id) for dep in cb.inputs)
                if inputs and self._present(cb):
                    found.setdefault(cb, set()).add(f"{key}.{prop}")
        return found

    def _blocked(self, callback: Callback, pending: dict[Callback, set[str]]) -> bool:
        """Whether another pending callback will still change one of this one's inputs."""
        for other in pending:
            if other is callback:
                continue
            for out in other.outputs:
                for key in self._matching(out):
                    component_id = self.components[key].component_id
                    if any(dep.prop == out.prop and dep.matches(component_id) for dep in callback.inputs):
                        return True
        return False

    def run(self, pending: dict[Callback, set[str]]) -> None:
        """Fire the pending callbacks and whatever their answers trigger, until the page is still."""
        for _ in range(MAX_ROUNDS):
            if not pending:
                return
            ready = [cb for cb in pending if not self._blocked(cb, pending)] or list(pending)
            for callback in ready:
                changed = sorted(pending.pop(callback))
                answer = self.post(callback, self.request(callback, changed))
                self.fired += 1
                for cb, props in self._apply(answer).items():
                    pending.setdefault(cb, set()).update(props)
        raise CallbackFailed(f"the page's callbacks did not settle after {MAX_ROUNDS} rounds")

    def _apply(self, answer: Json) -> dict[Callback, set[str]]:
        """Apply a callback's answer; the callbacks it triggers."""
        changed: list[tuple[Key, str]] = []
        added: list[Key] = []
        if isinstance(answer, dict):
            for part in ("response", "sideUpdate"):
                for raw_key, props in (answer.get(part) or {}).items():
                    key = key_of(json.loads(raw_key)) if raw_key.startswith("{") else raw_key
                    done, new = self._set(key, props)
                    changed += done
                    added += new
        triggered = self._triggered(changed)
        for cb, props in self._initial(added).items():
            triggered.setdefault(cb, set()).update(props)
        return triggered

    # -- what the user and the browser do -------------------------------------------------------

    def load(self, layout: Json, pathname: str, search: str = "") -> None:
        """The page arrives: its layout, each ``dcc.Location`` set to the URL, initial callbacks."""
        self.components.clear()
        added = self._add(layout, None)
        pending = self._initial(added)
        located = [k for k in added if self.components[k].type == "Location"]
        changed: list[tuple[Key, str]] = []
        for key in located:
            done, _ = self._set(key, {"pathname": pathname, "search": search, "hash": ""})
            changed += done
        for cb, props in self._triggered(changed).items():
            pending.setdefault(cb, set()).update(props)
        self.run(pending)

    def set(self, key: Key, **props: Json) -> None:
        """A property changes in the browser (a click, a tick); the callbacks it triggers."""
        changed, added = self._set(key, props)
        pending = self._triggered(changed)
        for cb, fired in self._initial(added).items():
            pending.setdefault(cb, set()).update(fired)
        self.run(pending)

    def click(self, key: Key) -> None:
        """A click on a button: its ``n_clicks`` goes up by one."""
        self.set(key, n_clicks=int(self.components[key].props.get("n_clicks") or 0) + 1)

    def tick(self) -> None:
        """Every ``dcc.Interval`` of the page fires once (the page's refresh)."""
        for key in self.find(lambda c: c.type == "Interval"):
            self.set(key, n_intervals=int(self.components[key].props.get("n_intervals") or 0) + 1)


def _walk(
    node: Json, owner: tuple[Key, str] | None
) -> Iterator[tuple[dict[str, Json], tuple[Key, str] | None]]:
    """The components with an id in a layout tree, each with its owner."""
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, owner)
        return
    if not (isinstance(node, dict) and isinstance(node.get("props"), dict) and "type" in node):
        return
    props: dict[str, Json] = node["props"]
    if "id" in props:
        yield node, owner
    for prop, value in props.items():
        yield from _walk(value, (key_of(props["id"]), prop) if "id" in props else owner)
