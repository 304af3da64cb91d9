"""``file``, ``directory`` and ``symlink``: paths on a host.

All paths on a host are read in one pass (:meth:`Connector.stat_paths`). A file's content is
compared by SHA-256; the plan shows a unified diff of the text. Writes are atomic (a temporary file
in the same directory, then ``rename``), so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import (
    ConnectorError,
    FactRequest,
    PathFact,
    validate_words,
)
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import Connector


#: Linux limits in bytes: a whole path (PATH_MAX, counting its NUL) and one name in it (NAME_MAX)
PATH_MAX = 4096
NAME_MAX = 255


def not_encodable(value: str) -> str | None:
    """Why ``value`` cannot be sent to a host as bytes, or None. Undecodable bytes arrive as
    surrogateescape characters (U+DC80..U+DCFF) and are fine; any other surrogate is not."""
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        return (f"must not contain the lone surrogate {value[exc.start]!r} (at position "
                f"{exc.start}): it is neither a character nor an undecodable byte")
    return None


def path_problem(value: str) -> str | None:
    """What makes an absolute path unusable on a Linux host (encoding, PATH_MAX, NAME_MAX)."""
    problem = not_encodable(value)
    if problem is not None:
        return problem
    size = len(value.encode("utf-8", "surrogateescape"))
    if size >= PATH_MAX:
        return f"must be shorter than {PATH_MAX} bytes (PATH_MAX); it has {size}"
    for part in value.split("/"):
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            return (f"has a name of {size} bytes ({part[:20]!r}...); a name in a path has at "
                    f"most {NAME_MAX} (NAME_MAX)")
    return None


def normal_path(value: str) -> str:
    """The normal form of an absolute path: no ``.`` or ``..`` component, no ``//``, no
    trailing ``/`` (``os.path.normpath``, which keeps a leading ``//`` as POSIX allows; on
    Linux it means ``/``). ``..`` is taken lexically: ``/a/link/..`` is ``/a``, whatever
    ``link`` points to."""
    normal = os.path.normpath(value)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return normal


def _abs_path(value: Any) -> str | None:
    """Validator for ``path``: an absolute path in its normal form (issue 10: a path such as
    ``/etc/../etc/passwd`` names the object under another spelling, which would defeat the
    checks that two resources do not manage the same object)."""
    if not isinstance(value, str) or not value.startswith("/"):
        return "must be an absolute path (starting with /)"
    if "\x00" in value:
        return "must not contain a NUL byte"
    normal = normal_path(value)
    if value != normal:
        return (f"must be written in its normal form, without \".\" or \"..\" components, "
                f"\"//\" or a trailing \"/\": write \"{normal}\"")
    return path_problem(value)


def tree_path(value: Any) -> str | None:
    """Validator for a directory a resource fills as a whole (a git checkout, a virtualenv):
    an absolute path in its normal form, without control characters, never ``/`` itself;
    a value known only at plan time is checked then."""
    if not isinstance(value, str) or not is_known(value):
        return None
    if not value.startswith("/"):
        return "must be an absolute path (starting with /)"
    if any(ord(c) < 32 for c in value):
        return "must not contain control characters (tabs, newlines)"
    if value == "/":
        return "must not be / itself"
    normal = normal_path(value)
    if value != normal:
        return (f"must be written in its normal form, without \".\" or \"..\" components, "
                f"\"//\" or a trailing \"/\": write \"{normal}\"")
    return path_problem(value)


def path_needs(attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
    """The nearest managed directory above ``attrs["path"]``; the owner (a user) and the
    group: what an object at a path depends on automatically (Puppet's autorequire)."""
    out: list[list[ImplicitKey]] = []
    path = attrs.get("path")
    if isinstance(path, str) and is_known(path):
        parents: list[ImplicitKey] = [("dir", p) for p in ancestors(path)]
        if parents:
            out.append(parents)
    for key, kind in (("owner", "user"), ("group", "group")):
        value = attrs.get(key)
        if isinstance(value, str):
            out.append([(kind, value)])
    return out


# "+0", " 0", "0 ": not an account name, but coreutils (chown, id) read it as the id 0
_NUMERIC_ID = re.compile(r"\s*\+?\d+\s*")


def _account(value: Any) -> str | None:
    """Validator for ``owner`` and ``group``: a name (or an id written as plain digits)."""
    if not isinstance(value, str):
        return None
    if not value:
        return "must not be empty (leave it unset to keep the current one)"
    if "\x00" in value:
        return "must not contain a NUL byte"
    if _NUMERIC_ID.fullmatch(value) and not re.fullmatch(r"[0-9]+", value):
        return (f"{value!r} is not a name, and chown would read it as a numeric id; write an id "
                "as plain digits (0-9)")
    return not_encodable(value)


def _link_target(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if not value:
        return "must not be empty"
    if "\x00" in value:
        return "must not contain a NUL byte"
    problem = not_encodable(value)
    if problem is not None:
        return problem
    size = len(value.encode("utf-8", "surrogateescape"))
    if size >= PATH_MAX:
        return f"must be shorter than {PATH_MAX} bytes (PATH_MAX); it has {size}"
    return None


def _int_mode(value: int) -> str:
    """Why the integer ``value`` is refused as a mode, with the string(s) to write instead.

    Python hands tectum ``0o644`` and ``420`` as the same number, and ``644`` as 0o1204, so no
    integer tells which octal digits were meant (issue 10: ``mode=644`` silently became
    ``"1204"``). The hint offers the decimal digits read as octal (``644`` → ``"0644"``) and,
    for a value that is a plain permission mode (0o777 at most), what ``0o...`` gave it."""
    text = str(value)
    readings = []
    if value >= 0 and all(c in "01234567" for c in text) and len(text.lstrip("0")) <= 4:
        readings.append(f'mode="{text.zfill(4)}"')
    if 0 <= value <= 0o777:
        octal = format(value, "04o")
        if f'mode="{octal}"' not in readings:
            readings.append(f'mode="{octal}"' + (f" if you wrote 0o{octal.lstrip('0') or '0'}"
                                                 if readings else ""))
    hint = ", or ".join(readings) if readings else 'a string such as mode="0644"'
    return (f"{value} is an integer, and an integer does not say which octal digits were "
            f"meant (0o644 and 420 are the same number, 644 is 0o1204): write the mode as a "
            f"string of octal digits: {hint}")


def _validate_command(value: Any) -> str | None:
    """Validator for ``validate``: a command :func:`validate_words` can split, with ``%s``."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        return "must not contain a NUL byte"
    problem = not_encodable(value)
    if problem is not None:
        return problem
    try:
        validate_words(value)
    except ValueError as exc:
        return str(exc)
    return None


def _mode(value: Any) -> str | None:
    """Validator for ``mode``: a string of 1 to 4 octal digits (a leading zero more is fine).
    Integers are refused, see :func:`_int_mode`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _int_mode(value)
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() \
            or any(c not in "01234567" for c in value) or len(value.lstrip("0")) > 4:
        return "must be an octal mode written as a string, such as \"0644\""
    return None


def normalize_mode(value: Any) -> str | None:
    """``"644"`` / ``"0644"`` → ``"0644"`` (four octal digits); None stays None, a reference
    token is left for later. Raises ``ValueError`` for an integer (see :func:`_int_mode`:
    a mode that reached here as an integer, e.g. through an ``int`` variable)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"Attribute 'mode': {_int_mode(value)}")
    text = str(value)
    if text.startswith("${tectum:"):
        return text
    return format(int(text, 8), "04o")


_OWNERSHIP = {
    "mode": Attr((str, int), validate=_mode, description=(
        "permission bits as a string of octal digits, e.g. \"0644\"; an integer is refused "
        "(0o644 and 420 are the same number to tectum, and 644 is 0o1204)")),
    "owner": Attr(str, validate=_account, description="user name owning the object"),
    "group": Attr(str, validate=_account, description="group name owning the object"),
}


def _path_of(change: ResourceChange) -> str:
    path = (change.after or change.before or change.prior or {}).get("path")
    assert isinstance(path, str), change.address
    return path


def _fill_ownership(conn: Connector, path: str, after: dict[str, Any],
                    before: dict[str, Any] | None) -> None:
    """State records mode/owner/group even when the configuration leaves them alone: from the
    object as read, or (after a create or a replace: ``before`` None) as it now is, so later
    versions differ only in what really changed."""
    missing = [k for k in ("mode", "owner", "group") if after.get(k) is None]
    if not missing:
        return
    known = before or {}
    if any(known.get(k) is None for k in missing):
        fact = conn.stat_paths([path])[0]
        known = _ownership_of(fact) if fact is not None else {}
    for key in missing:
        if known.get(key) is not None:
            after[key] = known[key]


def _ownership_of(fact: PathFact, want: dict[str, Any] | None = None) -> dict[str, Any]:
    """mode/owner/group as read; an owner or group that ``want`` gives as an id (digits) is
    reported as the id, so ``owner="0"`` compares equal to a file owned by root."""
    owner, group = fact.owner, fact.group
    if want is not None:
        if _is_id(want.get("owner")) and fact.uid is not None:
            owner = str(fact.uid)
        if _is_id(want.get("group")) and fact.gid is not None:
            group = str(fact.gid)
    return {"mode": fact.mode, "owner": owner, "group": group}


def ancestors(path: str) -> Iterator[str]:
    """The directories above ``path``, nearest first, without the root (``/a/b/c`` → ``/a/b``,
    ``/a``)."""
    parent = os.path.dirname(os.path.normpath(path))
    while parent not in ("", "/", "//"):
        yield parent
        parent = os.path.dirname(parent)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()


class _PathType(HostType):
    account_attrs = {"owner": "user", "group": "group"}
    kind: str

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """Files, directories and symlinks share one namespace: a path (in normal form)."""
        path = attrs.get("path")
        return ("path", os.path.normpath(path) if isinstance(path, str) else path)

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """The nearest managed directory above the path; the owner (a user) and the group."""
        return path_needs(attrs)

    def sweep_interrupted(self, target: Connector,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Remove the temporary files the atomic writes of a killed run left next to these
        paths."""
        paths = [str(i["path"]) for i in identities if isinstance(i.get("path"), str)]
        if paths:
            target.sweep_temp(paths)

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        if out.get("mode") is not None:
            out["mode"] = normalize_mode(out["mode"])
        return out

    def _apply_ownership(self, conn: Connector, path: str, changes: list[AttrChange],
                         after: dict[str, Any]) -> None:
        names = {c.name for c in changes}
        if names & {"mode", "owner", "group"}:
            conn.set_attrs(
                path,
                mode=after.get("mode") if "mode" in names else None,
                owner=after.get("owner") if "owner" in names else None,
                group=after.get("group") if "group" in names else None,
            )

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("path", ""))

    def apply_batch(self, conn: Connector, changes: Sequence[ResourceChange]
                    ) -> list[dict[str, Any] | None | Exception]:
        """:meth:`_apply_batch`, after one look at the paths about to be created: an object
        of this kind that is there now was made since the plan by something else in this
        apply (a package's own configuration file or directory). It is made as the plan says
        all the same, but recorded as found (``_found``): destroying its resource then leaves
        it to what made it instead of deleting a package's file (README, "What tectum
        deletes")."""
        there = self._there(conn, changes)
        results = self._apply_batch(conn, changes, there)
        return [dict(r, _found=True) if isinstance(r, dict) and c.address in there else r
                for c, r in zip(changes, results, strict=True)]

    def _apply_batch(self, conn: Connector, changes: Sequence[ResourceChange],
                     there: set[str]) -> list[dict[str, Any] | None | Exception]:
        return super().apply_batch(conn, changes)

    def _there(self, conn: Connector, changes: Sequence[ResourceChange]) -> set[str]:
        """Addresses of the creates whose path holds an object of this kind now."""
        creates = [c for c in changes if c.action is Action.CREATE]
        if not creates:
            return set()
        try:
            facts = conn.stat_paths([_path_of(c) for c in creates])
        except ConnectorError:
            return set()  # (the apply itself reports what is wrong)
        return {c.address for c, f in zip(creates, facts, strict=True)
                if f is not None and f.kind == self.kind}

    def _finish_batch(self, conn: Connector, changes: Sequence[ResourceChange],
                      done: Sequence[ResourceChange], facts: Sequence[PathFact | Exception]
                      ) -> list[dict[str, Any] | None | Exception]:
        """Results of ``changes`` (in order): ``done`` took ``facts`` from one batched connector
        call (stored attributes: the desired ones, mode/owner/group as made where the
        configuration leaves them alone, a file's content digest); the rest are applied one
        by one."""
        results: dict[str, dict[str, Any] | None | Exception] = {}
        for change, got in zip(done, facts, strict=True):
            if isinstance(got, Exception):
                results[change.address] = ApplyError(str(got))
                continue
            after = dict(change.after or {})
            if self.kind == "file":
                after["content_sha256"] = got.sha256
            for key, value in _ownership_of(got).items():
                if after.get(key) is None:
                    after[key] = value
            results[change.address] = self.stored(after)
        rest = [c for c in changes if c.address not in results]
        for change, value in zip(rest, super().apply_batch(conn, rest), strict=True):
            results[change.address] = value
        return [results[c.address] for c in changes]

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        """Something of another kind at the path (a directory where a file belongs) is replaced;
        otherwise the attributes are compared."""
        if observed.get("_kind"):
            return [AttrChange("kind", observed["_kind"], self.kind, force_new=True)]
        return super().diff(desired, observed)


class FileType(_PathType):
    """A regular file with ``content`` (or a Jinja2 ``template`` rendered with ``vars``).

    A write replaces the file atomically and keeps what the configuration leaves alone: the
    mode, owner and group of the file it replaces (a new file: 0644, the writer's owner and
    group). ``validate`` is Ansible's ``validate`` (``validate: nginx -t -c %s``): a command
    run, without a shell, on the staged new file (``%s`` is its path; see
    :func:`~tectum.providers.host.connector.validate_words`) before it replaces the target; a
    non-zero exit leaves the old file in place, removes the staged one and fails the resource
    (:class:`~tectum.providers.base.ApplyError`) with the command's last lines of output. It
    runs only when the content is written (not for a change of mode or owner alone); as it
    cannot be read back from the host, it is never drift and changing it alone changes
    nothing (``unobserved``). Over SSH, a file with ``validate`` is written on its own, not in
    the batch of plain writes."""

    name = "file"
    kind = "file"
    #: ready writes on one host go out together where the connector can (SSH: one round trip)
    batches = True
    schema = Schema({
        "path": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                     description="absolute path of the file (in normal form: no . or .. "
                                 "components, no //, no trailing /)"),
        "content": Attr(str, description="the file's text"),
        "template": Attr(str, description="a Jinja2 template file, relative to the stack"),
        "vars": Attr(dict, description="variables for the template"),
        **_OWNERSHIP,
        "validate": Attr(str, validate=_validate_command, description=(
            "a command run on the staged file before it replaces the target, with %s for its "
            "path (%% for a literal %), e.g. \"nginx -t -c %s\" (Ansible's validate); a "
            "non-zero exit keeps the old file and fails the resource")),
        "content_sha256": Attr(str, computed=True, description="SHA-256 of the content"),
    })
    stored_computed = ("content_sha256",)
    unobserved = frozenset({"validate"})
    #: the digest stands for the content: drift and changes name "content"
    labels = {"content_sha256": "content"}
    text_attrs = frozenset({"content"})

    def check(self, attrs: dict[str, Any]) -> list[str]:
        problems = []
        if "content" in attrs and "template" in attrs:
            problems.append("Set either content or template, not both.")
        if "content" not in attrs and "template" not in attrs:
            problems.append("Set content (the file's text) or template (a Jinja2 file).")
        if "vars" in attrs and "template" not in attrs:
            problems.append("vars is only used with template.")
        return problems

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        template = out.pop("template", None)
        tvars = out.pop("vars", None) or {}
        if template is not None:
            from tectum.providers.host.templates import render

            dest = out.get("path")
            out["content"] = render(os.path.join(base_dir, template), tvars, name=template,
                                    dest=dest if isinstance(dest, str) and is_known(dest)
                                    else None)
        content = out.get("content")
        if isinstance(content, str):
            try:
                content.encode("utf-8")
            except UnicodeEncodeError as exc:
                where = f" (rendered from template {template})" if template is not None else ""
                raise ValueError(
                    f"content{where} holds {content[exc.start]!r} at position {exc.start}, a "
                    "lone surrogate (an undecodable byte?): file content must be text that "
                    "encodes as UTF-8") from None
        if isinstance(content, str) and is_known(content):
            out["content_sha256"] = hashlib.sha256(content.encode()).hexdigest()
        return out

    def sensitive_derived(self, sensitive: set[str]) -> set[str]:
        """A file rendered from a template with a sensitive variable holds it in its content."""
        return {"content"} if sensitive & {"vars", "template"} else set()

    def masked_values(self, attrs: dict[str, Any], sensitive: set[str]) -> list[str]:
        """The digest of a secret-bearing content would let anyone test guesses."""
        digest = attrs.get("content_sha256")
        return [digest] if "content" in sensitive and isinstance(digest, str) else []

    def masked_observed(self, observed: dict[str, Any],
                        holds_secret: Callable[[str], bool]) -> list[str]:
        """A file found holding a secret: its digest is masked (and sealed) too."""
        content, digest = observed.get("_content"), observed.get("content_sha256")
        if isinstance(content, bytes) and isinstance(digest, str) \
                and holds_secret(content.decode("utf-8", "surrogateescape")):
            return [digest]
        return []

    def display(self, observed: dict[str, Any]) -> dict[str, Any]:
        """The old content, for the plan's line diff."""
        return {"before_content": observed["_content"]} if "_content" in observed else {}

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """``("file", path)``: a service whose init script or unit file it is depends on
        it (:meth:`ServiceType.implicit_needs`)."""
        path = attrs.get("path")
        if isinstance(path, str) and is_known(path):
            return [("file", os.path.normpath(path))]
        return []

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(content=tuple(str(o["path"]) for o in objects))

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        facts = conn.stat_paths([o["path"] for o in objects], content=True)
        out: list[dict[str, Any] | None] = []
        for obj, fact in zip(objects, facts, strict=True):
            if fact is None:
                out.append(None)
            elif fact.kind != "file":
                out.append({"path": obj["path"], "_kind": fact.kind,
                            **_ownership_of(fact, obj)})
            else:
                out.append({"path": obj["path"], "content_sha256": fact.sha256,
                            "_content": fact.content, **_ownership_of(fact, obj)})
        return out

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        out: list[AttrChange] = []
        if observed.get("_kind"):
            return [AttrChange("kind", observed["_kind"], "file", force_new=True)]
        if desired.get("content_sha256") != observed.get("content_sha256"):
            old = observed.get("_content")
            out.append(AttrChange("content", _text(old), desired.get("content")))
        for key in ("mode", "owner", "group"):
            want = desired.get(key)
            if want is not None and want != observed.get(key):
                out.append(AttrChange(key, observed.get(key), want))
        return out

    def stored(self, attrs: dict[str, Any]) -> dict[str, Any]:
        out = super().stored(attrs)
        out.pop("content", None)
        out.pop("template", None)
        out.pop("vars", None)
        return out

    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        path = _path_of(change)
        try:
            if change.action is Action.DELETE:
                conn.remove(path)
                return None
            after = dict(change.after or {})
            content = after.get("content")
            if content is None:
                raise ApplyError(f"{path}: no content to write")
            names = {c.name for c in change.changes}
            if change.action is Action.REPLACE and change.before is not None \
                    and change.before.get("path") != path:
                conn.remove(str(change.before["path"]))
            if change.action in (Action.CREATE, Action.REPLACE) or "content" in names:
                if "kind" in names:
                    conn.remove(path, recursive=False)
                conn.write_file(path, content.encode(), mode=after.get("mode"),
                                owner=after.get("owner"), group=after.get("group"),
                                validate=after.get("validate"))
            else:
                self._apply_ownership(conn, path, change.changes, after)
        except ConnectorError as exc:
            raise ApplyError(str(exc)) from None
        after["content_sha256"] = hashlib.sha256(content.encode()).hexdigest()
        # a replace made a new object: what the old one had says nothing about it
        _fill_ownership(conn, path, after,
                        None if change.action is Action.REPLACE else change.before)
        return self.stored(after)


    def _apply_batch(self, conn: Connector, changes: Sequence[ResourceChange],
                     there: set[str]) -> list[dict[str, Any] | None | Exception]:
        """Plain content writes (create, or update of the content) go out in one
        ``write_files`` call when the connector has one (SSH); every other change, or every
        change on a connector without it, is applied one by one."""
        write_many = getattr(conn, "write_files", None)
        plain = [c for c in changes if write_many is not None and _plain_write(c)]
        if not plain:
            return HostType.apply_batch(self, conn, changes)
        items = []
        for c in plain:
            after = c.after or {}
            items.append((str(after["path"]), str(after["content"]).encode(),
                          after.get("mode"), after.get("owner"), after.get("group")))
        assert write_many is not None
        return self._finish_batch(conn, changes, plain, write_many(items))


def _plain_write(change: ResourceChange) -> bool:
    """A change that only (re)writes a file's content at its path (and has no ``validate``
    command: those are written one by one)."""
    after = change.after or {}
    if not isinstance(after.get("content"), str) or change.action is Action.DELETE:
        return False
    if after.get("validate") is not None:
        return False
    names = {c.name for c in change.changes}
    if "kind" in names:
        return False
    if change.action is Action.REPLACE:
        return False
    return change.action is Action.CREATE or "content" in names


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"(binary, {len(data)} bytes)"


class DirectoryType(_PathType):
    """A directory. Missing parent directories are created with it, as ``mkdir -p`` (and
    Ansible's ``file: state=directory``, pyinfra's ``files.directory``) does: mode 0755 less
    the umask, owned by the user commands run as (root with become); ``mode``, ``owner`` and
    ``group`` are for the directory itself. A parent declared as a Directory of its own is
    made first (the planner orders them). Deleting it removes it with its contents (the plan
    says so), not the parents it made."""
    replace_refused = (
        'replacing a directory would delete everything in it, including what other '
        'resources manage; replace the files in it instead.')

    name = "directory"
    kind = "directory"
    schema = Schema({
        "path": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                     description="absolute path of the directory (in normal form)"),
        **_OWNERSHIP,
    })

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """Its path (in normal form): objects under it depend on the nearest directory."""
        path = attrs.get("path")
        if isinstance(path, str) and is_known(path):
            return [("dir", os.path.normpath(path))]
        return []

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return "with everything in it"

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action is Action.DELETE:
            return ["the directory is deleted with everything in it; files not managed by "
                    "tectum are not restored later."]
        return []

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(paths=tuple(str(o["path"]) for o in objects))

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        facts = conn.stat_paths([o["path"] for o in objects])
        out: list[dict[str, Any] | None] = []
        for obj, fact in zip(objects, facts, strict=True):
            if fact is None:
                out.append(None)
            else:
                entry = {"path": obj["path"], **_ownership_of(fact, obj)}
                if fact.kind != "directory":
                    entry["_kind"] = fact.kind
                out.append(entry)
        return out

    #: ready creates on one host go out together where the connector can (SSH: one round trip)
    batches = True

    def _apply_batch(self, conn: Connector, changes: Sequence[ResourceChange],
                     there: set[str]) -> list[dict[str, Any] | None | Exception]:
        """Creates go out in one ``make_dirs`` call when the connector has one (SSH); every
        other change, or every change on a connector without it, is applied one by one. A
        directory made meanwhile (``there``) only gets the mode, owner and group asked for."""
        results: dict[str, dict[str, Any] | None | Exception] = {
            c.address: self._adopt(conn, c) for c in changes if c.address in there}
        rest = [c for c in changes if c.address not in results]
        results.update(zip((c.address for c in rest), self._make_batch(conn, rest),
                           strict=True))
        return [results[c.address] for c in changes]

    def _adopt(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | Exception:
        path = _path_of(change)
        after = dict(change.after or {})
        try:
            if any(after.get(k) is not None for k in ("mode", "owner", "group")):
                conn.set_attrs(path, mode=after.get("mode"), owner=after.get("owner"),
                               group=after.get("group"))
            _fill_ownership(conn, path, after, None)
        except ConnectorError as exc:
            return ApplyError(str(exc))
        return self.stored(after)

    def _make_batch(self, conn: Connector, changes: Sequence[ResourceChange]
                    ) -> list[dict[str, Any] | None | Exception]:
        make_many = getattr(conn, "make_dirs", None)
        creates = [c for c in changes if make_many is not None and c.action is Action.CREATE]
        if not creates:
            return HostType.apply_batch(self, conn, changes)
        assert make_many is not None
        items = [(_path_of(c), (c.after or {}).get("mode"), (c.after or {}).get("owner"),
                  (c.after or {}).get("group")) for c in creates]
        return self._finish_batch(conn, changes, creates, make_many(items))

    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        path = _path_of(change)
        try:
            if change.action is Action.DELETE:
                conn.remove(path, recursive=True)
                return None
            after = dict(change.after or {})
            if change.action in (Action.CREATE, Action.REPLACE):
                if change.action is Action.REPLACE and change.before is not None:
                    conn.remove(str(change.before["path"]), recursive=True)
                conn.make_dir(path, mode=after.get("mode"), owner=after.get("owner"),
                              group=after.get("group"))
            else:
                self._apply_ownership(conn, path, change.changes, after)
        except ConnectorError as exc:
            raise ApplyError(str(exc)) from None
        # a replace made a new object: what the old one had says nothing about it
        _fill_ownership(conn, path, after,
                        None if change.action is Action.REPLACE else change.before)
        return self.stored(after)


class SymlinkType(_PathType):
    """A symbolic link at ``path`` pointing to ``target`` (replaced atomically)."""

    #: applied through _PathType.apply_batch, which sees a link made meanwhile
    batches = True
    name = "symlink"
    kind = "symlink"
    schema = Schema({
        "path": Attr(str, required=True, identity=True, force_new=True, validate=_abs_path,
                     description="absolute path of the link (in normal form)"),
        "target": Attr(str, required=True, validate=_link_target,
                       description="what the link points to"),
    })

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(paths=tuple(str(o["path"]) for o in objects))

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        facts = conn.stat_paths([o["path"] for o in objects])
        out: list[dict[str, Any] | None] = []
        for obj, fact in zip(objects, facts, strict=True):
            if fact is None:
                out.append(None)
            elif fact.kind != "symlink":
                out.append({"path": obj["path"], "_kind": fact.kind})
            else:
                out.append({"path": obj["path"], "target": fact.target})
        return out

    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        path = _path_of(change)
        try:
            if change.action is Action.DELETE:
                conn.remove(path)
                return None
            after = dict(change.after or {})
            if any(c.name == "kind" and c.before == "directory" for c in change.changes):
                raise ApplyError(f"{path} is a directory; tectum does not replace a directory "
                                 "with a symlink. Remove it by hand or manage it as a directory.")
            if change.action is Action.REPLACE and change.before is not None \
                    and change.before.get("path") not in (None, path):
                conn.remove(str(change.before["path"]))
            conn.make_symlink(path, str(after["target"]))
        except ConnectorError as exc:
            raise ApplyError(str(exc)) from None
        return self.stored(after)
