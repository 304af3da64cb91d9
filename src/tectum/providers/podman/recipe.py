"""A role baked into an image: the *recipe* of a ``podman_image``.

``Image(..., role=fn)`` calls ``fn(host, **role_args)`` while the stack is evaluated, with a
pseudo-host ``image:LABEL`` as the host: the host resources it declares (files, packages, users,
commands...) do not join the stack's graph; they become the image's ``recipe`` attribute, a list
of items ``{"name": "TYPE.LABEL", "type", "attrs", "depends_on", "base_dir", "source"}``. A
reference from one recipe resource to another (``conf.path``) is kept as a *recipe token*
``${recipe:TYPE.LABEL#ATTR}``, resolved when the recipe is prepared; a reference to a resource
outside the recipe stays an ordinary reference (the image then depends on that resource).

:func:`prepare_recipe` resolves and prepares every item in dependency order (templates rendered,
defaults filled), so the recipe is the role's *resolved desired state*; :func:`recipe_hash` hashes
it (the image's ``role_hash``). :func:`bake` applies it to a build container through a
:class:`~tectum.providers.podman.connector.PodmanConnector`: every item is read in one round trip,
planned, and applied in dependency order with the host types' own ``read``/``plan``/``apply``
(nothing runs that the role did not ask for). A baked image holds no running process: a
``Service``'s ``running`` is not applied (the container's command runs the service);
``enabled`` is.
"""

from __future__ import annotations

import graphlib
import hashlib
import json
import re
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic
from tectum.values import TOKEN_RE, UNKNOWN, is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import Connector

#: a reference between two resources of one recipe
RECIPE_TOKEN_RE = re.compile(r"\$\{recipe:([a-z][a-z0-9_]*\.[A-Za-z_][A-Za-z0-9_-]*)#"
                             r"([A-Za-z_][A-Za-z0-9_.-]*)\}")
#: the pseudo-host an image's role declares its resources on
IMAGE_HOST_PREFIX = "image:"


def _rewrite(value: Any, prefix: str) -> Any:
    """Tokens naming resources on the image's pseudo-host become recipe tokens."""
    if isinstance(value, str):
        if "${tectum:" not in value:
            return value

        def swap(m: re.Match[str]) -> str:
            address = m.group(1)
            if address.startswith(prefix):
                return f"${{recipe:{address[len(prefix):]}#{m.group(2)}}}"
            return m.group(0)
        return TOKEN_RE.sub(swap, value)
    if isinstance(value, list | tuple):
        return [_rewrite(v, prefix) for v in value]
    if isinstance(value, dict):
        return {k: _rewrite(v, prefix) for k, v in value.items()}
    return value


def capture(role: Any, label: str, role_args: Any = None) -> list[dict[str, Any]]:
    """Run ``role(host, **role_args)`` on the pseudo-host ``image:LABEL`` and return what it
    declared as a recipe (see the module docstring). Problems (a non-host resource, a fact
    decided on, an exception in the role) are diagnostics of the stack being evaluated, at the
    role's line; the recipe is then empty."""
    from tectum.config.declaration import Host, Stack, caller_location, current_stack
    from tectum.config.facts import FactsNeeded, FactsUnknown
    from tectum.providers.registry import registry

    outer = current_stack(f"Image({label!r}, role=...)")
    where = caller_location(3)
    if not callable(role):
        outer.diagnostics.append(Diagnostic.error(
            "Invalid attribute value", f"role must be a role function (host, **args), not "
            f"{role!r}.", address=f"podman_image.{label}", source=where))
        return []
    if role_args is not None and not isinstance(role_args, Mapping):
        outer.diagnostics.append(Diagnostic.error(
            "Invalid attribute value", "role_args must be a dict of keyword arguments.",
            address=f"podman_image.{label}", source=where))
        return []
    host_name = IMAGE_HOST_PREFIX + label
    sub = Stack(outer.base_dir, inputs=outer.inputs, inventory=outer.inventory, facts=None)
    host = Host(host_name, (), dict(role_args or {}), "")
    try:
        with sub, host:
            role(host, **dict(role_args or {}))
    except (FactsNeeded, FactsUnknown) as exc:
        outer.diagnostics.append(Diagnostic.error(
            "Image role decides on a fact",
            f"The role baked into podman_image.{label} decides on the fact "
            f"{getattr(exc, 'name', '')} of its host: an image has no facts until it is built. "
            "Pass what the role needs as role_args.", source=where))
        return []
    outer.diagnostics.extend(sub.diagnostics)
    outer.secrets.update({k: v for k, v in sub.secrets.items() if k not in outer.secrets})
    outer.sensitive_vars.update(sub.sensitive_vars)
    prefix = f'host["{host_name}"].'
    items: list[dict[str, Any]] = []
    for decl in sub.resources.values():
        provider = registry.provider_of(decl.type)
        if provider != "host":
            outer.diagnostics.append(Diagnostic.error(
                "Not a host resource",
                f"The role baked into podman_image.{label} declares {decl.type}."
                f"{decl.address.name}: an image role declares host resources only (files, "
                "packages, users, commands...).", source=decl.source))
            continue
        local = f"{decl.type}.{decl.address.name}"
        deps = [d[len(prefix):] for d in decl.depends_on if d.startswith(prefix)]
        deps += [d[len(prefix):] for ds in decl.watches.values() for d in ds
                 if d.startswith(prefix)]
        items.append({"name": local, "type": decl.type, "attrs": _rewrite(decl.attrs, prefix),
                      "depends_on": sorted(set(deps)), "base_dir": decl.base_dir,
                      "source": str(decl.source)})
    return items


def _local_refs(value: Any) -> set[str]:
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, str):
            found.update(m.group(1) for m in RECIPE_TOKEN_RE.finditer(v))
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
    walk(value)
    return found


def _resolve_local(value: Any, done: Mapping[str, dict[str, Any]]) -> Any:
    if isinstance(value, str):
        if "${recipe:" not in value:
            return value
        whole = RECIPE_TOKEN_RE.fullmatch(value)
        if whole is not None:
            got = done.get(whole.group(1), {}).get(whole.group(2))
            return UNKNOWN if got is None else got

        def swap(m: re.Match[str]) -> str:
            got = done.get(m.group(1), {}).get(m.group(2))
            if got is None:
                raise ValueError(f"recipe reference {m.group(1)}.{m.group(2)} has no value")
            return str(got).lower() if isinstance(got, bool) else str(got)
        return RECIPE_TOKEN_RE.sub(swap, value)
    if isinstance(value, list | tuple):
        return [_resolve_local(v, done) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_local(v, done) for k, v in value.items()}
    return value


def recipe_graph(items: list[dict[str, Any]]) -> dict[str, set[str]]:
    """What each item (by name) depends on: ``depends_on``, recipe references and the host
    types' implicit dependencies (a file under a directory the recipe makes, an owner it
    adds). Raises :class:`ValueError` for a reference to no item."""
    from tectum.providers.registry import registry

    by_name = {i["name"]: i for i in items}
    offered: dict[Hashable, str] = {}
    for item in items:
        rt = registry.get(item["type"])
        if rt is not None:
            for key in rt.implicit_keys(item["attrs"]):
                offered.setdefault(key, item["name"])
    graph: dict[str, set[str]] = {}
    for item in items:
        deps = set(item.get("depends_on", ())) | _local_refs(item["attrs"])
        for dep in deps:
            if dep not in by_name:
                raise ValueError(f"{item['name']} of the image's role refers to {dep}, which "
                                 "the role does not declare")
        rt = registry.get(item["type"])
        if rt is not None:
            for group in rt.implicit_needs(item["attrs"]):
                found = next((offered[k] for k in group if k in offered), None)
                if found is not None and found != item["name"]:
                    deps.add(found)
        graph[item["name"]] = deps
    return graph


def recipe_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items in dependency order (:func:`recipe_graph`). Raises :class:`ValueError` for
    a reference to no item or a cycle."""
    by_name = {i["name"]: i for i in items}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name, deps in recipe_graph(items).items():
        sorter.add(name, *sorted(deps))
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise ValueError(f"the image's role has a dependency cycle: {exc.args[1]}") from None
    return [by_name[n] for n in order if n in by_name]


def prepare_recipe(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every item resolved (recipe references) and prepared by its type, in dependency order:
    the role's resolved desired state. Raises :class:`ValueError` for a bad value."""
    from tectum.providers.registry import registry

    done: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for item in recipe_order(items):
        rt = registry.get(item["type"])
        if rt is None:
            raise ValueError(f"no provider offers resource type {item['type']!r}")
        attrs = _resolve_local(item["attrs"], done)
        try:
            prepared = rt.prepare(attrs, item.get("base_dir") or ".")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{item['name']} of the image's role: {exc}") from None
        done[item["name"]] = prepared
        out.append({**item, "attrs": prepared})
    return out


def recipe_hash(items: list[dict[str, Any]]) -> str | None:
    """SHA-256 of the prepared recipe's desired state (names, types, attributes, order), or
    None while a value is unknown. Where a template sits on disk does not count."""
    body = [{"name": i["name"], "type": i["type"], "attrs": i["attrs"],
             "depends_on": i.get("depends_on", [])} for i in items]
    if not is_known(body):
        return None
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def bake(conn: Connector, items: list[dict[str, Any]],
         progress: Callable[[str], None] | None = None) -> list[str]:
    """Apply the prepared recipe ``items`` inside a build container reached by ``conn``: one
    read round trip for every item, then every item planned, and applied level by level in
    dependency order, one batch per type that batches (files: one write for all); parts that
    share no dependency are baked at the same time (:func:`_parts`). Returns what
    was done (``"create file.conf"``...). Raises
    :class:`~tectum.providers.base.ApplyError` naming the item that failed."""
    from tectum.plans.plan import Action, ResourceChange
    from tectum.providers.base import ApplyError, ReadItem
    from tectum.providers.host.base import HostType
    from tectum.providers.host.connector import merge_facts
    from tectum.providers.registry import registry

    types = {i["type"]: registry.get(i["type"]) for i in items}
    wants = [_bakeable(i) for i in items]
    requests = []
    for name, rt in types.items():
        if isinstance(rt, HostType):
            mine = [w for i, w in zip(items, wants, strict=True) if i["type"] == name]
            requests.append(rt.facts(mine))
    conn.prefetch(merge_facts(requests))
    # read every item as the engine does: one batch per type, answered from the prefetch
    observed: list[dict[str, Any] | None] = [None] * len(items)
    try:
        for name, rt in types.items():
            assert rt is not None
            idx = [n for n, i in enumerate(items) if i["type"] == name]
            try:
                found = rt.read(conn, [ReadItem(wants[n], None) for n in idx])
            except Exception as exc:  # noqa: BLE001 - said once, naming the type
                raise ApplyError(f"baking: reading the {name} objects in the build container "
                                 f"failed: {exc}") from None
            for n, obs in zip(idx, found, strict=True):
                observed[n] = obs
    finally:
        conn.forget_facts()
    # level by level (an item after everything it depends on), and within a level one batch
    # per type that batches (100 files: one write, as the engine's applier does)
    graph = recipe_graph(items)
    level: dict[str, int] = {}
    for item in items:  # (items are in dependency order)
        level[item["name"]] = 1 + max((level.get(d, 0) for d in graph[item["name"]]),
                                      default=-1)
    planned: list[tuple[int, dict[str, Any], ResourceChange]] = []
    for item, want, obs in zip(items, wants, observed, strict=True):
        rt = types[item["type"]]
        assert rt is not None
        try:
            action, changes = rt.plan(want, obs, None)
        except Exception as exc:  # noqa: BLE001 - said once, naming the item
            raise ApplyError(f"baking {item['name']} ({item.get('source', '')}) failed: "
                             f"{type(exc).__name__}: {exc}") from None
        if action is Action.NOOP:
            continue
        planned.append((level[item["name"]], item, ResourceChange(
            f"recipe.{item['name']}", item["type"], action,
            rt.stored(obs) if obs else None, want, changes)))
    # parts of the recipe that share nothing (a package; a directory and its files) are baked
    # at the same time, each on its own thread; whatever may touch the package system is one
    # part (two apt-get at once would fight over apt's lock)
    part = _parts(items, graph)
    by_part: dict[str, list[tuple[int, dict[str, Any], ResourceChange]]] = {}
    for entry in planned:
        by_part.setdefault(part[entry[1]["name"]], []).append(entry)

    def run_part(entries: list[tuple[int, dict[str, Any], ResourceChange]]) -> list[str]:
        done: list[str] = []
        for depth in sorted({d for d, _, _ in entries}):
            groups: dict[str, list[tuple[dict[str, Any], ResourceChange]]] = {}
            for d, item, change in entries:
                if d == depth:
                    groups.setdefault(item["type"], []).append((item, change))
            for type_name, group in groups.items():
                done += _apply_group(conn, types[type_name], group, progress)
        return done

    parts = list(by_part.values())
    if len(parts) <= 1:
        return run_part(parts[0]) if parts else []
    out: list[str] = []
    with ThreadPoolExecutor(max_workers=min(4, len(parts)),
                            thread_name_prefix="tectum-bake") as pool:
        futures = [pool.submit(run_part, entries) for entries in parts]
        failure: BaseException | None = None
        for future in futures:
            try:
                out += future.result()
            except BaseException as exc:  # noqa: BLE001 - the first failure is raised
                failure = failure or exc
        if failure is not None:
            raise failure
    return out


#: types whose apply may run the package system: baked one after the other, in one part
_SERIAL_TYPES = frozenset({"package", "apt_repository", "command", "pip_packages"})


def _parts(items: list[dict[str, Any]], graph: dict[str, set[str]]) -> dict[str, str]:
    """Each item's part: items joined by a dependency, or both of :data:`_SERIAL_TYPES`,
    are in one part (union-find); returns item name -> the part's representative."""
    parent = {i["name"]: i["name"] for i in items}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    serial = [i["name"] for i in items if i["type"] in _SERIAL_TYPES]
    for a, b in zip(serial, serial[1:], strict=False):
        join(a, b)
    for name, deps in graph.items():
        for dep in deps:
            if dep in parent:
                join(name, dep)
    return {name: find(name) for name in parent}


def _apply_group(conn: Connector, rt: Any, group: list[tuple[dict[str, Any], Any]],
                 progress: Callable[[str], None] | None) -> list[str]:
    """Apply one type's changes of one level (one batch where the type batches); raises
    :class:`~tectum.providers.base.ApplyError` naming the first item that failed."""
    from tectum.providers.base import ApplyError

    if progress:
        for item, change in group:
            progress(f"{change.action.value} {item['name']}")
    if rt.batches and len(group) > 1:
        results = rt.apply_batch(conn, [c for _, c in group])
    else:
        results = []
        for _, change in group:
            try:
                results.append(rt.apply(conn, change))
            except Exception as exc:  # noqa: BLE001 - reported below, per item
                results.append(exc)
    done = []
    for (item, change), result in zip(group, results, strict=True):
        if isinstance(result, Exception):
            label = f"{item['name']} ({item.get('source', '')})"
            detail = str(result) if isinstance(result, ApplyError) \
                else f"{type(result).__name__}: {result}"
            raise ApplyError(f"baking {label} failed: {detail}")
        done.append(f"{change.action.value} {item['name']}")
    return done


def _bakeable(item: dict[str, Any]) -> dict[str, Any]:
    """What baking applies of an item: a service is enabled, never started (an image holds
    no running process)."""
    attrs = dict(item["attrs"])
    if item["type"] == "service":
        attrs["running"] = None
    return attrs
