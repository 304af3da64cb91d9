"""``line_in_file``, ``block_in_file`` and ``ini_value``: a part of a file on a host.

Each of these types manages **part** of a file and leaves the rest to whoever else writes
there (a package's defaults, an administrator, other resources), as Ansible's ``lineinfile``,
``blockinfile`` and ``ini_file`` (and Puppet's ``file_line``) do:

==================  ===========================================================================
``line_in_file``    one line, found by ``regexp`` (the last line it matches) or by being equal
                    to ``line``; placed by ``insert_after`` / ``insert_before`` when added
``block_in_file``   the lines between two marker lines (``# BEGIN MANAGED BY TECTUM`` /
                    ``# END MANAGED BY TECTUM``), found by the markers
``ini_value``       one ``option = value`` line in a ``[section]`` (or before any section),
                    keeping comments, the spacing style and every other line
==================  ===========================================================================

**Reads.** Every file is read once per host, in the host's one facts round trip
(:meth:`_PartType.facts` asks for the contents). What a read reports is the managed part alone
(the line as it is, the block's text, the option's value) plus ``ensure`` (``present`` when the
part is there): an edit elsewhere in the file is never drift; a change of the managed part is
(``line``, ``block``, ``value``; ``ensure`` when it was removed).

**Plans** show the managed part only, never the file's other lines (they may hold what is not
tectum's to show: another application's token next to the option tectum sets): the change of
``line`` / ``value`` is the old value and the new one (a list when the edit replaces or removes
several lines: an option written twice, every line ``ensure="absent"`` matches), the change of
``block`` a line diff of the old and new block (its line numbers count from the block's first
line). When the managed value is sensitive (a secret, a sensitive variable), the part found in
the file is masked too, in the plan view and sealed in a plan file
(:meth:`_PartType.masked_observed`).

**Writes** are atomic (:meth:`Connector.write_file`: a temporary file renamed over the target)
and keep the file's mode, owner and group; ``mode``/``owner``/``group`` are used only when the
file is created (``create=True``). Applying re-reads the file just before it writes, under a
lock held per machine and path for the read-modify-write, and applies the planned edit to the
text found then (Ansible's model: the edit, not a whole new content, is what the plan decided).
So several of these resources — of one type or of all three — on the same file never lose
each other's edits, whatever order the engine runs them in. Changes of one type on one host
that are ready together are grouped per file (:attr:`~ResourceType.batches`): one read and
one write for all of them.

**Deletes** remove what the resource added — its line, its block (markers included), its
option (and the ``[section]`` header it added, once empty) — and the file itself when tectum
created it and nothing else is left in it; a part that was there before tectum managed it is
only forgotten (README "What tectum deletes"). A resource with ``ensure="absent"`` adds
nothing, so it is only forgotten too. A delete removes only the text tectum wrote: the line
exactly as recorded (not whatever ``regexp`` matches now), the option line holding the
recorded value, a begin marker with the end marker after it; when that text is no longer
there (changed or removed by someone else), nothing is removed and the resource is forgotten.

**Interrupted writes**: a run killed while writing leaves the connector's temporary file
(``.NAME.tectum-PID-…``) next to the file; the next apply removes it
(:meth:`_PartType.sweep_interrupted`).

A ``file`` resource that manages the whole content of the same path is a conflict (each apply
would undo the other); the engine has no hook that relates resources of different types on
one path, so it is not refused at plan time.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import ConnectorError, FactRequest, LocalConnector
from tectum.providers.host.files import (
    _OWNERSHIP,
    _abs_path,
    normalize_mode,
    path_needs,
)
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import Connector

#: the default marker of ``block_in_file`` (Ansible's is ``# {mark} ANSIBLE MANAGED BLOCK``)
DEFAULT_MARKER = "# {mark} MANAGED BY TECTUM"

_ENSURE = Attr(str, default="present", choices=("present", "absent"),
               description="present: the part is in the file; absent: it is not")
_CREATE = Attr(bool, default=False, description=(
    "make the file when it does not exist (with mode/owner/group); false: a missing file "
    "fails the apply, as Ansible's create=no"))


# -- validators ----------------------------------------------------------------------------

def _regexp(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        re.compile(value)
    except re.error as exc:
        return f"is not a valid regular expression (Python re): {exc}"
    return None


def _one_line(value: Any) -> str | None:
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        return "must be one line, without a line break (use block_in_file for several lines)"
    return None


def _insert_after(value: Any) -> str | None:
    if value in ("EOF", "BOF"):
        return None
    return _regexp(value)


def _insert_before(value: Any) -> str | None:
    if value == "EOF":
        return ("\"EOF\" is only for insert_after (insert_before takes \"BOF\" or a regular "
                "expression)")
    if value == "BOF":
        return None
    return _regexp(value)


def _marker(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if "{mark}" not in value:
        return ("must contain {mark} (replaced by BEGIN and END), e.g. "
                f"{DEFAULT_MARKER!r}")
    return _one_line(value)


def _option(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if not value.strip() or value != value.strip():
        return "must be a name without leading or trailing spaces"
    if any(c in value for c in "=:[]\n\r"):
        return "must not contain =, :, [, ] or a line break"
    return None


def _section(value: Any) -> str | None:
    if isinstance(value, str) and any(c in value for c in "[]\n\r"):
        return "must not contain [, ] or a line break (write the name without brackets)"
    return None


# -- text ----------------------------------------------------------------------------------

def _decode(data: bytes) -> str:
    """A file's bytes as text; bytes that are not UTF-8 survive the round trip (as
    surrogateescape characters)."""
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _split(text: str) -> list[str]:
    """Lines with their endings, split at ``\\n`` only (a ``\\r\\n`` line keeps its ``\\r``;
    the last line may have no ending)."""
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _bare(line: str) -> str:
    """A line without its ending (``\\n`` or ``\\r\\n``)."""
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith("\n"):
        return line[:-1]
    return line


def _newline(lines: Sequence[str]) -> str:
    """The line ending the file uses (``\\r\\n`` when most of its lines end so), for lines
    added to it."""
    crlf = sum(1 for line in lines if line.endswith("\r\n"))
    return "\r\n" if crlf and crlf * 2 >= sum(1 for line in lines if line.endswith("\n")) \
        else "\n"


def _insert(lines: list[str], pos: int, new: Sequence[str], nl: str) -> None:
    """Insert ``new`` at ``pos``; the line before it gets an ending if it had none (the last
    line of a file without a final newline)."""
    if pos > 0 and not lines[pos - 1].endswith("\n"):
        lines[pos - 1] += nl
    lines[pos:pos] = new


def _position(lines: Sequence[str], after: str | None, before: str | None) -> int:
    """Where an added line or block goes (Ansible's ``insertafter`` / ``insertbefore``):
    ``BOF`` the top; after (before) the **last** line the regular expression matches; the end
    of the file when it is ``EOF``, unset, or matches no line."""
    if before == "BOF" or after == "BOF":
        return 0
    pattern = before if before is not None else after
    if pattern is None or pattern == "EOF":
        return len(lines)
    found = None
    compiled = re.compile(pattern)
    for i, line in enumerate(lines):
        if compiled.search(_bare(line)):
            found = i
    if found is None:
        return len(lines)
    return found if before is not None else found + 1


_LOCKS: dict[tuple[object, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _file_lock(conn: Connector, path: str) -> threading.Lock:
    """The lock held while one file of one machine is read, edited and written (every
    connector to this machine shares one)."""
    machine: object = "local" if isinstance(conn, LocalConnector) else id(conn)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault((machine, path), threading.Lock())


def _path_of(change: ResourceChange) -> str:
    for attrs in (change.after, change.prior, change.before):
        if attrs and isinstance(attrs.get("path"), str):
            return str(attrs["path"])
    raise ApplyError(f"{change.address}: no path in the change")


def _bad_id(import_id: str, why: str) -> DiagnosticError:
    return DiagnosticError(Diagnostic.error("Invalid import ID", f"{import_id!r}: {why}."))


def _split_id(import_id: str, parts: int, form: str) -> list[str]:
    """``PATH:REST`` import IDs: the path ends at the first ``:``. Raises
    :class:`DiagnosticError` for an ID of another shape."""
    pieces = import_id.split(":", parts - 1) if parts > 1 else [import_id]
    if len(pieces) != parts or not pieces[0].startswith("/"):
        raise _bad_id(import_id, f"expected {form}, the path absolute (or a JSON object of the "
                                 "attributes that find it)")
    return pieces


# -- the shared part -----------------------------------------------------------------------

class _PartType(HostType):
    """What the three types share: reads, plans and batched, serialised applies of a part of
    a file. A subclass gives :meth:`_observe` (the part as found), :meth:`_edit` (the text
    with the part as desired) and :meth:`_remove` (the text without the part it added)."""

    #: the attribute holding the managed text: ``line``, ``block``, ``value``
    main: ClassVar[str]
    batches = True
    stored_computed: ClassVar[tuple[str, ...]] = ("created_file",)
    #: attributes no read can see: how a part is placed or a file made, and what tectum made
    unobserved = frozenset({"create", "insert_after", "insert_before", "mode", "owner",
                            "group", "created_file", "section_added"})

    # -- subclass hooks --------------------------------------------------------------------
    def part_of(self, attrs: dict[str, Any]) -> tuple[Any, ...] | None:
        """The file (a ``File`` managing it whole is refused in the same stack)."""
        path = attrs.get("path")
        return ("path", os.path.normpath(path)) if isinstance(path, str) else None

    def _observe(self, attrs: dict[str, Any], lines: list[str] | None) -> dict[str, Any]:
        """The part found in ``lines`` (None: the file is missing): the attributes that find
        it, ``ensure`` and the managed text when present."""
        raise NotImplementedError

    def _edit(self, attrs: dict[str, Any], lines: list[str], nl: str
              ) -> tuple[list[str], dict[str, Any]]:
        """``lines`` with the part as ``attrs`` wants it (present or absent), and what to keep
        in state about what the edit made (``section_added``)."""
        raise NotImplementedError

    def _remove(self, prior: dict[str, Any], lines: list[str]) -> list[str]:
        """``lines`` without the part the record ``prior`` describes (the delete)."""
        raise NotImplementedError

    def _finders(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The attributes that find the part (the journal identity, the read's echo)."""
        return {k: attrs[k] for k in self.schema.identity if attrs.get(k) is not None}

    # -- configuration ---------------------------------------------------------------------
    def _check_common(self, attrs: dict[str, Any]) -> list[str]:
        problems = []
        if attrs.get("create") is not True:
            given = [k for k in ("mode", "owner", "group") if attrs.get(k) is not None]
            if given:
                problems.append(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} used "
                                "only when the file is created: set create=True, or remove "
                                "them (an existing file keeps its mode, owner and group).")
        if attrs.get("ensure") == "absent":
            placed = [k for k in ("insert_after", "insert_before", "create")
                      if attrs.get(k) not in (None, False)]
            if placed:
                problems.append(f"{', '.join(placed)} only apply to what is added; remove "
                                "them with ensure=\"absent\".")
        if attrs.get("insert_after") is not None and attrs.get("insert_before") is not None:
            problems.append("Set insert_after or insert_before, not both.")
        return problems

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare({k: v for k, v in attrs.items() if v is not None}, base_dir)
        if out.get("mode") is not None:
            out["mode"] = normalize_mode(out["mode"])
        return out

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """What finds the part after a crash: its finders and ``ensure``."""
        return {**self._finders(attrs), "ensure": attrs.get("ensure", "present")}

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """The nearest managed directory above the file; the owner and group (when it is
        created with them)."""
        return path_needs(attrs)

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("path", ""))

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """tectum made the part when it was absent and is added; a part that was there (even
        with another text), and every ``ensure="absent"`` resource, is only forgotten when the
        resource goes."""
        if desired.get("ensure") == "absent":
            return False
        return found is None or found.get("ensure") == "absent"

    # -- reads -----------------------------------------------------------------------------
    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(content=tuple(dict.fromkeys(str(o["path"]) for o in objects)))

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        return self.read(conn, [ReadItem(o, None) for o in objects])

    def read(self, target: Connector, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """Every item's part, each file read once (answered from the host's prefetch). For a
        declared resource the result is never None: ``ensure`` says whether the part is there;
        ``_missing`` marks a file that does not exist, ``_want`` carries the desired managed
        value (for :meth:`masked_observed`). For an object known only from state (a delete, a
        crash recovery, an import) the part is found as recorded (:meth:`_observe_recorded`),
        and one that is not there is None (a record of ``ensure="absent"`` reads as such:
        there is nothing to delete). Raises :class:`ReadError` when a declared path is not a
        regular file."""
        paths = list(dict.fromkeys(str(i.attrs["path"]) for i in items))
        texts: dict[str, str | None] = {}
        kinds: dict[str, str] = {}
        for path, fact in zip(paths, target.stat_paths(paths, content=True), strict=True):
            if fact is None:
                texts[path] = None
            elif fact.kind != "file":
                kinds[path] = fact.kind
                texts[path] = None
            else:
                texts[path] = _decode(fact.content or b"")
        out: list[dict[str, Any] | None] = []
        for item in items:
            attrs = item.attrs
            path = str(attrs["path"])
            declared = item.desired is not None
            if path in kinds:
                if declared:
                    hint = " (a symlink: give the path of the file it points to)" \
                        if kinds[path] == "symlink" else ""
                    raise ReadError(f"{path} is a {kinds[path]}, not a regular file{hint}; "
                                    f"{self.name} edits regular files only")
                out.append(None)
                continue
            if not declared and attrs.get("ensure") == "absent":
                # an ensure="absent" resource holds nothing: what it leaves is only forgotten
                out.append({**self._finders(attrs), "ensure": "absent"})
                continue
            text = texts[path]
            lines = _split(text) if text is not None else None
            if not declared:
                obs = self._observe_recorded(attrs, lines)
                out.append(obs if obs.get("ensure") == "present" else None)
                continue
            obs = self._observe(attrs, lines)
            if text is None:
                obs["_missing"] = True
            if attrs.get(self.main) is not None:
                obs["_want"] = attrs[self.main]
            out.append(obs)
        return out

    def _observe_recorded(self, attrs: dict[str, Any], lines: list[str] | None
                          ) -> dict[str, Any]:
        """The part a state record (or an import ID) describes, as :meth:`_observe` finds it;
        a type whose finder may match text it did not write narrows it (``line_in_file``)."""
        return self._observe(attrs, lines)

    def masked_observed(self, observed: dict[str, Any],
                        holds_secret: Callable[[str], bool]) -> list[str]:
        """When the desired managed value holds a secret, the part found in the file is one
        too (the old password of an option a secret sets): every old value the plan would
        show is masked in the view and sealed in a plan file."""
        want = observed.get("_want")
        if not isinstance(want, str) or not holds_secret(want):
            return []
        found = [observed.get(self.main), *observed.get("_all", ())]
        return [v for v in dict.fromkeys(found) if isinstance(v, str) and v]

    # -- plan ------------------------------------------------------------------------------
    def _main_changes(self, desired: dict[str, Any], observed: dict[str, Any] | None
                      ) -> list[AttrChange]:
        """The change of the part as plain values (never other lines of the file): ``line`` /
        ``block`` / ``value`` from what is there (None: absent; a list when the edit replaces
        or removes several) to what is wanted (None: removed)."""
        want_present = desired.get("ensure", "present") != "absent"
        have_present = observed is not None and observed.get("ensure") == "present"
        key = self.main
        if not have_present:
            return [AttrChange(key, None, desired.get(key))] if want_present else []
        assert observed is not None
        found: list[Any] = list(observed.get("_all") or [observed.get(key)])
        old: Any = found if len(found) > 1 else found[0]
        if not want_present:
            # (a removed text is shown as a line diff to nothing, a removed value as null)
            return [AttrChange(key, old, "" if key in self.text_attrs else None)]
        if len(found) > 1 or observed.get(key) != desired.get(key):
            return [AttrChange(key, old, desired.get(key))]
        return []

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        """One change, named after the managed attribute (``line``, ``block``, ``value``; so
        ``ignore_changes`` can name it), from the part found to the part wanted (see
        :meth:`_main_changes`). A missing file adds the pseudo-attribute ``file``."""
        changes = self._main_changes(desired, observed)
        if changes and observed.get("_missing") and observed.get("path") == desired.get("path"):
            made = "created" if desired.get("create") else \
                "must exist by apply time (create is false: the apply fails otherwise)"
            changes.insert(0, AttrChange("file", "absent", made))
        return changes

    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """CREATE when the part is to be added, UPDATE when it differs or is to be removed
        (``ensure="absent"``), else NOOP; the changes are :meth:`diff`'s."""
        changes = self.diff(desired, observed) if observed is not None \
            else self._main_changes(desired, None)
        if not changes:
            return Action.NOOP, []
        want_present = desired.get("ensure", "present") != "absent"
        absent = observed is None or observed.get("ensure") != "present"
        return (Action.CREATE if want_present and absent else Action.UPDATE), changes

    def sweep_interrupted(self, target: Connector,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Remove the temporary files the atomic writes of a killed run left next to these
        files (as ``file`` does)."""
        paths = list(dict.fromkeys(str(i["path"]) for i in identities
                                   if isinstance(i.get("path"), str)))
        if paths:
            target.sweep_temp(paths)

    # -- apply -----------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        result = self.apply_batch(conn, [change])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def apply_batch(self, conn: Connector, changes: Sequence[ResourceChange]
                    ) -> list[dict[str, Any] | None | Exception]:
        """Apply ``changes`` file by file: under the file's lock, read it, make every edit in
        order, write it once (atomically, keeping its mode, owner and group). Returns, per
        change, the state record, None after a delete, or the :class:`ApplyError`."""
        results: list[dict[str, Any] | None | Exception] = [None] * len(changes)
        by_path: dict[str, list[int]] = {}
        for i, change in enumerate(changes):
            try:
                by_path.setdefault(_path_of(change), []).append(i)
            except ApplyError as exc:
                results[i] = exc
        for path, indexes in by_path.items():
            with _file_lock(conn, path):
                done = self._apply_file(conn, path, [changes[i] for i in indexes])
            for i, value in zip(indexes, done, strict=True):
                results[i] = value
        return results

    def _apply_file(self, conn: Connector, path: str, changes: Sequence[ResourceChange]
                    ) -> list[dict[str, Any] | None | Exception]:
        try:
            fact = conn.stat_paths([path], content=True)[0]
        except ConnectorError as exc:
            return [ApplyError(str(exc)) for _ in changes]
        if fact is not None and fact.kind != "file":
            return [ApplyError(f"{path} is a {fact.kind}, not a regular file; {self.name} "
                               "edits regular files only") for _ in changes]
        text = _decode(fact.content or b"") if fact is not None else None
        lines: list[str] | None = _split(text) if text is not None else None
        nl = _newline(lines or [])
        made: dict[str, Any] | None = None  # the attributes the file is created with
        drop_file = False
        out: list[dict[str, Any] | None | Exception] = []
        for change in changes:
            try:
                if change.action is Action.DELETE:
                    prior = change.prior or change.before or {}
                    if lines is not None and prior.get("ensure", "present") != "absent":
                        lines = self._remove(prior, lines)
                        drop_file = drop_file or bool(prior.get("created_file"))
                    out.append(None)
                    continue
                after = dict(change.after or {})
                want_present = after.get("ensure", "present") != "absent"
                record = {k: v for k, v in (change.prior or {}).items()
                          if k in ("created_file", "section_added")}
                if lines is None:
                    if not want_present:
                        out.append(self.stored({**after, **record}))
                        continue
                    if not after.get("create"):
                        raise ApplyError(
                            f"{path} does not exist, and create is false: {self.name} does "
                            "not make the file (as Ansible's create=no). Set create=True, or "
                            "make the file first (a resource this one depends on).")
                    lines, made = [], after
                    record = {"created_file": True}
                if after.get("create") and any(c.name == "file" for c in change.changes):
                    # planned on a missing file: one of its creators (whichever of the
                    # resources on it ran first), so the last part deleted removes the file
                    record["created_file"] = True
                lines, extra = self._edit(after, lines, nl)
                record.update(extra)
                out.append(self.stored({**after, **record}))
            except (ApplyError, re.error) as exc:
                out.append(exc if isinstance(exc, ApplyError) else ApplyError(str(exc)))
        if lines is None:
            return out
        new = "".join(lines)
        try:
            if drop_file and not new and made is None:
                conn.remove(path)
            elif made is not None:
                conn.write_file(path, _encode(new), mode=made.get("mode"),
                                owner=made.get("owner"), group=made.get("group"))
            elif new != text:
                # mode, owner and group left unset: write_file keeps the replaced file's
                conn.write_file(path, _encode(new), mode=None, owner=None, group=None)
        except ConnectorError as exc:
            return [v if isinstance(v, Exception) else ApplyError(str(exc)) for v in out]
        return out


# -- line_in_file --------------------------------------------------------------------------

class LineInFileType(_PartType):
    """One line of a file (Ansible's ``lineinfile``, Puppet's ``file_line``).

    * ``ensure="present"``: with ``regexp``, the **last** line the regular expression matches
      (Python ``re.search`` on the line without its ending) is replaced by ``line``; when none
      matches — or without ``regexp`` — a line equal to ``line`` counts as there; otherwise
      ``line`` is added: after the last line ``insert_after`` matches, before the last line
      ``insert_before`` matches, at the top (``BOF``) or at the end (``EOF``, the default; also
      when the expression matches nothing). A replaced line keeps its line ending.
    * ``ensure="absent"``: every line ``regexp`` matches (without it: every line equal to
      ``line``) is removed.

    The part is found by ``regexp`` when given, else by ``line`` itself: a new ``line`` without
    ``regexp`` is another line (the plan replaces the old one: ``-/+``). Ansible's
    ``backrefs``, ``firstmatch`` and ``search_string`` are not offered. Drift: the managed
    line changed (``line``) or removed (``ensure``)."""

    name = "line_in_file"
    main = "line"
    schema = Schema({
        "path": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                     description="absolute path of the file (in normal form)"),
        "line": Attr(str, identity=True, validate=_one_line,
                     description="the line (without its line break)"),
        "regexp": Attr(str, identity=True, validate=_regexp, description=(
            "a regular expression finding the line to replace (the last match), or with "
            "ensure=\"absent\" the lines to remove")),
        "insert_after": Attr(str, validate=_insert_after, description=(
            "where an added line goes: after the last line this regular expression matches, "
            "or \"EOF\" (default) / \"BOF\"")),
        "insert_before": Attr(str, validate=_insert_before, description=(
            "where an added line goes: before the last line this regular expression matches, "
            "or \"BOF\"")),
        "ensure": _ENSURE,
        "create": _CREATE,
        **_OWNERSHIP,
        "created_file": Attr(bool, computed=True,
                             description="tectum made the file (a delete that leaves it "
                                         "empty removes it)"),
    })

    def check(self, attrs: dict[str, Any]) -> list[str]:
        problems = self._check_common(attrs)
        if attrs.get("ensure", "present") != "absent" and attrs.get("line") is None:
            problems.append("Set line (the line to have in the file).")
        if attrs.get("ensure") == "absent" and attrs.get("line") is None \
                and attrs.get("regexp") is None:
            problems.append("Set line or regexp: the lines to remove.")
        return problems

    def identity(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """``(path, "regexp:" + regexp)``, or ``(path, "line:" + line)`` without a regexp."""
        regexp = attrs.get("regexp")
        if regexp is not None:
            return (attrs.get("path"), f"regexp:{regexp}" if is_known(regexp) else regexp)
        line = attrs.get("line")
        return (attrs.get("path"), f"line:{line}" if isinstance(line, str) and is_known(line)
                else line)

    def _finders(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {k: attrs[k] for k in ("path", "line", "regexp") if attrs.get(k) is not None}

    def import_item(self, import_id: str) -> ReadItem:
        """``PATH:LINE`` (the path ends at the first ``:``), or a JSON object such as
        ``{"path": "/etc/ssh/sshd_config", "regexp": "^PermitRootLogin"}``."""
        if import_id.startswith("{"):
            return ReadItem(None, _json_id(import_id, ("path", "line", "regexp")))
        path, line = _split_id(import_id, 2, "PATH:LINE")
        return ReadItem(None, {"path": path, "line": line})

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        if prior.get("ensure") == "absent":
            return None
        what = f"the line {prior.get('line')!r}" if prior.get("line") is not None \
            else "the line"
        return f"removes {what} from {prior.get('path')}, if it is still there as written" + (
            " (and the file, if nothing else is left in it)" if prior.get("created_file")
            else "")

    @staticmethod
    def _found(attrs: dict[str, Any], lines: Sequence[str]) -> int | None:
        """The index of the managed line: the last ``regexp`` match, else the last line equal
        to ``line``."""
        found = None
        regexp = attrs.get("regexp")
        if regexp is not None:
            compiled = re.compile(regexp)
            for i, line in enumerate(lines):
                if compiled.search(_bare(line)):
                    found = i
        want = attrs.get("line")
        if found is None and want is not None:
            for i, line in enumerate(lines):
                if _bare(line) == want:
                    found = i
        return found

    @staticmethod
    def _matching(attrs: dict[str, Any], lines: Sequence[str]) -> list[int]:
        """Lines ``ensure="absent"`` removes: every ``regexp`` match, else every line equal to
        ``line`` (Ansible)."""
        regexp = attrs.get("regexp")
        if regexp is not None:
            compiled = re.compile(regexp)
            return [i for i, line in enumerate(lines) if compiled.search(_bare(line))]
        want = attrs.get("line")
        return [i for i, line in enumerate(lines) if _bare(line) == want]

    def _observe(self, attrs: dict[str, Any], lines: list[str] | None) -> dict[str, Any]:
        base = {k: attrs[k] for k in ("path", "regexp") if attrs.get(k) is not None}
        if attrs.get("ensure") == "absent":
            matches = self._matching(attrs, lines or [])
            if matches:
                texts = [_bare((lines or [])[i]) for i in matches]
                return {**base, "ensure": "present", "line": texts[-1],
                        **({"_all": texts} if len(texts) > 1 else {})}
            echo = {"line": attrs["line"]} if attrs.get("line") is not None else {}
            return {**base, **echo, "ensure": "absent"}
        found = self._found(attrs, lines or []) if lines is not None else None
        if found is None:
            return {**base, "ensure": "absent"}
        assert lines is not None
        return {**base, "ensure": "present", "line": _bare(lines[found])}

    def _edit(self, attrs: dict[str, Any], lines: list[str], nl: str
              ) -> tuple[list[str], dict[str, Any]]:
        out = list(lines)
        if attrs.get("ensure") == "absent":
            gone = set(self._matching(attrs, out))
            return [line for i, line in enumerate(out) if i not in gone], {}
        want = str(attrs["line"])
        found = self._found(attrs, out)
        if found is not None:
            if _bare(out[found]) != want:
                old = out[found]
                out[found] = want + old[len(_bare(old)):]
            return out, {}
        pos = _position(out, attrs.get("insert_after"), attrs.get("insert_before"))
        _insert(out, pos, [want + nl], nl)
        return out, {}

    def _observe_recorded(self, attrs: dict[str, Any], lines: list[str] | None
                          ) -> dict[str, Any]:
        """The line a record describes: the last line equal to the recorded ``line`` (what
        tectum wrote) when there is one — not the last line ``regexp`` matches, which may be
        a line someone added since. Without it, the line ``regexp`` finds (the managed line
        edited by hand: drift of ``line``, not a line gone; a delete then removes nothing,
        see :meth:`_remove`)."""
        if self._recorded(attrs, lines or []) is None:
            return self._observe(attrs, lines)
        base = {k: attrs[k] for k in ("path", "regexp") if attrs.get(k) is not None}
        return {**base, "ensure": "present", "line": attrs["line"]}

    @staticmethod
    def _recorded(prior: dict[str, Any], lines: Sequence[str]) -> int | None:
        """The index of the last line exactly equal to the recorded ``line``."""
        want = prior.get("line")
        found = None
        if isinstance(want, str):
            for i, line in enumerate(lines):
                if _bare(line) == want:
                    found = i
        return found

    def _remove(self, prior: dict[str, Any], lines: list[str]) -> list[str]:
        """Without the last line equal to the recorded ``line`` — the line tectum wrote. A
        line ``regexp`` matches but that differs (someone else's, or the managed one edited
        by hand) is left: with no exact match nothing is removed (the resource is only
        forgotten)."""
        found = self._recorded(prior, lines)
        if found is None:
            return lines
        return lines[:found] + lines[found + 1:]


# -- block_in_file -------------------------------------------------------------------------

def _block_text(value: str) -> str:
    """A block in its normal form: ``\\n`` line breaks, every line ended by one."""
    lines = value.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return "".join(line + "\n" for line in lines)


class BlockInFileType(_PartType):
    """Lines between two marker lines (Ansible's ``blockinfile``).

    The block is found by its markers — ``marker`` with ``{mark}`` replaced by ``BEGIN`` and
    ``END`` (default ``# BEGIN MANAGED BY TECTUM`` / ``# END MANAGED BY TECTUM``; use one
    marker per block when a file holds several): the last begin marker line with an end marker
    line after it, and the first such end marker (Ansible takes the last line equal to each,
    in whatever order; a stray marker then makes someone else's lines part of the block).
    ``ensure="present"`` replaces what is between them by ``block`` (the markers
    stay where they are), or adds markers and block after the last line ``insert_after``
    matches / before the last line ``insert_before`` matches / at ``BOF`` / at the end
    (``EOF``, the default; also when the expression matches nothing). ``ensure="absent"``
    removes the markers and what is between them. Drift: the text between the markers
    changed (``block``) or the block was removed (``ensure``)."""

    name = "block_in_file"
    main = "block"
    text_attrs = frozenset({"block"})
    schema = Schema({
        "path": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                     description="absolute path of the file (in normal form)"),
        "block": Attr(str, description="the lines between the markers"),
        "marker": Attr(str, default=DEFAULT_MARKER, identity=True, force_new=True,
                       validate=_marker, description=(
                           "the marker lines, with {mark} replaced by BEGIN and END")),
        "insert_after": Attr(str, validate=_insert_after, description=(
            "where an added block goes: after the last line this regular expression "
            "matches, or \"EOF\" (default) / \"BOF\"")),
        "insert_before": Attr(str, validate=_insert_before, description=(
            "where an added block goes: before the last line this regular expression "
            "matches, or \"BOF\"")),
        "ensure": _ENSURE,
        "create": _CREATE,
        **_OWNERSHIP,
        "created_file": Attr(bool, computed=True,
                             description="tectum made the file (a delete that leaves it "
                                         "empty removes it)"),
    })

    def check(self, attrs: dict[str, Any]) -> list[str]:
        problems = self._check_common(attrs)
        block = attrs.get("block")
        if attrs.get("ensure", "present") != "absent":
            if block is None or (isinstance(block, str) and not block.strip("\r\n")):
                problems.append("Set block (the lines between the markers); to remove a "
                                "block use ensure=\"absent\".")
        elif block is not None:
            problems.append("block is not used with ensure=\"absent\"; remove it.")
        marker = attrs.get("marker", DEFAULT_MARKER)
        if isinstance(block, str) and is_known(block) and isinstance(marker, str) \
                and is_known(marker):
            marks = {marker.replace("{mark}", m) for m in ("BEGIN", "END")}
            clash = [line for line in _block_text(block).splitlines() if line in marks]
            if clash:
                problems.append(f"block holds the marker line {clash[0]!r}: the block could "
                                "not be found again; change the marker or the block.")
        return problems

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        block = out.get("block")
        if isinstance(block, str) and is_known(block):
            out["block"] = _block_text(block)
        return out

    def import_item(self, import_id: str) -> ReadItem:
        """``PATH`` (the default marker), ``PATH:MARKER`` (the path ends at the first ``:``),
        or a JSON object of ``path`` and ``marker``."""
        if import_id.startswith("{"):
            found = _json_id(import_id, ("path", "marker"))
            return ReadItem(None, {"marker": DEFAULT_MARKER, **found})
        if ":" in import_id:
            path, marker = _split_id(import_id, 2, "PATH or PATH:MARKER")
            return ReadItem(None, {"path": path, "marker": marker})
        _split_id(import_id, 1, "PATH or PATH:MARKER")
        return ReadItem(None, {"path": import_id, "marker": DEFAULT_MARKER})

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        if prior.get("ensure") == "absent":
            return None
        return f"removes the block and its markers from {prior.get('path')}" + (
            " (and the file, if nothing else is left in it)" if prior.get("created_file")
            else "")

    @staticmethod
    def _markers(attrs: dict[str, Any]) -> tuple[str, str]:
        marker = str(attrs.get("marker") or DEFAULT_MARKER)
        return marker.replace("{mark}", "BEGIN"), marker.replace("{mark}", "END")

    def _find(self, attrs: dict[str, Any], lines: Sequence[str]) -> tuple[int, int] | None:
        """The indexes of the begin and end marker lines of the block: the last begin marker
        followed by an end marker, and the first end marker after it. A stray marker (an end
        before any begin, a begin never closed) delimits nothing: the lines around it are
        someone else's and are never replaced or removed with the block."""
        begin, end = self._markers(attrs)
        opened = None
        found = None
        for i, line in enumerate(lines):
            bare = _bare(line)
            if bare == begin:
                opened = i
            elif bare == end and opened is not None:
                found, opened = (opened, i), None
        return found

    def _observe(self, attrs: dict[str, Any], lines: list[str] | None) -> dict[str, Any]:
        base = {"path": attrs["path"], "marker": attrs.get("marker") or DEFAULT_MARKER}
        found = self._find(attrs, lines) if lines is not None else None
        if found is None:
            return {**base, "ensure": "absent"}
        assert lines is not None
        lo, hi = found
        return {**base, "ensure": "present",
                "block": "".join(_bare(line) + "\n" for line in lines[lo + 1:hi])}

    def _edit(self, attrs: dict[str, Any], lines: list[str], nl: str
              ) -> tuple[list[str], dict[str, Any]]:
        out = list(lines)
        found = self._find(attrs, out)
        if attrs.get("ensure") == "absent":
            if found is not None:
                del out[found[0]:found[1] + 1]
            return out, {}
        begin, end = self._markers(attrs)
        body = str(attrs.get("block") or "")
        new = [begin + nl] + [line + nl for line in body.split("\n")[:-1]] + [end + nl]
        if found is not None:
            if out[found[0]:found[1] + 1] == new:
                return out, {}
            del out[found[0]:found[1] + 1]
            pos = found[0]
        else:
            pos = _position(out, attrs.get("insert_after"), attrs.get("insert_before"))
        _insert(out, pos, new, nl)
        return out, {}

    def _remove(self, prior: dict[str, Any], lines: list[str]) -> list[str]:
        found = self._find(prior, lines)
        if found is None:
            return lines
        return lines[:found[0]] + lines[found[1] + 1:]


# -- ini_value -----------------------------------------------------------------------------

_HEADER = re.compile(r"\s*\[\s*(?P<name>[^\]]*?)\s*\]\s*(?:[#;].*)?")
_ASSIGN = re.compile(r"(?P<indent>[ \t]*)[^#;\s\[][^=:]*?(?P<before>[ \t]*)(?P<sep>[=:])"
                     r"(?P<after>[ \t]*)")
_COMMENT_OR_BLANK = re.compile(r"\s*([#;].*)?")


def _option_re(option: str) -> re.Pattern[str]:
    return re.compile(r"(?P<head>[ \t]*" + re.escape(option) + r"[ \t]*[=:][ \t]*)"
                      r"(?P<value>.*?)(?P<tail>[ \t]*)")


def _sections(lines: Sequence[str]) -> list[tuple[str, int]]:
    """Every section header: (name, line index)."""
    out = []
    for i, line in enumerate(lines):
        m = _HEADER.fullmatch(_bare(line))
        if m:
            out.append((m["name"], i))
    return out


def _body(lines: Sequence[str], section: str | None) -> tuple[int, int, int] | None:
    """``(header, start, end)`` of ``section``'s lines (the first section of that name;
    ``header`` -1 and ``start`` 0 for the lines before any section), or None when there is
    no such section."""
    headers = _sections(lines)
    if not section:
        return -1, 0, headers[0][1] if headers else len(lines)
    for n, (name, index) in enumerate(headers):
        if name == section:
            end = headers[n + 1][1] if n + 1 < len(headers) else len(lines)
            return index, index + 1, end
    return None


def _style(lines: Sequence[str], start: int, end: int) -> tuple[str, str]:
    """How a new ``option = value`` line is written in this file: the separator (``" = "`` or
    ``"="``, as most assignments in the file are written; ``:`` when all use it) and the
    indentation of the section's last assignment."""
    spaced = tight = colon = 0
    indent = ""
    for i, line in enumerate(lines):
        m = _ASSIGN.match(_bare(line))
        if not m or _HEADER.fullmatch(_bare(line)):
            continue
        if m["before"] or m["after"]:
            spaced += 1
        else:
            tight += 1
        colon += m["sep"] == ":"
        if start <= i < end:
            indent = m["indent"]
    sep = ":" if colon and colon == spaced + tight else "="
    text = sep if tight > spaced else (f"{sep} " if sep == ":" else " = ")
    return text, indent


class IniValueType(_PartType):
    """One ``option = value`` in an INI file (Ansible's ``ini_file``, Puppet's
    ``ini_setting``).

    ``section`` names the ``[section]`` (the first of that name; unset: the lines before any
    section). ``ensure="present"``: the first active ``option = value`` line of the section
    (``=`` or ``:``; a commented-out one does not count) gets ``value``, with its spacing and
    indentation as they are; later duplicates of the option in the section are removed (as
    Ansible's default ``exclusive``); a missing option is added after the section's last line
    that is not blank or a comment, written as the file writes its other assignments
    (``key = value`` or ``key=value``); a missing section is added at the end of the file.
    ``ensure="absent"`` removes every active line of the option in the section. Comments,
    blank lines and every other line stay as they are. Drift: another value (``value``), or
    the option removed (``ensure``)."""

    name = "ini_value"
    main = "value"
    schema = Schema({
        "path": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                     description="absolute path of the file (in normal form)"),
        "section": Attr(str, identity=True, force_new=True, validate=_section, description=(
            "the section's name, without brackets; unset: before any section")),
        "option": Attr(str, required=True, identity=True, force_new=True, validate=_option,
                       description="the option's name"),
        "value": Attr((str, int), validate=_one_line, description=(
            "the value (an integer is written in decimal; write booleans as strings)")),
        "ensure": _ENSURE,
        "create": _CREATE,
        **_OWNERSHIP,
        "created_file": Attr(bool, computed=True,
                             description="tectum made the file (a delete that leaves it "
                                         "empty removes it)"),
        "section_added": Attr(bool, computed=True,
                              description="tectum added the [section] header (a delete that "
                                          "leaves the section empty removes it)"),
    })
    stored_computed = ("created_file", "section_added")

    def check(self, attrs: dict[str, Any]) -> list[str]:
        problems = self._check_common(attrs)
        if attrs.get("ensure", "present") != "absent" and attrs.get("value") is None:
            problems.append("Set value (the option's value).")
        if attrs.get("ensure") == "absent" and attrs.get("value") is not None:
            problems.append("value is not used with ensure=\"absent\" (every line of the "
                            "option is removed); remove it.")
        return problems

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        if isinstance(out.get("value"), int):
            out["value"] = str(out["value"])
        if out.get("section") == "":
            del out["section"]
        return out

    def describe(self, attrs: dict[str, Any]) -> str:
        """``PATH [SECTION] OPTION`` (``PATH OPTION`` before any section): the plan shows the
        value alone, not the line."""
        where = f" [{attrs['section']}]" if attrs.get("section") else ""
        return f"{attrs.get('path', '')}{where} {attrs.get('option', '')}"

    def identity(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """``(path, section, option)``; the lines before any section are section ``""``."""
        return (attrs.get("path"), attrs.get("section") or "", attrs.get("option"))

    def import_item(self, import_id: str) -> ReadItem:
        """``PATH:SECTION:OPTION`` (the path ends at the first ``:``, the option starts after
        the last; ``PATH::OPTION`` before any section), or a JSON object of ``path``,
        ``section`` and ``option``."""
        if import_id.startswith("{"):
            return ReadItem(None, _json_id(import_id, ("path", "section", "option")))
        path, rest = _split_id(import_id, 2, "PATH:SECTION:OPTION")
        section, sep, option = rest.rpartition(":")
        if not sep or not option:
            raise _bad_id(import_id, "expected PATH:SECTION:OPTION (PATH::OPTION before any "
                                     "section)")
        found = {"path": path, "option": option}
        if section:
            found["section"] = section
        return ReadItem(None, found)

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        if prior.get("ensure") == "absent":
            return None
        where = f"[{prior['section']}]" if prior.get("section") else "before any section"
        return (f"removes {prior.get('option')} ({where}) from {prior.get('path')}, if it "
                "still holds the value tectum set")

    def _observe(self, attrs: dict[str, Any], lines: list[str] | None) -> dict[str, Any]:
        base = {k: attrs[k] for k in ("path", "section", "option") if attrs.get(k) is not None}
        body = _body(lines, attrs.get("section")) if lines is not None else None
        if body is None:
            return {**base, "ensure": "absent"}
        assert lines is not None
        pattern = _option_re(str(attrs["option"]))
        values = [m["value"] for line in lines[body[1]:body[2]]
                  if (m := pattern.fullmatch(_bare(line)))]
        if not values:
            return {**base, "ensure": "absent"}
        return {**base, "ensure": "present", "value": values[0],
                **({"_all": values} if len(values) > 1 else {})}

    def _edit(self, attrs: dict[str, Any], lines: list[str], nl: str
              ) -> tuple[list[str], dict[str, Any]]:
        out = list(lines)
        section = attrs.get("section")
        option = str(attrs["option"])
        pattern = _option_re(option)
        body = _body(out, section)
        if attrs.get("ensure") == "absent":
            if body is None:
                return out, {}
            return [line for i, line in enumerate(out)
                    if not (body[1] <= i < body[2] and pattern.fullmatch(_bare(line)))], {}
        value = str(attrs.get("value", ""))
        if body is None:
            sep, _ = _style(out, 0, 0)
            if out and not out[-1].endswith("\n"):
                out[-1] += nl
            if out and _bare(out[-1]).strip():
                out.append(nl)  # a blank line before the new section
            out += [f"[{section}]{nl}", f"{option}{sep}{value}{nl}"]
            return out, {"section_added": True}
        _, start, end = body
        found = [i for i in range(start, end) if pattern.fullmatch(_bare(out[i]))]
        if found:
            first = found[0]
            m = pattern.fullmatch(_bare(out[first]))
            assert m is not None
            ending = out[first][len(_bare(out[first])):]
            out[first] = m["head"] + value + m["tail"] + ending
            for i in reversed(found[1:]):
                del out[i]
            return out, {}
        sep, indent = _style(out, start, end)
        pos = start
        for i in range(start, end):
            if not _COMMENT_OR_BLANK.fullmatch(_bare(out[i])):
                pos = i + 1
        _insert(out, pos, [f"{indent}{option}{sep}{value}{nl}"], nl)
        return out, {}

    def _remove(self, prior: dict[str, Any], lines: list[str]) -> list[str]:
        """Without the option line tectum wrote: the first line of the option in the section
        holding the recorded value. Another line of the option (someone else's, or the
        managed one set to another value by hand) is left: with none holding the recorded
        value nothing is removed (the resource is only forgotten)."""
        out = list(lines)
        section = prior.get("section")
        body = _body(out, section)
        value = prior.get("value")
        if body is None or not isinstance(value, str):
            return out
        header, start, end = body
        pattern = _option_re(str(prior.get("option")))
        mine = next((i for i in range(start, end)
                     if (m := pattern.fullmatch(_bare(out[i]))) and m["value"] == value), None)
        if mine is None:
            return out
        kept = out[start:mine] + out[mine + 1:end]
        out[start:end] = kept
        if prior.get("section_added") and section and header >= 0 \
                and all(_COMMENT_OR_BLANK.fullmatch(_bare(line)) for line in kept):
            # the [section] tectum added holds no option any more: its header and blank
            # lines go (comments stay), with the blank line added before it when it was last
            rest = [line for line in kept if _bare(line).strip()]
            out[header:start + len(kept)] = rest
            if not rest and header == len(out) and header > 0 \
                    and not _bare(out[header - 1]).strip():
                del out[header - 1]
        return out


def _json_id(import_id: str, keys: Sequence[str]) -> dict[str, Any]:
    """An import ID written as a JSON object: the attributes ``keys`` that find the part."""
    try:
        data = json.loads(import_id)
    except ValueError as exc:
        raise _bad_id(import_id, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("path"), str) \
            or any(not isinstance(v, str) for v in data.values()):
        raise _bad_id(import_id, f"expected a JSON object of strings with \"path\" (keys: "
                                 f"{', '.join(keys)})")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise _bad_id(import_id, f"unknown key(s) {', '.join(unknown)} (keys: "
                                 f"{', '.join(keys)})")
    return dict(data)
