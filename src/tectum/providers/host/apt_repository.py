"""``apt_repository``: an apt source in deb822 form, ``/etc/apt/sources.list.d/NAME.sources``.

The fields are Ansible's ``deb822_repository`` (``name``, ``types``, ``uris``, ``suites``,
``components``, ``architectures``, ``signed_by``, ``enabled``), each written as the deb822 field
of the same name (``Types``, ``URIs``, ``Suites``, ``Components``, ``Architectures``,
``Signed-By``, ``Enabled``; ``sources.list(5)``); ``options`` holds any other deb822 field
(``{"Check-Valid-Until": "no"}``). ``signed_by`` is the path of a keyring file (``.asc``
armored or ``.gpg`` binary), typically a ``File`` the same stack manages: pass ``key.path``, so
the key is written first. The file must be readable by apt's ``_apt`` user.

Shapes (attribute dicts):

* desired: ``{"name": "nginx", "types": ["deb"], "uris": ["https://apt.example.org/debian"],
  "suites": ["bookworm"], "components": ["main"], "architectures": ["amd64"] | absent,
  "signed_by": "/etc/apt/keyrings/nginx.asc" | absent, "enabled": True, "options": {},
  "stanzas": 1}`` — list fields also take one string of space-separated words.
* observed (:meth:`AptRepositoryType.read_objects`): the same keys as parsed from the file (a
  field the file lacks is left out; ``options`` holds its other fields, ``stanzas`` how many
  stanzas it has), or None when there is no file. Comments and layout are not compared: apt
  ignores them too.
* stored: the observed keys.

Reads are batched: every ``.sources`` file of a host comes in the prefetch round trip (paths
with content). A write replaces the file atomically (mode and owner kept from the file it
replaces, else 0644 root), then runs **one** ``apt-get update`` for every repository written in
the batch, so packages from it can be installed in the same apply: a ``package`` that depends on
the repository (``depends_on=[repo]``, or a reference) is installed after it. When that
``apt-get update`` fails (an unreachable URI, a bad signature), the files written are put back
as they were — removed, or their old text restored — and the resource fails with apt's message
(as Ansible's ``apt_repository`` reverts its sources). Deleting a repository tectum created
removes its file and runs ``apt-get update``, so the package lists drop it too. Fields the
configuration leaves unset (``architectures``, ``signed_by``, ``components``) are kept from the
file a write replaces, as a ``file``'s mode is. The plan shows the refresh as an ``apt cache``
change.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey
from tectum.providers.host.apt import CACHE_CHANGE, REFRESH, apt_update
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import ConnectorError, FactRequest
from tectum.providers.host.files import normal_path
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import Connector

#: where apt reads deb822 sources from (``sources.list(5)``)
SOURCES_DIR = "/etc/apt/sources.list.d"

# apt ignores files in sources.list.d whose names hold anything but these characters
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_WORD_RE = re.compile(r"[^\s#]\S*")
_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")
_ARCH_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_FIELD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")

#: attribute → deb822 field, in the order they are written
FIELDS = {
    "types": "Types",
    "uris": "URIs",
    "suites": "Suites",
    "components": "Components",
    "architectures": "Architectures",
    "signed_by": "Signed-By",
    "enabled": "Enabled",
}
_LISTS = ("types", "uris", "suites", "components", "architectures")
_BY_FIELD = {field.lower(): attr for attr, field in FIELDS.items()}
#: attributes a write keeps from the file it replaces when the configuration leaves them unset
_KEPT = ("components", "architectures", "signed_by")
# apt's StringToBool
_TRUE = frozenset({"yes", "true", "with", "on", "enable", "1"})
_FALSE = frozenset({"no", "false", "without", "off", "disable", "0"})


def sources_path(name: str) -> str:
    """``/etc/apt/sources.list.d/NAME.sources``."""
    return f"{SOURCES_DIR}/{name}.sources"


def _valid_name(value: Any) -> str | None:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        return ("must be a file name of letters, digits, '_', '-' and '.' (apt ignores files "
                "in sources.list.d named otherwise), starting with a letter, digit or '_', at "
                "most 200 characters; tectum adds \".sources\"")
    if value.endswith((".sources", ".list")):
        stem = value.rsplit(".", 1)[0]
        return f"must not end in .sources or .list: tectum adds \".sources\"; write {stem!r}"
    return None


def _words(value: Any) -> list[Any] | None:
    """A list field's words: a list as given, a string split at whitespace."""
    if isinstance(value, str):
        if not is_known(value):
            return [value]
        return value.split()
    if isinstance(value, list):
        return value
    return None


def _list_validator(what: str, pattern: re.Pattern[str], example: str,
                    choices: tuple[str, ...] = ()) -> Any:
    def check(value: Any) -> str | None:
        words = _words(value)
        if not words:
            return f"must name at least one {what}, e.g. {example}"
        for word in words:
            if isinstance(word, str) and not is_known(word):
                continue  # a reference: checked once resolved
            if not isinstance(word, str) or not pattern.fullmatch(word) \
                    or (choices and word not in choices):
                return (f"{word!r} is not a {what}: expected words such as {example} (a list of "
                        "strings, or one string of space-separated words)")
        return None
    return check


def _valid_signed_by(value: Any) -> str | None:
    if not isinstance(value, str) or not is_known(value):
        return None
    if not value.startswith("/") or any(c.isspace() for c in value):
        return ("must be the absolute path of a keyring file (.asc or .gpg), e.g. "
                "\"/etc/apt/keyrings/example.asc\": put the key in a File resource and pass its "
                "path (key fingerprints and inline keys are not supported)")
    if normal_path(value) != value:
        return f"must be a path in its normal form: write {normal_path(value)!r}"
    return None


def _valid_options(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for key, text in value.items():
        if not isinstance(key, str) or not _FIELD_RE.fullmatch(key):
            return f"{key!r} is not a deb822 field name (letters, digits and '-')"
        if key.lower() in _BY_FIELD:
            return (f"{key!r} is set with the attribute {_BY_FIELD[key.lower()]!r}, not in "
                    "options")
        if not isinstance(text, str) or not text.strip() or "\n" in text:
            return f"the value of {key!r} must be a non-empty string on one line"
    return None


def parse_sources(text: str) -> list[dict[str, str]]:
    """The stanzas of a deb822 file (``sources.list(5)``): field → value (continuation lines
    joined with newlines); ``#`` comment lines are skipped. Raises ``ValueError`` for a line
    that is no field, continuation or comment."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t":
            if last is None:
                raise ValueError(f"a continuation line without a field: {line.strip()!r}")
            current[last] += "\n" + line.strip()
            continue
        key, sep, value = line.partition(":")
        if not sep or not _FIELD_RE.fullmatch(key):
            raise ValueError(f"not a deb822 field: {line!r}")
        last = key
        current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def render_sources(attrs: dict[str, Any]) -> str:
    """The deb822 text of ``attrs`` (one stanza; a list field's words joined by spaces)."""
    lines = ["# Managed by tectum: changes made here are reported as drift and undone."]
    for attr, field in FIELDS.items():
        value = attrs.get(attr)
        if value is None:
            continue
        if attr == "enabled":
            text = "yes" if value else "no"
        elif attr in _LISTS:
            text = " ".join(str(w) for w in value)
        else:
            text = str(value)
        lines.append(f"{field}: {text}")
    for key, text in (attrs.get("options") or {}).items():
        lines.append(f"{key}: {text}")
    return "\n".join(lines) + "\n"


def _observed(name: str, text: str) -> dict[str, Any]:
    """The attributes of the file's text (see the module docstring)."""
    out: dict[str, Any] = {"name": name, "options": {}}
    try:
        stanzas = parse_sources(text)
    except ValueError:
        out["stanzas"] = 0  # not deb822: nothing in it counts
        return out
    out["stanzas"] = len(stanzas)
    if not stanzas:
        return out
    for key, value in stanzas[0].items():
        attr = _BY_FIELD.get(key.lower())
        if attr is None:
            out["options"][key] = value
        elif attr in _LISTS:
            out[attr] = value.split()
        elif attr == "enabled":
            word = value.strip().lower()
            out[attr] = True if word in _TRUE else False if word in _FALSE else value
        else:
            out[attr] = value
    out.setdefault("enabled", True)  # apt's default
    return out


def _name_of(change: ResourceChange) -> str:
    for attrs in (change.after, change.before, change.prior):
        if attrs and isinstance(attrs.get("name"), str):
            return str(attrs["name"])
    raise ApplyError(f"{change.address}: no repository name in the change")


class AptRepositoryType(HostType):
    """An apt source file in deb822 form; see the module docstring."""

    name = "apt_repository"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=_valid_name,
                     description="the file's name: /etc/apt/sources.list.d/NAME.sources"),
        "types": Attr((list, str), default=["deb"], validate=_list_validator(
            "type", _WORD_RE, "[\"deb\"] or [\"deb\", \"deb-src\"]", ("deb", "deb-src")),
            description="\"deb\" (binary packages) and/or \"deb-src\" (sources)"),
        "uris": Attr((list, str), required=True, validate=_list_validator(
            "URI", _URI_RE, "[\"https://apt.example.org/debian\"]"),
            description="the repository's base URIs"),
        "suites": Attr((list, str), required=True, validate=_list_validator(
            "suite", _WORD_RE, "[\"bookworm\"] (or [\"./\"] for a flat repository)"),
            description="suites (distribution codenames), or an exact path ending in /"),
        "components": Attr((list, str), validate=_list_validator(
            "component", _WORD_RE, "[\"main\", \"contrib\"]"),
            description="components; required unless every suite is an exact path ending "
                        "in /"),
        "architectures": Attr((list, str), validate=_list_validator(
            "Debian architecture", _ARCH_RE, "[\"amd64\", \"arm64\"]"),
            description="architectures to fetch (unset: apt's default)"),
        "signed_by": Attr(str, validate=_valid_signed_by,
                          description="absolute path of the keyring file that signs the "
                                      "repository (.asc or .gpg)"),
        "enabled": Attr(bool, default=True, description="Enabled: no keeps the file but makes "
                                                        "apt ignore it"),
        "options": Attr(dict, default={}, validate=_valid_options,
                        description="other deb822 fields, e.g. {\"Check-Valid-Until\": \"no\"}"),
        "stanzas": Attr(int, computed=True,
                        description="stanzas in the file (1 as tectum writes it)"),
    })
    stored_computed = ("stanzas",)
    batches = True

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        """Components are required, except for exact-path suites (ending in /), which
        must have none (``sources.list(5)``)."""
        suites = _words(attrs.get("suites")) or []
        known = [s for s in suites if isinstance(s, str) and is_known(s)]
        if not known or len(known) != len(suites):
            return []
        exact = [s.endswith("/") for s in known]
        has_components = attrs.get("components") is not None
        if all(exact) and has_components:
            return ["A suite ending in / is an exact path (a flat repository): remove "
                    "components."]
        if any(exact) and not all(exact):
            return ["Suites are either all exact paths (ending in /) or all names: split them "
                    "into two repositories."]
        if not any(exact) and not has_components:
            return ["Set components (e.g. components=[\"main\"]); only a flat repository (a "
                    "suite ending in /) has none."]
        return []

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """List fields become lists of words; ``options`` a fresh dict; ``stanzas`` 1. Raises
        ``ValueError`` for a value that a reference resolved to something invalid."""
        out = super().prepare(attrs, base_dir)
        for key in _LISTS:
            if out.get(key) is not None:
                words = _words(out[key])
                out[key] = list(words) if words is not None else out[key]
        out["options"] = dict(out.get("options") or {})
        for key, attr in self.schema.attrs.items():
            value = out.get(key)
            if value is None or attr.validate is None:
                continue
            if isinstance(value, list) and not all(is_known(w) for w in value if
                                                   isinstance(w, str)):
                continue
            if isinstance(value, str) and not is_known(value):
                continue
            problem = attr.validate(value)
            if problem is not None:
                raise ValueError(f"Attribute {key!r} {problem}")
        out["stanzas"] = 1
        return out

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """Its file's path: a ``file`` resource at the same path manages the same object."""
        name = attrs.get("name")
        return ("path", sources_path(name) if isinstance(name, str) else name)

    def describe(self, attrs: dict[str, Any]) -> str:
        name = attrs.get("name")
        return sources_path(name) if isinstance(name, str) else ""

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return "removes the file and refreshes the apt cache: apt-get update"

    def sweep_interrupted(self, target: Connector,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Remove the temporary files the atomic writes of a killed run left in
        sources.list.d (apt would warn about each on every run)."""
        paths = [sources_path(str(i["name"])) for i in identities
                 if isinstance(i.get("name"), str)]
        if paths:
            target.sweep_temp(paths)

    # -- refresh -------------------------------------------------------------------------
    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """``("apt_sources",)``: a package no package list offers yet is not reported
        missing at plan time when the stack declares a repository on its host."""
        return [("apt_sources",)]

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(content=tuple(sources_path(str(o["name"])) for o in objects))

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """Every file in one read (answered from the prefetch); see the module docstring for
        the shape. Something else than a regular file at the path is reported as
        ``stanzas=0`` (planned as a rewrite, which fails: tectum replaces no directory)."""
        names = [str(o["name"]) for o in objects]
        facts = conn.stat_paths([sources_path(n) for n in names], content=True)
        out: list[dict[str, Any] | None] = []
        for name, fact in zip(names, facts, strict=True):
            if fact is None:
                out.append(None)
            elif fact.kind != "file" or fact.content is None:
                out.append({"name": name, "options": {}, "stanzas": 0})
            else:
                out.append(_observed(name, fact.content.decode("utf-8", "replace")))
        return out

    # -- plan ----------------------------------------------------------------------------
    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        """The settable attributes the configuration sets, and ``stanzas``."""
        out = super().diff(desired, observed)
        if observed.get("stanzas") != 1:
            out.append(AttrChange("stanzas", observed.get("stanzas"), 1))
        return out

    def plan(
        self,
        desired: dict[str, Any],
        observed: dict[str, Any] | None,
        prior: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        """Create, update (rewrite the file) or no-op; a create or an update also shows the
        ``apt cache`` refresh that follows the write."""
        action, changes = super().plan(desired, observed, prior)
        if action is Action.CREATE:
            changes = [c for c in changes if c.name != "options" or c.after]
        if action is not Action.NOOP:
            changes = [*changes, AttrChange(CACHE_CHANGE, None, REFRESH)]
        return action, changes

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """Apply one change (a batch of one). Raises :class:`ApplyError` on failure."""
        result = self.apply_batch(conn, [change])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def apply_batch(
        self, conn: Connector, changes: Sequence[ResourceChange]
    ) -> list[dict[str, Any] | None | Exception]:
        """Write or remove the files of ``changes``, then one ``apt-get update`` for them
        all. When it fails, every file written is put back as it was and every change fails
        with apt's message (a removed file stays removed: its change fails too, so state
        keeps it until a plan finds it gone). Returns per change: the stored attributes,
        None for a delete, or the :class:`ApplyError`."""
        results: list[dict[str, Any] | None | Exception] = [None] * len(changes)
        written: list[tuple[int, str, bytes | None]] = []  # (index, path, old content)
        removed: list[int] = []
        for i, change in enumerate(changes):
            try:
                name = _name_of(change)
                path = sources_path(name)
                if change.action is Action.NOOP:
                    results[i] = self.stored({**(change.before or {}), "name": name})
                    continue
                if change.action is Action.DELETE:
                    conn.remove(path)
                    removed.append(i)
                    continue
                old_name = (change.before or change.prior or {}).get("name")
                after = dict(change.after or {})
                for key in _KEPT:
                    if after.get(key) is None and (change.before or {}).get(key) is not None:
                        after[key] = (change.before or {})[key]
                fact = conn.stat_paths([path], content=True)[0]
                old = fact.content if fact is not None and fact.kind == "file" else None
                conn.write_file(path, render_sources(after).encode(), mode=None, owner=None,
                                group=None)
                written.append((i, path, old))
                after["stanzas"] = 1
                results[i] = self.stored(after)
                if change.action is Action.REPLACE and isinstance(old_name, str) \
                        and old_name != name:
                    conn.remove(sources_path(old_name))
            except (ConnectorError, ApplyError) as exc:
                results[i] = exc if isinstance(exc, ApplyError) else ApplyError(str(exc))
        if not written and not removed:
            return results
        update = apt_update(conn)
        if update.ok:
            return results
        error = (f"apt-get update failed (exit {update.returncode}) after the sources "
                 f"changed: {update.error_text(800)}")
        for i, path, old in written:
            try:
                if old is None:
                    conn.remove(path)
                    results[i] = ApplyError(f"{error}; {path} was removed again")
                else:
                    conn.write_file(path, old, mode=None, owner=None, group=None)
                    results[i] = ApplyError(f"{error}; {path} was put back as it was")
            except ConnectorError as exc:
                results[i] = ApplyError(f"{error}; putting {path} back failed too: {exc}")
        for i in removed:
            results[i] = ApplyError(f"{error}; the file was removed, but the package lists "
                                    "still hold it")
        return results
