"""The state document.

A JSON document, versioned (``format_version``), identified by ``lineage`` (a UUID fixed when the
state is first created) and ``serial`` (incremented by every apply that changes it) — Terraform's
state file conventions. Each resource record holds the attributes the provider returned after the
last apply, the addresses it depended on (used to order its deletion once it leaves the stack),
where it was declared, and the ``schema_version`` of its type those attributes follow.

Two kinds of upgrade, as in Terraform/OpenTofu:

* the document's ``format_version``: an older document is upgraded as it is read, by one
  function per version (:data:`UPGRADES`); format 2 added ``schema_version`` to records;
* a record's ``schema_version``: a resource type that changes the shape of its attributes raises
  its ``schema_version`` and upgrades older records (``ResourceType.upgrade_state``, OpenTofu's
  ``UpgradeResourceState``) — done by :class:`tectum.state.manager.StateManager` when it reads
  state, since it needs the provider registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

FORMAT_VERSION = 2


class StateError(ValueError):
    """A state document is malformed; the message says which part."""


#: ``ResourceRecord.origin``: tectum made the object (a create, or a service it started)
CREATED = "created"
#: ``ResourceRecord.origin``: the object existed before tectum managed it (adopted, imported)
FOUND = "found"
ORIGINS = (CREATED, FOUND)
#: ``on_destroy`` values: delete the object, or only forget it (stop managing it)
ON_DESTROY = ("delete", "forget")
#: kinds of owed actions, strongest first (an owed restart covers an owed reload; a command's
#: ``run`` is owed to a command, never with the others)
OWED_KINDS = ("restart", "reload", "run")
#: the arguments that watch other resources, and what a change of one of them makes the
#: watcher do: a service restarts or reloads, a command runs (Puppet's subscribe/refreshonly)
WATCH_KINDS = {"restart_on": "restart", "reload_on": "reload", "run_on": "run"}


class ResourceRecord(NamedTuple):
    """One managed object in state (replaced, never changed in place).

    ``origin`` says who made the object: :data:`CREATED` (tectum created it) or :data:`FOUND`
    (it existed before tectum; adopted or imported). Removing the resource from the code, or
    ``destroy``, deletes only what tectum created and forgets what it found, unless
    ``on_destroy`` (the resource's setting when it was applied: ``"delete"`` or ``"forget"``)
    says otherwise. A record without ``origin`` (written before it existed) counts as created,
    which is what earlier versions did with it.

    ``owed`` lists ``(kind, cause)`` pairs: a restart or reload a watched resource's change made
    necessary that has not run yet (the run failed or was killed between the change and the
    restart; Ansible's lost-handler problem). It stays in state until the restart has run.

    ``schema_version`` is the version of the resource type's record shape that ``attributes``
    follow (0 for records written before format 2, and for types that never changed theirs).
    """

    address: str
    type: str
    attributes: dict[str, Any]
    dependencies: Sequence[str] = ()
    source: str | None = None
    origin: str = CREATED
    on_destroy: str | None = None
    owed: Sequence[tuple[str, str]] = ()
    schema_version: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.address, "type": self.type,
                               "attributes": self.attributes}
        if self.dependencies:
            out["dependencies"] = list(self.dependencies)
        if self.source:
            out["source"] = self.source
        if self.origin != CREATED:
            out["origin"] = self.origin
        if self.on_destroy is not None:
            out["on_destroy"] = self.on_destroy
        if self.owed:
            out["owed"] = [{"kind": k, "cause": c} for k, c in self.owed]
        if self.schema_version:
            out["schema_version"] = self.schema_version
        return out

    @property
    def deletes_on_destroy(self) -> bool:
        """Whether removing this resource deletes its object (else it is only forgotten)."""
        if self.on_destroy is not None:
            return self.on_destroy == "delete"
        return self.origin == CREATED

    @classmethod
    def from_json(cls, data: Any) -> ResourceRecord:
        """A record from a decoded resource entry (``to_json``'s shape; keys other than those
        are ignored). Raises :class:`StateError` naming the part that is wrong."""
        if not isinstance(data, dict):
            raise StateError("a resource entry is not an object")
        try:
            address, rtype, attrs = data["address"], data["type"], data["attributes"]
        except KeyError as exc:
            raise StateError(f"a resource entry has no {exc.args[0]!r}") from None
        if not isinstance(address, str) or not isinstance(rtype, str) \
                or not isinstance(attrs, dict):
            raise StateError(f"resource entry {address!r} has fields of the wrong type")
        deps = data.get("dependencies", [])
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise StateError(f"resource {address}: dependencies must be a list of addresses")
        source = data.get("source")
        origin = data.get("origin", CREATED)
        if origin not in ORIGINS:
            raise StateError(f"resource {address}: origin must be one of {', '.join(ORIGINS)}")
        on_destroy = data.get("on_destroy")
        if on_destroy is not None and on_destroy not in ON_DESTROY:
            raise StateError(f"resource {address}: on_destroy must be delete or forget")
        owed_raw = data.get("owed", [])
        if not isinstance(owed_raw, list) or not all(
                isinstance(o, dict) and o.get("kind") in OWED_KINDS
                and isinstance(o.get("cause"), str) for o in owed_raw):
            raise StateError(f"resource {address}: owed must be a list of {{kind, cause}}")
        owed = tuple((o["kind"], o["cause"]) for o in owed_raw)
        schema_version = data.get("schema_version", 0)
        if not isinstance(schema_version, int) or isinstance(schema_version, bool) \
                or schema_version < 0:
            raise StateError(f"resource {address}: schema_version must be a non-negative "
                             "integer")
        return cls(address, rtype, attrs, list(deps), source if isinstance(source, str) else None,
                   origin, on_destroy, owed, schema_version)


class State:
    """The state document in memory: ``resources`` by address, ``outputs`` by name."""

    __slots__ = ("lineage", "serial", "resources", "outputs", "tectum_version")

    def __init__(
        self,
        lineage: str,
        serial: int = 0,
        resources: dict[str, ResourceRecord] | None = None,
        outputs: dict[str, dict[str, Any]] | None = None,
        tectum_version: str = "",
    ) -> None:
        self.lineage = lineage
        self.serial = serial
        self.resources: dict[str, ResourceRecord] = resources if resources is not None else {}
        self.outputs: dict[str, dict[str, Any]] = outputs if outputs is not None else {}
        self.tectum_version = tectum_version

    def __repr__(self) -> str:
        return f"<State lineage={self.lineage} serial={self.serial} " \
               f"resources={len(self.resources)}>"

    @classmethod
    def new(cls) -> State:
        import uuid

        return cls(lineage=str(uuid.uuid4()))

    def copy(self) -> State:
        return State(self.lineage, self.serial, dict(self.resources),
                     {k: dict(v) for k, v in self.outputs.items()}, self.tectum_version)

    def to_json(self) -> dict[str, Any]:
        from tectum import __version__

        return {
            "format_version": FORMAT_VERSION,
            "tectum_version": __version__,
            "serial": self.serial,
            "lineage": self.lineage,
            "resources": [r.to_json() for r in sorted(self.resources.values(),
                                                      key=lambda r: r.address)],
            "outputs": self.outputs,
        }

    @classmethod
    def from_json(cls, data: Any) -> State:
        """Build a state from a decoded document (any supported format version).

        Raises :class:`StateError` for a document that is not a tectum state."""
        if not isinstance(data, dict):
            raise StateError("the document is not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise StateError("the document has no format_version: it is not a tectum state")
        if version > FORMAT_VERSION:
            raise StateError(
                f"format_version {version} is newer than this tectum understands "
                f"({FORMAT_VERSION}); upgrade tectum"
            )
        while version < FORMAT_VERSION:
            upgrade = UPGRADES.get(version)
            if upgrade is None:
                raise StateError(f"format_version {version} is not supported")
            data = upgrade(data)
            version = data["format_version"]
        serial, lineage = data.get("serial"), data.get("lineage")
        if not isinstance(serial, int) or isinstance(serial, bool) \
                or not 0 <= serial < 2**63 - 1:  # (what the state databases can store)
            raise StateError("serial must be a non-negative integer below 2**63 - 1")
        if not isinstance(lineage, str) or not lineage:
            raise StateError("lineage must be a non-empty string")
        resources_raw = data.get("resources", [])
        if not isinstance(resources_raw, list):
            raise StateError("resources must be a list")
        resources: dict[str, ResourceRecord] = {}
        for entry in resources_raw:
            rec = ResourceRecord.from_json(entry)
            if rec.address in resources:
                raise StateError(f"resource {rec.address} appears twice")
            resources[rec.address] = rec
        outputs = data.get("outputs", {})
        if not isinstance(outputs, dict) or not all(isinstance(v, dict) and "value" in v
                                                    for v in outputs.values()):
            raise StateError("outputs must be an object of objects")
        return cls(lineage, serial, resources, dict(outputs), str(data.get("tectum_version", "")))


def _upgrade_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """Format 2 added the optional ``schema_version`` of each resource record (absent: 0). A
    version-1 document has none, and every one of its records is at schema version 0: only its
    ``format_version`` changes."""
    return {**data, "format_version": 2}


#: format_version N → function that turns a version-N document into version N+1
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1_to_2}
