"""``cron``: a cron job in a file of its own in ``/etc/cron.d``.

One resource is one file, ``/etc/cron.d/<name>`` (the resource's ``name``), holding the
``env`` variables and one entry line. The attribute names are those of Ansible's ``cron``
module (``minute``, ``hour``, ``day``, ``month``, ``weekday``, ``special_time``, ``user``,
``job``, ``env`` — a mapping here; Ansible's ``cron_file`` is the ``name``), its ``state`` is
``ensure`` (``present``/``absent``) as in tectum's other host types. The schedule fields
default to ``*``; ``special_time`` (``@reboot``, ``@daily``...) replaces them.

Everything cron would silently ignore or misread is a diagnostic when the stack is checked
(``validate``/``plan``), as crontab(5) of Debian's cron defines it:

* the file name: cron skips files in ``/etc/cron.d`` whose names hold anything but letters,
  digits, ``_`` and ``-`` (run-parts' rule: no ``.``, so no ``backup.conf``);
* each schedule field: ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists
  ``1,15,30``, and in ``month``/``weekday`` the names ``jan``..``dec`` and ``sun``..``sat``
  (any case, also in ranges and lists: Debian's parser takes them, though crontab(5) says
  otherwise); every number in its field's range (minute 0-59, hour 0-23, day 1-31, month
  1-12, weekday 0-7, 0 and 7 both Sunday); a step after a single number (``5/10``, which
  cronie reads but Debian's cron refuses) is refused with the range to write; a backwards
  range (``22-2``), which Debian's cron takes and then never matches, is refused too;
* ``job``: one line; an unescaped ``%`` is refused (cron turns it into a newline and feeds
  the rest to the command's standard input: ``date +%F`` would break); write ``\\%``;
* ``env``: names ``[A-Za-z_][A-Za-z0-9_]*``, one-line values (written quoted, so
  ``MAILTO=""`` and values with spaces at either end keep their meaning).

The file is root-owned and 0644 — cron ignores a cron.d file that is not owned by root or that
group or others may write — so its ``mode``, ``owner`` and ``group`` are managed: a hand-made
``chmod`` is drift. A ``user`` that is no account on the host is a plan-time diagnostic
(:attr:`~tectum.providers.host.base.HostType.account_attrs`, read in the host's fact round
trip) unless a ``User`` of the stack makes it — the job then waits for it (an implicit
dependency); the apply checks again (``getent``) before it writes the file.

Shapes: desired (after :meth:`CronType.prepare`) and stored: ``{"name", "ensure",
"special_time", "minute", "hour", "day", "month", "weekday", "user", "job", "env",
"content_sha256", "mode", "owner", "group"}`` (the schedule fields None with a
``special_time``; ``env`` a dict, ``{}`` when unset). Observed (:meth:`CronType.read`): the
same, parsed back from the file (:func:`parse`; a file with other or more lines shows up as a
``content`` change), ``{"name", "ensure": "absent"}`` when there is no file. Reads are one
content fact per file in the host's fact round trip; the ``cron`` daemon need not run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import ConnectorError, FactRequest
from tectum.providers.host.files import not_encodable
from tectum.providers.host.users import valid_account_name
from tectum.schema import Attr, Schema
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.providers.host.connector import Connector

CRON_DIR = "/etc/cron.d"
HEADER = "# Managed by tectum: changes made here are overwritten.\n"
#: what cron requires of a cron.d file (owned by root, not writable by group or others)
MODE, OWNER, GROUP = "0644", "root", "root"
#: Ansible's ``special_time`` choices
SPECIAL_TIMES = ("annually", "daily", "hourly", "monthly", "reboot", "weekly", "yearly")
FIELDS = ("minute", "hour", "day", "month", "weekday")
_MONTHS = {m: i + 1 for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
#: field → (lowest, highest, names)
_RANGES: dict[str, tuple[int, int, Mapping[str, int]]] = {
    "minute": (0, 59, {}), "hour": (0, 23, {}), "day": (1, 31, {}),
    "month": (1, 12, _MONTHS), "weekday": (0, 7, _DAYS)}
_FILE_NAME = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNESCAPED_PERCENT = re.compile(r"(?<!\\)%")
_ENV_LINE = re.compile(r"\s*([^=\s]+)\s*=\s*(.*?)\s*")
#: the stored attributes besides the settable ones
_COMPUTED = ("content_sha256", "mode", "owner", "group")


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and not is_known(value)


def _valid_file_name(value: Any) -> str | None:
    if not isinstance(value, str) or _is_token(value):
        return None
    if not _FILE_NAME.fullmatch(value) or len(value) > 200:
        return (f"{value!r} cannot name a file in /etc/cron.d: cron ignores files whose names "
                "hold anything but letters, digits, _ and - (no dots), up to 200 characters; "
                f"e.g. {re.sub(r'[^A-Za-z0-9_-]+', '-', value)[:200].strip('-') or 'backup'!r}")
    return None


def _number(text: str, field: str) -> int | str:
    """The number ``text`` stands for in ``field`` (digits, or a name), or why it is none."""
    low, high, names = _RANGES[field]
    if text.isascii() and text.isdigit():
        value = int(text)
    elif text.lower() in names:
        return names[text.lower()]
    else:
        known = f" or a name ({', '.join(names)})" if names else ""
        return f"{text!r} is not a number{known}"
    if not low <= value <= high:
        return f"{value} is out of range ({low}-{high})"
    return value


def field_problem(field: str, value: Any) -> str | None:
    """Why ``value`` is not a valid ``field`` (``minute``...) of a cron entry (see the module
    docstring), or None."""
    if isinstance(value, bool) or _is_token(value):
        return None
    if not isinstance(value, (str, int)):
        return None  # the type check reports it
    text = str(value)
    if not text:
        return "must not be empty (\"*\" is every value)"
    if any(c.isspace() for c in text) or "\x00" in text:
        return f"{text!r} must not contain spaces (a list is written 1,15,30)"
    low, high, _ = _RANGES[field]
    for item in text.split(","):
        if not item:
            return f"{text!r} has an empty item (a doubled or trailing comma)"
        span, slash, step = item.partition("/")
        if slash:
            if not (step.isascii() and step.isdigit()) or int(step) == 0:
                return f"{item!r}: the step after / must be a whole number of at least 1"
            if span != "*" and "-" not in span:
                return (f"{item!r}: cron takes a step only after * or a range: write "
                        f"\"{span}-{high}/{step}\" or \"*/{step}\"")
        if span == "*":
            continue
        first, dash, last = span.partition("-")
        ends: list[int] = []
        for part in (first, last) if dash else (first,):
            got = _number(part, field)
            if isinstance(got, str):
                return f"{item!r}: {got}"
            ends.append(got)
        if dash and field == "weekday" and ends[1] == 0 and ends[0] > 0:
            return (f"{item!r}: the range runs backwards (Sunday is 0), and cron would never "
                    f"match it; write \"{first}-7\" (7 is Sunday too)")
        if dash and ends[0] > ends[1]:
            return (f"{item!r}: the range runs backwards, and cron would never match it (it "
                    f"does not wrap around); write two ranges, e.g. "
                    f"\"{first}-{high},{low}-{last}\"")
    return None


def _field_validator(field: str) -> Any:
    return lambda value: field_problem(field, value)


def _valid_job(value: Any) -> str | None:
    if not isinstance(value, str) or _is_token(value):
        return None
    if not value.strip():
        return "must not be empty"
    if "\n" in value or "\r" in value or "\x00" in value:
        return "must be one line (put a longer script in a file and run that)"
    if _UNESCAPED_PERCENT.search(value):
        return ("holds an unescaped %, which cron turns into a newline (and passes the rest "
                "to the command's standard input): write \\% for a percent sign, e.g. "
                "date +\\%F")
    return not_encodable(value)


def _valid_env(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            return (f"{key!r} is not a variable name (letters, digits and _, not starting "
                    "with a digit)")
        if not isinstance(item, str):
            return f"the value of {key} must be a string, got {type(item).__name__}"
        if _is_token(item):
            continue
        if "\n" in item or "\r" in item or "\x00" in item:
            return f"the value of {key} must be one line"
        if '"' in item and "'" in item:
            return (f"the value of {key} holds both kinds of quotes, which cron cannot read "
                    "back in one value")
        problem = not_encodable(item)
        if problem is not None:
            return f"the value of {key} {problem}"
    return None


def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


def render(attrs: Mapping[str, Any]) -> str:
    """The text of the cron.d file of ``attrs`` (prepared: every field set)."""
    lines = [HEADER]
    env = attrs.get("env") or {}
    for key in sorted(env):
        lines.append(f"{key}={_quote(str(env[key]))}\n")
    special = attrs.get("special_time")
    when = f"@{special}" if special else " ".join(str(attrs[f]) for f in FIELDS)
    lines.append(f"{when} {attrs['user']} {attrs['job']}\n")
    return "".join(lines)


def parse(text: str) -> tuple[dict[str, Any], int]:
    """The attributes a cron.d file's ``text`` sets — ``special_time``, the five fields,
    ``user``, ``job`` (of its first entry line) and ``env`` — and how many entry lines it
    has. Lines as cron reads them: comments and blank lines skipped, ``NAME = value`` an
    assignment (matching outer quotes removed), anything else an entry."""
    env: dict[str, str] = {}
    entries: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ENV_LINE.fullmatch(line)
        if m is not None:
            value = m.group(2)
            if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
                value = value[1:-1]
            env[m.group(1)] = value
            continue
        entries.append(line)
    out: dict[str, Any] = {"special_time": None, **dict.fromkeys(FIELDS), "user": None,
                           "job": None, "env": env}
    if entries:
        first = entries[0]
        if first.startswith("@"):
            parts = first[1:].split(None, 2)
            out["special_time"] = parts[0] if parts else ""
            rest = parts[1:]
        else:
            parts = first.split(None, 6)
            out.update(zip(FIELDS, parts[:5]))
            rest = parts[5:]
        if rest:
            out["user"] = rest[0]
        if len(rest) > 1:
            out["job"] = rest[1].strip()
    return out, len(entries)


def _path(name: str) -> str:
    return f"{CRON_DIR}/{name}"


def _absent(name: str) -> dict[str, Any]:
    return {"name": name, "ensure": "absent"}


class CronType(HostType):
    """A cron job in ``/etc/cron.d/<name>`` (see the module docstring):
    ``Cron("backup", minute="*/15", job="/usr/local/bin/backup")``."""

    name = "cron"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True,
                     validate=_valid_file_name,
                     description="the file in /etc/cron.d (letters, digits, _ and -)"),
        "ensure": Attr(str, default="present", choices=("present", "absent"),
                       description="whether the file exists"),
        **{f: Attr((str, int), validate=_field_validator(f), description=(
            f"the {f} field of the schedule (default \"*\"): numbers, ranges, steps and "
            "lists" + (", or names" if f in ("month", "weekday") else "")))
           for f in FIELDS},
        "special_time": Attr(str, choices=SPECIAL_TIMES, description=(
            "instead of the five fields: @reboot, @hourly, @daily, @weekly, @monthly, "
            "@yearly (= @annually)")),
        "user": Attr(str, default="root", validate=valid_account_name,
                     description="the user the job runs as"),
        "job": Attr(str, validate=_valid_job,
                    description="the command line, run by /bin/sh (\\% for a percent sign)"),
        "env": Attr(dict, validate=_valid_env, description=(
            "variables set at the top of the file, e.g. {\"MAILTO\": \"ops@example.com\"}")),
        "content_sha256": Attr(str, computed=True, description="SHA-256 of the file's text"),
        "mode": Attr(str, computed=True, description="the file's mode (0644)"),
        "owner": Attr(str, computed=True, description="the file's owner (root)"),
        "group": Attr(str, computed=True, description="the file's group (root)"),
    })
    stored_computed = _COMPUTED
    #: a ``user`` that is no account on the host is reported at plan time (HostType.missing)
    account_attrs = {"user": "user"}
    labels = {"content_sha256": "content"}
    text_attrs = frozenset({"content"})

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        problems = []
        if attrs.get("special_time") is not None:
            set_fields = [f for f in FIELDS if attrs.get(f) is not None]
            if set_fields:
                problems.append(f"special_time replaces the schedule fields: remove "
                                f"{', '.join(set_fields)}, or special_time.")
        if attrs.get("ensure", "present") != "absent" and attrs.get("job") is None:
            problems.append("Set job (the command line to run).")
        return problems

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Fill the defaults (``*``, ``root``, ``{}``), write fields as strings, strip the
        job, and add the file's digest, mode and owner. Raises ``ValueError`` for a field
        that is invalid once its references are resolved."""
        out = super().prepare(attrs, base_dir)
        out["env"] = dict(out.get("env") or {})
        if out.get("ensure") == "absent":
            return {"name": out.get("name"), "ensure": "absent"}
        special = out.get("special_time")
        for f in FIELDS:
            value = out.get(f)
            if special is not None:
                out[f] = None
                continue
            value = "*" if value is None else str(value)
            problem = field_problem(f, value)
            if problem is not None:
                raise ValueError(f"Attribute {f!r}: {problem}")
            out[f] = value
        out.setdefault("special_time", None)
        if isinstance(out.get("job"), str):
            out["job"] = out["job"].strip()
        if is_known([out.get(k) for k in ("name", "user", "job", "env", *FIELDS)]):
            out["content_sha256"] = hashlib.sha256(render(out).encode()).hexdigest()
        out.update(mode=MODE, owner=OWNER, group=GROUP)
        return out

    def describe(self, attrs: dict[str, Any]) -> str:
        return _path(str(attrs.get("name", "")))

    def sweep_interrupted(self, target: Connector,
                          identities: Sequence[dict[str, Any]]) -> None:
        """Remove the temporary files a killed run's atomic writes left in /etc/cron.d (cron
        skips them anyway: their names hold dots)."""
        paths = [_path(str(i["name"])) for i in identities if isinstance(i.get("name"), str)]
        if paths:
            target.sweep_temp(paths)

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """Its file: a ``file`` resource at the same path is the same object."""
        name = attrs.get("name")
        return ("path", _path(name) if isinstance(name, str) else name)

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """The user the job runs as, when it is a ``user`` of this stack."""
        user = attrs.get("user")
        return [[("user", user)]] if isinstance(user, str) else []

    # -- refresh -------------------------------------------------------------------------
    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        return FactRequest(content=tuple(_path(str(o["name"])) for o in objects))

    def read(self, target: Connector, items: Sequence[ReadItem]
             ) -> list[dict[str, Any] | None]:
        """The files of every item, in one pass. A missing file is None for an object that
        left the configuration (nothing to delete), else ``ensure: absent``."""
        found = self.read_objects(target, [i.attrs for i in items])
        return [obs if obs is not None or item.desired is None
                else _absent(str(item.attrs["name"]))
                for item, obs in zip(items, found, strict=True)]

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        facts = conn.stat_paths([_path(str(o["name"])) for o in objects], content=True)
        out: list[dict[str, Any] | None] = []
        for obj, fact in zip(objects, facts, strict=True):
            if fact is None:
                out.append(None)
                continue
            name = str(obj["name"])
            if fact.kind != "file":
                out.append({"name": name, "ensure": "present", "_kind": fact.kind,
                            "mode": fact.mode, "owner": fact.owner, "group": fact.group})
                continue
            data = fact.content or b""
            fields, _entries = parse(data.decode("utf-8", "replace"))
            out.append({"name": name, "ensure": "present", **fields,
                        "content_sha256": hashlib.sha256(data).hexdigest(),
                        "mode": fact.mode, "owner": fact.owner, "group": fact.group,
                        "_content": data})
        return out

    def exists(self, observed: dict[str, Any]) -> bool:
        return bool(observed.get("ensure", "present") != "absent")

    def display(self, observed: dict[str, Any]) -> dict[str, Any]:
        """The old text, for the plan's line diff."""
        return {"before_content": observed["_content"]} if "_content" in observed else {}

    # -- plan ----------------------------------------------------------------------------
    def plan(
        self,
        desired: dict[str, Any],
        observed: dict[str, Any] | None,
        prior: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        """``ensure="absent"``: UPDATE (``ensure`` present → absent) when the file is there,
        else NOOP. Present: no file → CREATE; something else than a file at the path →
        REPLACE; otherwise the attributes that differ — the schedule, ``user``, ``job``,
        ``env`` as parsed from the file, ``content`` when only the rest of the text differs
        (comments, more lines), and ``mode``/``owner``/``group``."""
        present = observed is not None and self.exists(observed)
        if desired.get("ensure") == "absent":
            if present:
                return Action.UPDATE, [AttrChange("ensure", "present", "absent")]
            return Action.NOOP, []
        if observed is None or not present:
            return Action.CREATE, [AttrChange("content", None, _text_of(desired))]
        if observed.get("_kind"):
            return Action.REPLACE, [AttrChange("kind", observed["_kind"], "file",
                                               force_new=True)]
        return self._changes(desired, observed)

    def _changes(self, desired: dict[str, Any], observed: dict[str, Any]
                 ) -> tuple[Action, list[AttrChange]]:
        changes = [AttrChange(k, observed.get(k), desired.get(k))
                   for k in ("special_time", *FIELDS, "user", "job", "env")
                   if desired.get(k) != observed.get(k)]
        if not changes and desired.get("content_sha256") != observed.get("content_sha256"):
            old = observed.get("_content")
            changes.append(AttrChange(
                "content", old.decode("utf-8", "replace") if isinstance(old, bytes) else None,
                _text_of(desired)))
        changes += [AttrChange(k, observed.get(k), desired.get(k))
                    for k in ("mode", "owner", "group") if desired.get(k) != observed.get(k)]
        return (Action.UPDATE if changes else Action.NOOP), changes

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return f"removes {_path(str(prior.get('name')))}"

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """Write the file (atomically, root-owned 0644) after checking that ``user`` exists,
        or remove it. Raises :class:`ApplyError`."""
        try:
            if change.action is Action.DELETE:
                conn.remove(_path(str((change.prior or change.before or {})["name"])))
                return None
            after = dict(change.after or {})
            name = str(after["name"])
            path = _path(name)
            old = (change.before or {}).get("name") or (change.prior or {}).get("name")
            if change.action is Action.REPLACE and old and old != name:
                conn.remove(_path(str(old)))
            if after.get("ensure") == "absent":
                conn.remove(path)
                return self.stored(_absent(name))
            names = {c.name for c in change.changes}
            if change.action in (Action.CREATE, Action.REPLACE) \
                    or names - {"mode", "owner", "group"}:
                # values that were references at plan time are checked only now
                for key in FIELDS:
                    problem = field_problem(key, after.get(key)) \
                        if after.get(key) is not None else None
                    if problem is not None:
                        raise ApplyError(f"{path}: attribute {key!r}: {problem}")
                self._check_user(conn, str(after["user"]))
                if "kind" in names:
                    conn.remove(path)
                conn.write_file(path, render(after).encode(), mode=MODE, owner=OWNER,
                                group=GROUP)
            elif names:
                conn.set_attrs(path, mode=MODE if "mode" in names else None,
                               owner=OWNER if "owner" in names else None,
                               group=GROUP if "group" in names else None)
        except ConnectorError as exc:
            raise ApplyError(str(exc)) from None
        after["content_sha256"] = hashlib.sha256(render(after).encode()).hexdigest()
        return self.stored(after)

    @staticmethod
    def _check_user(conn: Connector, user: str) -> None:
        result = conn.run(("getent", "passwd", "--", user), mutating=False)
        if result.returncode == 2:
            raise ApplyError(f"user {user!r} does not exist on {conn.host}: cron would not run "
                             "the job. Create it (a User resource: the job waits for it), or "
                             "set user to an existing account")
        if not result.ok:
            raise ApplyError(f"cannot check that user {user!r} exists on {conn.host}: "
                             f"getent exited with code {result.returncode}")


def _text_of(desired: Mapping[str, Any]) -> str | None:
    try:
        return render(desired)
    except KeyError:
        return None
