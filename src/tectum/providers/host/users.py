"""``user`` and ``group``: local accounts on a host (``/etc/passwd``, ``/etc/group``).

Reading follows decision 3 of the design (reads are batched): one read-only command per host
(``getent passwd`` and ``getent group``, run together through the connector) reports every
account, so a no-op run costs one round trip however many users and groups a stack declares.
Python's :mod:`pwd`/:mod:`grp` are deliberately not used: the same code must work over SSH.

Changes are made with the shadow-utils tools (``useradd``/``usermod``/``userdel`` and
``groupadd``/``groupmod``/``groupdel``), always as argument lists with ``--`` before the account
name, so a name can never be read as an option. Each runs inside one fixed ``sh`` script that
gets the tool's arguments as positional parameters (``"$@"``: no value is ever shell code) and,
when the tool succeeded, reads every account back in the same round trip. Attribute semantics
follow Ansible's ``user``/``group`` modules (``groups`` managed exactly as with
``append: false``; ``create_home`` default true; ``remove_home`` only on removal; the home
directory is not moved when ``home`` changes, as with Ansible's default ``move_home: false``) and
Puppet's ``ensure => present|absent``.

Read result shapes (never None, so the plan can tell "absent" from "not read"):

* user: ``{"name", "ensure": "present", "uid", "group", "groups", "home", "shell", "comment"}``
  (``group`` is the primary group's name, ``groups`` the sorted supplementary group names), or
  ``{"name", "ensure": "absent"}``; plus the object's own ``remove_home`` when it holds one
  (not observable, but a later delete needs it in state).
* group: ``{"name", "ensure": "present", "gid"}`` or ``{"name", "ensure": "absent"}``.

Failures raise :class:`~tectum.providers.base.ApplyError` with the tool's exit code and the tail
of its error output.
"""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import FactRequest
from tectum.providers.host.files import path_problem
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import CommandResult, Connector

# -- validation ----------------------------------------------------------------------------

#: POSIX-portable account name as shadow-utils accepts it by default (``$`` only at the end,
#: for Samba machine accounts); never starts with ``-``, so it cannot look like an option.
_NAME_RE = re.compile(r"[a-z_][a-z0-9_-]*[$]?")
_NAME_MAX = 32
#: 2**32 - 1 is ``(uid_t) -1``, which means "no change" to chown(2) and is never a real id.
_ID_MAX = 2**32 - 2


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and not is_known(value)


def valid_account_name(value: Any) -> str | None:
    """Validator for user and group names: ``[a-z_][a-z0-9_-]*[$]?``, at most 32 characters."""
    if not isinstance(value, str):
        return "must be a string"
    if _is_token(value):
        return None
    if not value:
        return "must not be empty"
    if len(value) > _NAME_MAX:
        return f"must be at most {_NAME_MAX} characters long (got {len(value)})"
    if not _NAME_RE.fullmatch(value):
        return (f"{value!r} is not a valid account name: it must start with a lower-case letter "
                "or '_' and hold only lower-case letters, digits, '_' and '-' (and optionally "
                "end with '$')")
    return None


def _valid_names(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list of group names"
    for item in value:
        problem = valid_account_name(item)
        if problem is not None:
            return f"item {item!r}: {problem}"
    return None


def _valid_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= _ID_MAX:
        return f"must be between 0 and {_ID_MAX}"
    return None


#: bytes of one passwd field; shadow-utils fails to write an entry longer than about 32 KiB
_FIELD_MAX = 16384


def _valid_field(value: Any) -> str | None:
    """A passwd field: ':' separates fields and a newline separates entries; shadow-utils
    refuses to write control characters, and the entries are read back as UTF-8 text split
    into lines (so no other line separators either)."""
    if not isinstance(value, str) or _is_token(value):
        return None
    if any(c in value for c in ":\n\r\x00"):
        return "must not contain ':', a newline or a NUL byte"
    for i, c in enumerate(value):
        if "\ud800" <= c <= "\udfff":
            return (f"must be text that encodes as UTF-8: {c!r} at position {i} is a lone "
                    "surrogate (an undecodable byte?)")
        if unicodedata.category(c) in ("Cc", "Zl", "Zp"):
            return (f"must not contain control characters or line separators ({c!r} at "
                    f"position {i})")
    size = len(value.encode("utf-8"))
    if size > _FIELD_MAX:
        return f"must be at most {_FIELD_MAX} bytes long; it has {size}"
    return None


def _valid_abs_path(value: Any) -> str | None:
    if not isinstance(value, str) or _is_token(value):
        return None
    if not value.startswith("/"):
        return "must be an absolute path (starting with /)"
    return _valid_field(value) or path_problem(value)


_ENSURE = Attr(str, default="present", choices=("present", "absent"),
               description="\"present\" (default) or \"absent\"")


# -- reading -------------------------------------------------------------------------------

class _Passwd(NamedTuple):
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


class _Group(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


class _Accounts:
    """Users and groups by name, with the gid → name and member → groups indexes built once."""

    def __init__(self, users: dict[str, _Passwd], groups: dict[str, _Group]) -> None:
        self.users = users
        self.groups = groups
        self._gid_names: dict[int, str] = {}
        self._member_of: dict[str, list[str]] = {}
        for group in groups.values():
            self._gid_names.setdefault(group.gid, group.name)
            for member in group.members:
                self._member_of.setdefault(member, []).append(group.name)

    def group_name(self, gid: int) -> str:
        return self._gid_names.get(gid, str(gid))

    def supplementary(self, user: str) -> list[str]:
        return sorted(set(self._member_of.get(user, ())))


_SEPARATOR = "-"  # a line no passwd/group entry can be (entries always hold ':')


def _accounts_argv(*, users: bool) -> tuple[str, ...]:
    script = ("getent passwd && echo " + _SEPARATOR + " && getent group") if users \
        else "getent group"
    return ("/bin/sh", "-c", script)


def _read_accounts(conn: Connector, *, users: bool) -> _Accounts:
    """All accounts in one read-only command (``getent`` also sees NSS sources beyond files;
    the first entry for a name wins, as with ``getent NAME``). Raises :class:`ApplyError` when
    the command fails."""
    argv = _accounts_argv(users=users)
    script = argv[-1]
    result = conn.run(argv, mutating=False)
    accounts = _parse_accounts(result.stdout, users=users) if result.ok else None
    if accounts is None:
        raise ApplyError(f"cannot read accounts on {conn.host}: `{script}` exited with code "
                         f"{result.returncode}: {result.error_text()}")
    return accounts


def _parse_accounts(stdout: bytes, *, users: bool) -> _Accounts | None:
    """``getent passwd`` + separator + ``getent group`` (``users``), or ``getent group``
    alone, as parsed accounts; None when the separator is missing."""
    # split on newlines only: a comment may hold other line separators (U+2028, \x1c...)
    lines = stdout.decode("utf-8", "surrogateescape").split("\n")
    if users and _SEPARATOR not in lines:
        return None
    cut = lines.index(_SEPARATOR) if users else 0
    passwd_lines, group_lines = lines[:cut], lines[cut + 1 if users else 0:]
    passwd: dict[str, _Passwd] = {}
    for line in passwd_lines:
        fields = line.split(":")
        if len(fields) != 7 or fields[0] in passwd:
            continue
        try:
            passwd[fields[0]] = _Passwd(fields[0], int(fields[2]), int(fields[3]), fields[4],
                                        fields[5], fields[6])
        except ValueError:
            continue
    groups: dict[str, _Group] = {}
    for line in group_lines:
        fields = line.split(":")
        if len(fields) != 4 or fields[0] in groups:
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        members = tuple(m for m in fields[3].split(",") if m)
        groups[fields[0]] = _Group(fields[0], gid, members)
    return _Accounts(passwd, groups)


def _user_facts(name: str, accounts: _Accounts) -> dict[str, Any]:
    entry = accounts.users.get(name)
    if entry is None:
        return {"name": name, "ensure": "absent"}
    return {
        "name": name,
        "ensure": "present",
        "uid": entry.uid,
        "group": accounts.group_name(entry.gid),
        "groups": accounts.supplementary(name),
        "home": entry.home,
        "shell": entry.shell,
        "comment": entry.gecos,
    }


def _group_facts(name: str, accounts: _Accounts) -> dict[str, Any]:
    entry = accounts.groups.get(name)
    if entry is None:
        return {"name": name, "ensure": "absent"}
    return {"name": name, "ensure": "present", "gid": entry.gid}


# -- running the tools ---------------------------------------------------------------------

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _account_lock(conn: Connector) -> threading.Lock:
    """One lock per host: shadow-utils lock ``/etc/passwd`` and ``/etc/group`` and fail (rather
    than wait) when another tool holds them, so account changes on a host run one at a time."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(conn.host)
        if lock is None:
            lock = _LOCKS[conn.host] = threading.Lock()
        return lock


_LOCK_BUSY = ("cannot lock", "try again later")
_RETRIES = 6


#: marks where a tool run's read-back of the accounts starts in its output
_ACCOUNTS_MARK = "tectum-accounts"

# A shadow-utils tool ("$@" after $1) and, when it succeeded, every account (read as
# _read_accounts reads them): a change and its read-back in one round trip. $1, when not empty,
# is a group name the tool gets as "-g $1" if that group exists on the host at that moment.
_TOOL_SCRIPT = """\
g=$1; shift
if [ -n "$g" ] && getent group -- "$g" >/dev/null 2>&1; then
  t=$1; shift; set -- "$t" -g "$g" "$@"
fi
"$@"; rc=$?
if [ "$rc" -eq 0 ]; then
  echo """ + _ACCOUNTS_MARK + " && " + _accounts_argv(users=True)[-1] + """
fi
exit "$rc"
"""


class _ToolRun(NamedTuple):
    result: CommandResult
    tool: str
    #: the accounts as read right after a successful run (None: failed, or unreadable)
    accounts: _Accounts | None


def _run_tool(conn: Connector, argv: list[str], *, group_if_exists: str = "") -> _ToolRun:
    """Run a shadow-utils tool and read the accounts back in the same round trip, retrying a
    few times when another process (``apt`` running ``adduser``, say) holds the account files'
    lock. With ``group_if_exists``, the tool gets ``-g NAME`` when that group exists on the host
    (decided there, in the same command)."""
    wrapped = ["/bin/sh", "-c", _TOOL_SCRIPT, "tectum-account", group_if_exists, *argv]
    result = conn.run(wrapped, mutating=True)
    attempt = 1
    while not result.ok and attempt < _RETRIES and any(
        s in result.error_text().lower() for s in _LOCK_BUSY
    ):
        time.sleep(0.25 * attempt)
        attempt += 1
        result = conn.run(wrapped, mutating=True)
    accounts = None
    if result.ok:
        _, mark, listing = (b"\n" + result.stdout).partition(
            b"\n" + _ACCOUNTS_MARK.encode() + b"\n")
        accounts = _parse_accounts(listing, users=True) if mark else None
    return _ToolRun(result, argv[0], accounts)


def _accounts_after(conn: Connector, last: _ToolRun | None) -> _Accounts:
    """The accounts as the last tool run read them back, or read now when it did not (no tool
    ran, or ``userdel``/``groupdel`` found nothing to remove)."""
    if last is not None and last.accounts is not None:
        return last.accounts
    return _read_accounts(conn, users=True)


def _tool_error(what: str, run: _ToolRun) -> ApplyError:
    tail = run.result.error_text()
    return ApplyError(f"{what}: {run.tool} exited with code {run.result.returncode}"
                      + (f": {tail}" if tail else ""))


#: exit code of userdel/groupdel/usermod/groupmod for "no such account"
_NOT_FOUND = 6


def _prior_of(change: ResourceChange) -> dict[str, Any]:
    return change.prior or {}


def _name_of(change: ResourceChange) -> str:
    for attrs in (change.after, change.before, change.prior):
        if attrs and isinstance(attrs.get("name"), str):
            return str(attrs["name"])
    raise ApplyError(f"{change.address}: no account name in the change")


def _is_present(observed: dict[str, Any] | None) -> bool:
    return observed is not None and observed.get("ensure", "present") == "present"


def _norm(key: str, value: Any) -> Any:
    """Canonical form for comparison: supplementary groups are a set (shown sorted)."""
    if key == "groups" and isinstance(value, list) and all(is_known(v) for v in value):
        return sorted(set(value))
    return value


class _AccountType(HostType):
    """What users and groups share: ensure present/absent, compared attributes, planning."""
    replace_refused = (
        'an account is not made anew by tectum (deleting it could orphan its files); '
        'change its attributes instead.')

    #: attributes compared with the world (the others act only on create or delete)
    compared: tuple[str, ...]

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        for key in self.compared:
            if out.get(key) is not None:
                out[key] = _norm(key, out[key])
        return out

    def managed(self, desired: dict[str, Any]) -> list[str]:
        return [k for k in self.compared if desired.get(k) is not None]

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        out: list[AttrChange] = []
        for key in self.managed(desired):
            want, have = _norm(key, desired[key]), observed.get(key)
            if want != have:
                out.append(AttrChange(key, have, want))
        return out

    def plan(
        self,
        desired: dict[str, Any],
        observed: dict[str, Any] | None,
        prior: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        """``ensure="present"`` and absent → CREATE (changes: every configured attribute);
        ``ensure="absent"`` and present → UPDATE with ``ensure: present → absent``; otherwise
        only the attributes the configuration sets are compared (an UPDATE, never a replace:
        the tools change ids in place). ``observed`` None counts as absent."""
        present = _is_present(observed)
        if desired.get("ensure", "present") == "absent":
            if present:
                return Action.UPDATE, [AttrChange("ensure", "present", "absent")]
            return Action.NOOP, []
        if not present or observed is None:
            return Action.CREATE, [AttrChange(k, None, _norm(k, desired[k]))
                                   for k in self.managed(desired)]
        changes = self.diff(desired, observed)
        return (Action.UPDATE if changes else Action.NOOP), changes


# -- user ----------------------------------------------------------------------------------

class UserType(_AccountType):
    account_attrs = {"group": "group", "groups": "group"}
    """A local user account, changed with ``useradd``/``usermod``/``userdel``.

    ``groups`` is managed exactly (a user is removed from supplementary groups not listed) and
    compared as a set. ``system`` and ``create_home`` only act when the user is created;
    ``remove_home`` only when it is removed (``userdel -r``; for a resource removed from the
    stack, the value recorded in state is used). Changing ``home`` does not move the old home.
    When ``group`` is not set and a group named like the user exists, the user is created with
    that group as its primary group (what ``USERGROUPS_ENAB`` would have created; Ansible uses
    ``-N`` here instead, which gives the ``users`` group).
    """

    name = "user"
    unobserved = frozenset({"remove_home", "create_home", "system"})
    compared = ("uid", "group", "groups", "home", "shell", "comment")
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True,
                     validate=valid_account_name, description="the login name"),
        "ensure": _ENSURE,
        "uid": Attr(int, validate=_valid_id, description="numeric user id"),
        "group": Attr(str, validate=valid_account_name, description="primary group name"),
        "groups": Attr(list, validate=_valid_names,
                       description="supplementary group names (exactly these)"),
        "home": Attr(str, validate=_valid_abs_path, description="home directory"),
        "shell": Attr(str, validate=_valid_abs_path, description="login shell"),
        "comment": Attr(str, validate=_valid_field, description="GECOS field (full name)"),
        "system": Attr(bool, default=False, description="create as a system account"),
        "create_home": Attr(bool, default=True, description="create the home on create"),
        "remove_home": Attr(bool, default=False,
                            description="remove the home and mail spool on removal"),
    })

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """Its name: files it owns depend on it."""
        name = attrs.get("name")
        return [("user", name)] if isinstance(name, str) else []

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """Its primary group and its supplementary groups."""
        groups = attrs.get("groups")
        names = [attrs.get("group"), *(groups if isinstance(groups, list) else [])]
        return [[("group", g)] for g in dict.fromkeys(names) if isinstance(g, str)]

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action is Action.DELETE and (change.prior or {}).get("remove_home"):
            return ["the user's home directory is removed with the user."]
        return []

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(commands=(_accounts_argv(users=True),) if objects else ())

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """Every user in one read-only command; see the module docstring for the shapes.
        ``remove_home`` is echoed from the object when it holds one."""
        if not objects:
            return []
        accounts = _read_accounts(conn, users=True)
        out: list[dict[str, Any] | None] = []
        for obj in objects:
            facts = _user_facts(str(obj["name"]), accounts)
            if obj.get("remove_home") is not None:
                # not observable, but needed in state for a later delete; the applier records
                # the read result as the state of a no-op resource
                facts["remove_home"] = obj["remove_home"]
            out.append(facts)
        return out

    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE → ``useradd``; UPDATE → ``usermod`` with the planned changes (or ``userdel``
        for ``ensure: absent``); DELETE → ``userdel`` (``-r`` when ``remove_home`` was set);
        REPLACE (the name changed) → ``userdel`` of the old name, then ``useradd``. Returns the
        account as re-read after the change plus the create/delete options."""
        name = _name_of(change)
        last: _ToolRun | None = None  # the last tool run, whose read-back is current
        with _account_lock(conn):
            if change.action is Action.DELETE:
                if change.before is None or _is_present(change.before):
                    self._delete(conn, name, bool(_prior_of(change).get("remove_home")))
                return None
            after = dict(change.after or {})
            if after.get("ensure", "present") == "absent":
                if change.before is None or _is_present(change.before):
                    last = self._delete(conn, name, bool(after.get("remove_home")))
            elif change.action is Action.CREATE:
                last = self._create(conn, after)
            elif change.action is Action.REPLACE:
                old = (change.prior or {}).get("name")
                if isinstance(old, str) and old != name:
                    last = self._delete(conn, old, bool(_prior_of(change).get("remove_home")))
                if _is_present(change.before):
                    last = self._modify(conn, name, after, [
                        c.name for c in self.diff(after, change.before or {})]) or last
                else:
                    last = self._create(conn, after)
            elif "ensure" in {c.name for c in change.changes}:
                last = self._create(conn, after)
            else:
                last = self._modify(conn, name, after, [c.name for c in change.changes])
            facts = _user_facts(name, _accounts_after(conn, last))
        want = after.get("ensure", "present")
        if facts["ensure"] != want:
            raise ApplyError(f"user {name} is {facts['ensure']} after the change; expected {want}")
        for key in ("system", "create_home", "remove_home"):
            facts[key] = after.get(key, self.schema.attrs[key].default)
        return self.stored(facts)

    def _create(self, conn: Connector, after: dict[str, Any]) -> _ToolRun:
        name = str(after["name"])
        argv = ["useradd"]
        if after.get("uid") is not None:
            argv += ["-u", str(after["uid"])]
        if after.get("group") is not None:
            argv += ["-g", str(after["group"])]
        if after.get("groups"):
            argv += ["-G", ",".join(_norm("groups", after["groups"]))]
        if after.get("home") is not None:
            argv += ["-d", str(after["home"])]
        if after.get("shell") is not None:
            argv += ["-s", str(after["shell"])]
        if after.get("comment") is not None:
            argv += ["-c", str(after["comment"])]
        if after.get("system"):
            argv.append("-r")
        argv.append("-m" if after.get("create_home", True) else "-M")
        argv += ["--", name]
        # no group given: a group named like the user, if the host has one, is the primary
        # group (useradd's USERGROUPS_ENAB would refuse to create it again)
        run = _run_tool(conn, argv,
                        group_if_exists="" if after.get("group") is not None else name)
        if not run.result.ok:
            raise _tool_error(f"cannot create user {name}", run)
        return run

    def _modify(self, conn: Connector, name: str, after: dict[str, Any],
                keys: Sequence[str]) -> _ToolRun | None:
        flags = {"uid": "-u", "group": "-g", "groups": "-G", "home": "-d", "shell": "-s",
                 "comment": "-c"}
        argv = ["usermod"]
        for key in keys:
            if key not in flags or after.get(key) is None:
                continue
            value = after[key]
            text = ",".join(_norm(key, value)) if key == "groups" else str(value)
            argv += [flags[key], text]
        if len(argv) == 1:
            return None
        argv += ["--", name]
        run = _run_tool(conn, argv)
        if not run.result.ok:
            raise _tool_error(f"cannot change user {name}", run)
        return run

    def _delete(self, conn: Connector, name: str, remove_home: bool) -> _ToolRun:
        argv = ["userdel", *(["-r"] if remove_home else []), "--", name]
        run = _run_tool(conn, argv)
        if not run.result.ok and run.result.returncode != _NOT_FOUND:
            raise _tool_error(f"cannot remove user {name}", run)
        return run


# -- group ---------------------------------------------------------------------------------

class GroupType(_AccountType):
    """A local group, changed with ``groupadd``/``groupmod``/``groupdel``.

    ``system`` only acts when the group is created. Removing a group that is some user's
    primary group fails (``groupdel`` refuses) with the tool's message.
    """

    name = "group"
    unobserved = frozenset({"system"})
    compared = ("gid",)
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True,
                     validate=valid_account_name, description="the group name"),
        "ensure": _ENSURE,
        "gid": Attr(int, validate=_valid_id, description="numeric group id"),
        "system": Attr(bool, default=False, description="create as a system group"),
    })

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """Its name: users and files that name it as their group depend on it."""
        name = attrs.get("name")
        return [("group", name)] if isinstance(name, str) else []

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(commands=(_accounts_argv(users=False),) if objects else ())

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """Every group in one read-only ``getent group``; see the module docstring."""
        if not objects:
            return []
        accounts = _read_accounts(conn, users=False)
        return [_group_facts(str(o["name"]), accounts) for o in objects]

    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE → ``groupadd``; UPDATE → ``groupmod -g`` (or ``groupdel`` for
        ``ensure: absent``); DELETE → ``groupdel``; REPLACE (the name changed) → ``groupdel`` of
        the old name, then ``groupadd``. Returns the group as re-read after the change."""
        name = _name_of(change)
        last: _ToolRun | None = None  # the last tool run, whose read-back is current
        with _account_lock(conn):
            if change.action is Action.DELETE:
                if change.before is None or _is_present(change.before):
                    self._delete(conn, name)
                return None
            after = dict(change.after or {})
            if after.get("ensure", "present") == "absent":
                if change.before is None or _is_present(change.before):
                    last = self._delete(conn, name)
            elif change.action is Action.REPLACE:
                old = (change.prior or {}).get("name")
                if isinstance(old, str) and old != name:
                    last = self._delete(conn, old)
                if _is_present(change.before):
                    last = self._modify(conn, name, after, [
                        c.name for c in self.diff(after, change.before or {})]) or last
                else:
                    last = self._create(conn, after)
            elif change.action is Action.CREATE or "ensure" in {c.name for c in change.changes}:
                last = self._create(conn, after)
            else:
                last = self._modify(conn, name, after, [c.name for c in change.changes])
            facts = _group_facts(name, _accounts_after(conn, last))
        want = after.get("ensure", "present")
        if facts["ensure"] != want:
            raise ApplyError(f"group {name} is {facts['ensure']} after the change; "
                             f"expected {want}")
        facts["system"] = after.get("system", False)
        return self.stored(facts)

    def _create(self, conn: Connector, after: dict[str, Any]) -> _ToolRun:
        name = str(after["name"])
        argv = ["groupadd"]
        if after.get("gid") is not None:
            argv += ["-g", str(after["gid"])]
        if after.get("system"):
            argv.append("-r")
        argv += ["--", name]
        run = _run_tool(conn, argv)
        if not run.result.ok:
            raise _tool_error(f"cannot create group {name}", run)
        return run

    def _modify(self, conn: Connector, name: str, after: dict[str, Any],
                keys: Sequence[str]) -> _ToolRun | None:
        if "gid" not in keys or after.get("gid") is None:
            return None
        run = _run_tool(conn, ["groupmod", "-g", str(after["gid"]), "--", name])
        if not run.result.ok:
            raise _tool_error(f"cannot change group {name}", run)
        return run

    def _delete(self, conn: Connector, name: str) -> _ToolRun:
        run = _run_tool(conn, ["groupdel", "--", name])
        if not run.result.ok and run.result.returncode != _NOT_FOUND:
            raise _tool_error(f"cannot remove group {name}", run)
        return run
