"""``sysctl``: a kernel parameter, set live and persisted for the next boot.

The model follows Ansible's ``ansible.posix.sysctl`` (``name``, ``value``; its ``sysctl_set``
and ``reload`` are always on: the value is written live *and* to a file) with one file per key,
as Puppet's ``sysctl`` types and systemd's ``sysctl.d(5)`` drop-ins do, instead of editing a
shared ``/etc/sysctl.conf`` line by line:

* **live**: ``/proc/sys/<name with . as />`` (the kernel's own interface: neither ``sysctl``
  nor procps is needed on the host). A component holding ``/`` stands for a ``.`` in the
  path, as procps spells it: ``net.ipv4.conf.eth0/100.forwarding`` is
  ``/proc/sys/net/ipv4/conf/eth0.100/forwarding``.
* **persisted**: :func:`conf_path` — ``/etc/sysctl.d/99-tectum-<name>.conf`` holding
  ``<name> = <value>`` (read at boot by ``systemd-sysctl`` and by procps' ``sysctl
  --system``). ``99-tectum-`` sorts after Debian's ``99-sysctl.conf`` (the link to
  ``/etc/sysctl.conf``), so the value tectum sets is the one that wins at boot. The path is
  derived from the name and cannot be set: no two resources can share a file, and deleting a
  resource removes exactly its file. It is recorded in state as ``file``.

Values are compared normalised (:func:`normalize_value`): the kernel prints the parts of a
vector value separated by tabs (``net.ipv4.ip_local_port_range`` reads ``32768\\t60999``), a
stack writes ``"32768 60999"``; both are ``"32768 60999"``. An integer value is its decimal
text.

Shapes (attribute dicts):

* desired (after :meth:`SysctlType.prepare`): ``{"name", "value", "file", "persisted"}`` —
  ``persisted`` is the value the file should hold (the ``value``).
* observed (:meth:`SysctlType.read`): ``{"name", "value", "file", "persisted"}``: ``value``
  the live value, ``file`` the file's path when it exists (else None: the object is absent,
  :meth:`SysctlType.exists`), ``persisted`` the value the file sets for the key (the last
  assignment, as sysctl applies them in order; None when it sets none).
* stored: the same four keys.

Reads are batched into the host's one fact round trip (:meth:`SysctlType.facts`): the
``/proc/sys`` path is stat'ed, its text is read with ``cat`` (a read-only command: a
``/proc`` file's stat size is 0, so the content prefetch, which copies files by their size
over SSH, would bring back nothing), and the file's content comes with the other files.

Drift is seen on both: the live value changed by hand (``value``), the file edited or
removed (``persisted``, ``file``). A key the kernel does not have (no ``/proc/sys`` path: a
typo, or a kernel module not loaded yet) is read with ``value`` None and reported by
:meth:`SysctlType.missing` as a plan-time error naming the key — unless something the
resource depends on changes in the plan: ``Sysctl(name="net.ipv4.vs.conntrack", value=1,
depends_on=[Command("ip_vs", command=["modprobe", "ip_vs"], ...)])`` plans, and its apply
sets the key the module brought (an apply that still finds no key fails, naming it).
Deleting a resource removes the
file tectum created and leaves the live value as it is until the next boot (the plan says so;
nothing records the value before tectum). A value the kernel refuses (``EINVAL``) or stores
differently (clamped, rounded) fails the apply before the file is written, so a bad value
never reaches the next boot.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ReadError, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import ConnectorError, FactRequest
from tectum.providers.host.files import not_encodable
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import Connector

#: where the kernel shows its parameters
PROC_SYS = "/proc/sys"
#: where the files that set them at boot go
SYSCTL_DIR = "/etc/sysctl.d"
#: the start of tectum's file names there (sorts after Debian's 99-sysctl.conf)
FILE_PREFIX = "99-tectum-"
#: the first line of a file tectum writes
HEADER = "# Managed by tectum: changes made here are overwritten.\n"

# one component of a key: letters, digits and the characters interface names use
_PART = re.compile(r"[A-Za-z0-9_:+@/-]+")
_NAME_MAX = 200


def _valid_name(value: Any) -> str | None:
    """Validator for ``name``: a dotted key such as ``net.ipv4.ip_forward``."""
    if not isinstance(value, str) or not is_known(value):
        return None
    if not value:
        return "must not be empty"
    if len(value) > _NAME_MAX:
        return f"must be at most {_NAME_MAX} characters long (got {len(value)})"
    if _canonical_key(value) != value:
        return (f"{value!r} is written with / as the separator: write the key with dots, "
                f"e.g. {value.replace('/', '.')!r} (a / inside a component stands for a . in "
                "an interface name, as in net.ipv4.conf.eth0/100.forwarding)")
    for part in value.split("."):
        if not part:
            return (f"{value!r} has an empty component (a leading, trailing or doubled dot); "
                    "write it as `sysctl -a` lists it, e.g. \"net.ipv4.ip_forward\"")
        if not _PART.fullmatch(part) or part.replace("/", ".") in (".", "..") \
                or part.startswith("-"):
            return (f"{value!r} is not a kernel parameter name: its components hold letters, "
                    "digits and _ - : + @ / (and do not start with -), e.g. "
                    "\"net.ipv4.ip_forward\"")
    return None


def normalize_value(value: Any) -> str:
    """The canonical text of a value: its whitespace-separated parts joined by one space
    (``"32768\\t60999\\n"`` → ``"32768 60999"``); an integer is its decimal text."""
    return " ".join(str(value).split())


def _valid_value(value: Any) -> str | None:
    """Validator for ``value``: a non-empty line of text, or an integer."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None  # the type check reports it
    if isinstance(value, int):
        return None
    if not is_known(value):
        return None
    if not value.strip():
        return "must not be empty"
    if "\n" in value or "\r" in value or "\x00" in value:
        return ("must be one line (a vector value is written with spaces between its parts, "
                "e.g. \"32768 60999\")")
    return not_encodable(value)


def proc_path(name: str) -> str:
    """The ``/proc/sys`` file of key ``name`` (``net.ipv4.ip_forward`` →
    ``/proc/sys/net/ipv4/ip_forward``; a ``/`` in a component is a ``.`` in the path)."""
    return PROC_SYS + "/" + "/".join(p.replace("/", ".") for p in name.split("."))


def conf_path(name: str) -> str:
    """The file that persists key ``name``: ``/etc/sysctl.d/99-tectum-<name>.conf`` (a ``/``
    in the name is written ``%2F``, a ``%`` ``%25``, so two keys never share a file)."""
    escaped = name.replace("%", "%25").replace("/", "%2F")
    return f"{SYSCTL_DIR}/{FILE_PREFIX}{escaped}.conf"


def file_text(name: str, value: str) -> str:
    """The content tectum writes to :func:`conf_path` of ``name``."""
    return f"{HEADER}{name} = {value}\n"


def _canonical_key(key: str) -> str:
    """A key as a sysctl.d file may spell it, in dotted form: when its first separator is a
    ``/``, the ``/`` and ``.`` swap (``net/ipv4/conf/eth0.100/forwarding`` →
    ``net.ipv4.conf.eth0/100.forwarding``; sysctl.d(5))."""
    slash, dot = key.find("/"), key.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return key.translate(str.maketrans("/.", "./"))
    return key


def persisted_value(text: str, name: str) -> str | None:
    """The value ``text`` (a sysctl.d file) sets for ``name`` (normalised; the last
    assignment wins, as the file is applied in order), or None. Comments (``#``, ``;``), blank
    lines and the ``-`` prefix (ignore errors) are handled as sysctl.d(5) says."""
    found: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip().lstrip("-").strip()
        if _canonical_key(key) == name:
            found = normalize_value(value)
    return found


class SysctlType(HostType):
    """A kernel parameter (see the module docstring): ``Sysctl("forward",
    name="net.ipv4.ip_forward", value=1)``."""

    name = "sysctl"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=_valid_name,
                     description="the key, as `sysctl -a` lists it, e.g. "
                                 "\"net.ipv4.ip_forward\""),
        "value": Attr((str, int), required=True, validate=_valid_value, description=(
            "the value: an integer or a string; a vector value with spaces between its parts "
            "(\"32768 60999\"); compared with whitespace normalised")),
        "file": Attr(str, computed=True, description=(
            "the file that sets it at boot: /etc/sysctl.d/99-tectum-<name>.conf")),
        "persisted": Attr(str, computed=True, description="the value the file sets"),
    })
    stored_computed = ("file", "persisted")

    # -- configuration -------------------------------------------------------------------
    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Normalise ``value`` (:func:`normalize_value`) and fill ``file`` and ``persisted``.
        Raises ``ValueError`` for a value that is empty once resolved."""
        out = super().prepare(attrs, base_dir)
        value = out.get("value")
        if value is not None and is_known(value):
            if isinstance(value, bool):
                raise ValueError("Attribute 'value': a boolean is not a sysctl value; write 1 "
                                 "or 0")
            problem = _valid_value(value)
            if problem is not None:
                raise ValueError(f"Attribute 'value': {problem}")
            out["value"] = normalize_value(value)
        elif value is not None:
            out["value"] = str(value)
        out["persisted"] = out.get("value")
        name = out.get("name")
        if isinstance(name, str) and is_known(name):
            out["file"] = conf_path(name)
        return out

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("name", ""))

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """Its file (:func:`conf_path`): a ``file`` resource at the same path manages the same
        object (each apply would undo the other), so the two are refused together."""
        name = attrs.get("name")
        return ("path", conf_path(name) if isinstance(name, str) and is_known(name) else name)

    def sweep_interrupted(self, target: Connector,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Remove the temporary files a killed run's atomic writes left in /etc/sysctl.d."""
        paths = [conf_path(str(i["name"])) for i in identities if isinstance(i.get("name"), str)]
        if paths:
            target.sweep_temp(paths)

    # -- refresh -------------------------------------------------------------------------
    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        """The ``/proc/sys`` paths (stat) and their text (``cat``, one command per key), and
        the files' contents."""
        names = list(dict.fromkeys(str(o["name"]) for o in objects))
        return FactRequest(paths=tuple(proc_path(n) for n in names),
                           content=tuple(conf_path(n) for n in names),
                           commands=tuple(("cat", "--", proc_path(n)) for n in names))

    def read(self, target: Connector, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Read every key (see the module docstring); a declared key the kernel does not have
        is read with ``value`` None (:meth:`missing` reports it). Raises :class:`ReadError`
        naming every declared key whose value cannot be read (a write-only key)."""
        return self._read(target, [i.attrs for i in items],
                          [i.desired is not None for i in items])

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        return self._read(conn, objects, [False] * len(objects))

    def _read(self, conn: Connector, objects: Sequence[dict[str, Any]],
              declared: Sequence[bool]) -> list[dict[str, Any] | None]:
        names = [str(o["name"]) for o in objects]
        live_facts = conn.stat_paths([proc_path(n) for n in names])
        files = conn.stat_paths([conf_path(n) for n in names], content=True)
        out: list[dict[str, Any] | None] = []
        problems: list[str] = []
        for name, is_declared, live_fact, file_fact in zip(
                names, declared, live_facts, files, strict=True):
            live: str | None = None
            if live_fact is None:
                pass  # (no such key, maybe not yet: missing() says so at plan time)
            else:
                result = conn.run(("cat", "--", proc_path(name)), mutating=False)
                if result.ok:
                    live = normalize_value(result.text())
                elif is_declared:
                    problems.append(f"cannot read {name} on {conn.host}: "
                                    f"{result.error_text(200) or 'cat failed'} (a write-only "
                                    "key cannot be managed)")
                    out.append(None)
                    continue
            if file_fact is None or file_fact.kind != "file":
                if not is_declared:
                    out.append(None)  # nothing of it left: already gone
                    continue
                out.append({"name": name, "value": live, "file": None, "persisted": None})
                continue
            text = (file_fact.content or b"").decode("utf-8", "replace")
            out.append({"name": name, "value": live, "file": conf_path(name),
                        "persisted": persisted_value(text, name)})
        if problems:
            raise ReadError("; ".join(problems))
        return out

    def missing(self, target: Connector, items: Sequence[ReadItem]
                ) -> list[list[tuple[Hashable | None, str]]]:
        """A declared key the kernel does not have (no ``/proc/sys`` path; answered from the
        read's prefetched facts): an error at plan time, unless something it depends on
        changes in the plan (the Command that loads the module bringing it)."""
        out = super().missing(target, items)
        wanted = [(n, str(i.desired["name"])) for n, i in enumerate(items)
                  if i.desired is not None and isinstance(i.desired.get("name"), str)]
        if not wanted:
            return out
        facts = target.stat_paths([proc_path(name) for _, name in wanted])
        where = "this machine" if target.host in ("local", "") else f"host {target.host}"
        for (n, name), fact in zip(wanted, facts, strict=True):
            if fact is None:
                out[n].append((None, (
                    f"{name} is not a kernel parameter on {where} ({proc_path(name)} does not "
                    "exist): check the name (`sysctl -a` lists them); a key a kernel module "
                    "brings needs the module loaded first: declare the Command that loads it "
                    "(modprobe MODULE) and make this Sysctl depend on it")))
        return out

    def exists(self, observed: dict[str, Any]) -> bool:
        """Present when its file exists (the live value always does)."""
        return observed.get("file") is not None

    # -- plan ----------------------------------------------------------------------------
    def plan(
        self,
        desired: dict[str, Any],
        observed: dict[str, Any] | None,
        prior: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        """No file → CREATE (changes: the live ``value`` when it differs, ``persisted`` and
        ``file``); otherwise UPDATE of the live ``value`` and/or the ``persisted`` one where
        they differ from ``value``, else NOOP."""
        want = desired.get("value")
        have = observed or {}
        changes: list[AttrChange] = []
        if have.get("value") != want:
            changes.append(AttrChange("value", have.get("value"), want))
        if observed is None or not self.exists(observed):
            changes.append(AttrChange("persisted", have.get("persisted"), want))
            changes.append(AttrChange("file", None, desired.get("file")))
            return Action.CREATE, changes
        if have.get("persisted") != want:
            changes.append(AttrChange("persisted", have.get("persisted"), want))
        return (Action.UPDATE if changes else Action.NOOP), changes

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """tectum made the object when it wrote the file (the live value is always there)."""
        return found is None or found.get("file") is None

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return (f"removes {prior.get('file') or conf_path(str(prior.get('name')))}; the live "
                "value stays as it is until the next boot")

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action in (Action.CREATE, Action.REPLACE) and any(
                c.name == "value" for c in change.changes):
            before = next(c.before for c in change.changes if c.name == "value")
            return [f"removing it later (or a rollback) removes its file but leaves the live "
                    f"value as it is until the next boot, not {before!r} as it was"]
        return []

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """Write the live value (checked by reading it back) and then the file; a delete
        removes the file only. Raises :class:`ApplyError`."""
        try:
            if change.action is Action.DELETE:
                old = change.prior or change.before or {}
                conn.remove(str(old.get("file") or conf_path(str(old["name"]))))
                return None
            after = dict(change.after or {})
            # (a value that was a reference at plan time is normalised only now)
            name, value = str(after["name"]), normalize_value(after["value"])
            path = conf_path(name)
            old_file = (change.before or {}).get("file") or (change.prior or {}).get("file")
            if change.action is Action.REPLACE and old_file and old_file != path:
                conn.remove(str(old_file))
            names = {c.name for c in change.changes}
            if change.action is Action.REPLACE or "value" in names:
                self._set_live(conn, name, value)
            if change.action in (Action.CREATE, Action.REPLACE) or names & {"persisted",
                                                                              "file"}:
                conn.write_file(path, file_text(name, value).encode(), mode=None, owner=None,
                                group=None)
        except ConnectorError as exc:
            raise ApplyError(str(exc)) from None
        return self.stored({"name": name, "value": value, "file": path, "persisted": value})

    @staticmethod
    def _set_live(conn: Connector, name: str, value: str) -> None:
        proc = proc_path(name)
        if not conn.exists(proc):
            raise ApplyError(f"{name} is not a kernel parameter on {conn.host}: {proc} does "
                             "not exist (check the name; a key a kernel module brings needs "
                             "the module loaded first); nothing was written to "
                             f"{conf_path(name)}")
        # tee reports the kernel's errno (EINVAL: "Invalid argument"); its echo is dropped
        result = conn.run(("tee", "--", proc), input=f"{value}\n".encode())
        if not result.ok:
            raise ApplyError(f"the kernel refused {name} = {value!r} on {conn.host}: "
                             f"{result.error_text(300) or f'exit code {result.returncode}'}; "
                             f"nothing was written to {conf_path(name)}")
        check = conn.run(("cat", "--", proc), mutating=False)
        now = normalize_value(check.text()) if check.ok else None
        if now != value:
            raise ApplyError(f"{name} on {conn.host} reads {now!r} after writing {value!r}: the "
                             "kernel clamps or rewrites the value; write it as the kernel "
                             f"shows it (cat {proc}). Nothing was written to {conf_path(name)}")
