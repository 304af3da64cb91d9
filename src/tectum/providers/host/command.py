"""``command``: run a command on a host — once, or whenever its guard does not hold.

The model combines Terraform's ``terraform_data`` (a command with no guard runs when the
resource is created and again — a replace — when its arguments change) with the guards of
Ansible's ``command`` module (``creates``) and Puppet's ``exec`` (``unless``):

* ``creates``: an absolute path; while it exists the command is not run. After a run the path
  must exist, otherwise the apply fails (else the command would silently run on every apply).
* ``unless``: a command; when it exits 0 the command is not run. **It runs during plan**
  (refresh) to decide, so it must only look, never change anything: it is run with
  ``mutating=False`` and recorded as a read. It gets the same ``cwd``, ``environment`` and
  ``timeout`` as the command (as Puppet's ``exec`` does).

With both guards, either one holding skips the command (Puppet's rule); ``creates`` is checked
first and ``unless`` is not run when the path exists.

``command`` (and ``unless``) is a string, run by ``/bin/sh -c``, or a list, run as an argument
vector with no shell (arguments are passed byte-exact: ``;``, ``$`` or quotes are not special).
``environment`` is added to the connector's environment (which sets ``LC_ALL=C``).

Shapes: :meth:`CommandType.read` returns ``{"command", "_guard": True | False | None}`` per object
(``None``: no guard, or a guard that is not known before apply; ``_guard_detail`` says why),
plus the object's own ``creates``/``unless``/``cwd``/``environment``/``exit_code`` when given;
:meth:`CommandType.apply` returns ``{"command", "creates", "unless", "cwd", "environment",
"exit_code"}``. A failed run raises :class:`~tectum.providers.base.ApplyError` with the exit code
and the tail of the command's output.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import FactRequest
from tectum.providers.host.files import not_encodable, path_problem
from tectum.schema import Attr, Schema
from tectum.values import SECRET_SOURCES, is_known, refs_in

if TYPE_CHECKING:
    from tectum.providers.host.connector import CommandResult, Connector

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: attributes whose change makes an unguarded command run again (Terraform: ``triggers_replace``);
#: ``creates``/``unless`` count so that dropping a guard that always held runs the command once
_RERUN_ON = ("command", "cwd", "environment", "creates", "unless")
#: what is kept in state
_STORED = ("command", "creates", "unless", "cwd", "environment", "exit_code")
#: the ``after`` of the ``run`` change when the command will run
PENDING = "pending"
#: the ``after`` of the ``run`` change when the guard can only be evaluated during apply
PENDING_GUARD = "pending, unless the guard holds (known after apply)"
#: the ``after`` of the ``run`` change of a ``run_on`` command that nothing triggered
REFRESH_ONLY = "only when a run_on resource changes"


def _is_token(value: Any) -> bool:
    return isinstance(value, str) and not is_known(value)


def _valid_command(value: Any) -> str | None:
    if isinstance(value, str):
        if not value.strip():
            return "must not be empty"
        if "\x00" in value:
            return "must not contain a NUL byte"
        return not_encodable(value)
    if isinstance(value, list):
        if not value:
            return "must not be an empty list"
        for item in value:
            if not isinstance(item, str):
                return f"every item must be a string, got {item!r}"
            if "\x00" in item:
                return "items must not contain a NUL byte"
            problem = not_encodable(item)
            if problem is not None:
                return f"items {problem}"
        if value[0] == "":
            return "the program (first item) must not be empty"
        return None
    return "must be a string (run by /bin/sh -c) or a list of strings (run without a shell)"


def _valid_abs_path(value: Any) -> str | None:
    if not isinstance(value, str) or _is_token(value):
        return None
    if not value.startswith("/"):
        return "must be an absolute path (starting with /)"
    if "\x00" in value:
        return "must not contain a NUL byte"
    return path_problem(value)


def _valid_environment(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a mapping of variable names to strings"
    for key, item in value.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            return f"{key!r} is not a valid environment variable name"
        if not isinstance(item, str):
            return f"the value of {key} must be a string, got {item!r}"
        if "\x00" in item:
            return f"the value of {key} must not contain a NUL byte"
        problem = not_encodable(item)
        if problem is not None:
            return f"the value of {key} {problem}"
    return None


def _valid_timeout(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
        return "must be a positive number of seconds"
    return None


def argv_of(command: str | list[str]) -> list[str]:
    """A string runs through ``/bin/sh -c``; a list is the argument vector itself."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def _output_tail(result: CommandResult, limit: int = 600) -> str:
    """The last ``limit`` characters of the command's stderr (else stdout), secrets masked
    first: a cut through a secret would leave a piece that no masked form matches."""
    from tectum.masking import REDACTOR

    text = REDACTOR.redact(
        (result.stderr.strip() or result.stdout.strip()).decode("utf-8", "replace"))
    return text[-limit:] if len(text) > limit else text


def _has_guard(attrs: dict[str, Any]) -> bool:
    return attrs.get("creates") is not None or attrs.get("unless") is not None


class CommandType(HostType):
    """A command run on a host; see the module docstring for when it runs."""

    name = "command"
    side_effects = True
    deletable = False
    unobserved = frozenset(_STORED)
    schema = Schema({
        "command": Attr((str, list), required=True, validate=_valid_command,
                        description="a shell string (/bin/sh -c) or an argument list"),
        "creates": Attr(str, validate=_valid_abs_path,
                        description="absolute path; the command is not run while it exists"),
        "unless": Attr((str, list), validate=_valid_command,
                       description="a read-only check command; exit 0 skips the command"),
        "cwd": Attr(str, validate=_valid_abs_path, description="working directory"),
        "environment": Attr(dict, validate=_valid_environment,
                            description="extra environment variables"),
        "timeout": Attr(int, default=600, validate=_valid_timeout,
                        description="seconds before the command is stopped"),
        "refreshonly": Attr(bool, default=False, description=(
            "run only when a resource of run_on changed in the same apply (set by run_on; "
            "Puppet's refreshonly)")),
        "exit_code": Attr(int, computed=True, description="exit code of the last run"),
    })
    stored_computed = ("exit_code",)

    # -- configuration -------------------------------------------------------------------
    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Fill defaults; an empty ``environment`` is the same as none (so it does not count
        as a change of the command's arguments)."""
        out = super().prepare(attrs, base_dir)
        if out.get("environment") == {}:
            out["environment"] = None
        return out

    def check(self, attrs: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        command = attrs.get("command")
        problem = "is not set" if command is None else (
            None if _is_token(command) else _valid_command(command))
        if problem is not None:
            problems.append(f"command {problem}. Set command to a non-empty string (run by "
                            "/bin/sh -c) or a non-empty list of arguments (run without a "
                            "shell).")
        creates = attrs.get("creates")
        problem = _valid_abs_path(creates) if isinstance(creates, str) else None
        if isinstance(creates, str) and problem is not None:
            shown = repr(creates) if len(creates) <= 80 else f"{creates[:60]!r}..."
            problems.append(f"creates {problem}, got {shown}.")
        return problems

    def check_declared(self, attrs: dict[str, Any]) -> list[tuple[str, str]]:
        """A secret may not be an element of an argument list: the process list shows it."""
        argv = attrs.get("command")
        if isinstance(argv, list) and any(a in SECRET_SOURCES for a, _ in refs_in(argv)):
            return [("Secret in a command argument",
                     "A secret is an element of this command's argument list: every user of "
                     "the host could read it in the process list. Pass it in environment={...} "
                     "(the command reads $NAME), or write the command as a string, which runs "
                     "from a private file.")]
        return []

    def describe(self, attrs: dict[str, Any]) -> str:
        command = attrs.get("command")
        text = command if isinstance(command, str) else " ".join(map(str, command or []))
        return text if len(text) <= 60 else text[:57] + "..."

    # -- refresh -------------------------------------------------------------------------
    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        """The ``creates`` paths (``unless`` commands are the user's: they run on their own)."""
        return FactRequest(paths=tuple(
            str(o["creates"]) for o in objects
            if _has_guard(o) and o.get("creates") is not None
            and is_known([o.get("creates"), o.get("unless"), o.get("cwd"),
                          o.get("environment")])))

    def read_objects(self, conn: Connector, objects: Sequence[dict[str, Any]]
                     ) -> list[dict[str, Any] | None]:
        """Evaluate every object's guard: all ``creates`` paths in one ``stat_paths`` call, then
        each remaining ``unless`` command (read-only, ``mutating=False``).

        The stored attributes present in each object are echoed back: nothing about a command
        can be observed in the world, and the applier records the read result as the state of a
        no-op resource, so the record must still say what ran."""
        out: list[dict[str, Any]] = [
            {**{k: o[k] for k in _STORED if k in o}, "command": o.get("command"), "_guard": None}
            for o in objects
        ]
        pending: list[int] = []
        paths: list[str] = []
        for i, obj in enumerate(objects):
            if not _has_guard(obj):
                continue
            if not is_known([obj.get("creates"), obj.get("unless"), obj.get("cwd"),
                             obj.get("environment")]):
                out[i]["_guard_detail"] = "known after apply"
                continue
            pending.append(i)
            if obj.get("creates") is not None:
                paths.append(str(obj["creates"]))
        facts = iter(conn.stat_paths(paths) if paths else [])
        for i in pending:
            obj = objects[i]
            if obj.get("creates") is not None and next(facts) is not None:
                out[i].update(_guard=True, _guard_detail=f"{obj['creates']} exists")
                continue
            holds, detail = _guard_holds(conn, obj, check_creates=False)
            out[i].update(_guard=holds, _guard_detail=detail)
        return list(out)

    # -- plan ----------------------------------------------------------------------------
    def plan(
        self,
        desired: dict[str, Any],
        observed: dict[str, Any] | None,
        prior: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        """Guarded: the guard holds → NOOP; else CREATE (not in state) or UPDATE, with a
        ``run`` change (before: why, after: ``"pending"``). Unguarded: not in state → CREATE
        (run once); ``command``/``cwd``/``environment`` (or a guard it had) changed since the
        last run → REPLACE (run again); else NOOP. ``refreshonly``: never runs of itself — a
        CREATE or an UPDATE only records it; the planner marks it ``triggered = "run"`` when
        a ``run_on`` resource changes, and then it runs."""
        if desired.get("refreshonly"):
            if prior is None:
                return Action.CREATE, [*self._create_changes(desired),
                                       AttrChange("run", None, REFRESH_ONLY)]
            changes = [AttrChange(k, prior.get(k), desired.get(k),
                                  sensitive=self.schema.attrs[k].sensitive)
                       for k in _RERUN_ON if prior.get(k) != desired.get(k)]
            return (Action.UPDATE if changes else Action.NOOP), changes
        if _has_guard(desired):
            guard = (observed or {}).get("_guard")
            detail = (observed or {}).get("_guard_detail")
            if guard is True:
                return Action.NOOP, []
            if guard is None:
                run = AttrChange("run", None, PENDING_GUARD)
            else:
                run = AttrChange("run", f"guard does not hold: {detail}" if detail else None,
                                 PENDING)
            if prior is None:
                return Action.CREATE, [*self._create_changes(desired), run]
            return Action.UPDATE, [run]
        if prior is None:
            return Action.CREATE, [*self._create_changes(desired),
                                   AttrChange("run", None, PENDING)]
        changes = [
            AttrChange(key, prior.get(key), desired.get(key), force_new=True,
                       sensitive=self.schema.attrs[key].sensitive)
            for key in _RERUN_ON if prior.get(key) != desired.get(key)
        ]
        if changes:
            return Action.REPLACE, changes
        return Action.NOOP, []

    def _create_changes(self, desired: dict[str, Any]) -> list[AttrChange]:
        return [AttrChange(k, None, desired[k], sensitive=self.schema.attrs[k].sensitive)
                for k in self.managed(desired)
                if k != "timeout" and not (k == "refreshonly" and not desired[k])]

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action is not Action.NOOP:
            return ["a command runs again; what it did is not undone."]
        return []

    def stored(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The state record: ``command``, ``creates``, ``unless``, ``cwd``, ``environment`` and
        ``exit_code`` as far as ``attrs`` holds them (not ``timeout``: it never re-runs)."""
        return {k: attrs[k] for k in _STORED if k in attrs}

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """Run the command (``mutating=True``) for CREATE, UPDATE and REPLACE; DELETE has
        nothing to undo and returns None. When the plan left the guard to apply time
        (:data:`PENDING_GUARD`), the guard is evaluated first and a holding guard skips the
        run (``exit_code`` None). Raises :class:`ApplyError` on a non-zero exit, a timeout, or
        when ``creates`` is still missing afterwards."""
        if change.action is Action.DELETE or change.after is None:
            return None
        after = dict(change.after)
        command = after.get("command")
        if command is None or _valid_command(command):
            raise ApplyError(f"{change.address}: no command to run")
        if after.get("refreshonly"):
            if change.triggered != "run" and change.action is not Action.REPLACE:
                # (recorded, not run: nothing it watches changed)
                return self._record(after, (change.prior or {}).get("exit_code"))
            holds, _ = _guard_holds(conn, after, check_creates=True) \
                if _has_guard(after) else (False, "")
            if holds:
                return self._record(after, None)
        elif any(c.name == "run" and c.after == PENDING_GUARD for c in change.changes):
            holds, _ = _guard_holds(conn, after, check_creates=True)
            if holds:
                return self._record(after, None)
        timeout = after.get("timeout") or self.schema.attrs["timeout"].default
        cwd = after.get("cwd")
        try:
            result = conn.run(argv_of(command), mutating=True, env=after.get("environment"),
                              cwd=cwd, timeout=float(timeout))
        except OSError as exc:
            raise ApplyError(f"cannot run {self.describe(after)!r}: {exc}") from None
        if not result.ok:
            if result.returncode == 127 and cwd and not conn.exists(cwd):
                raise ApplyError(f"cannot run {self.describe(after)!r}: the working directory "
                                 f"{cwd} does not exist")
            tail = _output_tail(result)
            raise ApplyError(f"command {self.describe(after)!r} exited with code "
                             f"{result.returncode}" + (f": {tail}" if tail else ""))
        creates = after.get("creates")
        if creates is not None and not conn.exists(str(creates)):
            raise ApplyError(f"command {self.describe(after)!r} succeeded but did not create "
                             f"{creates}; without it the command would run on every apply")
        return self._record(after, result.returncode)

    def _record(self, after: dict[str, Any], exit_code: int | None) -> dict[str, Any]:
        return {**{k: after.get(k) for k in _STORED}, "exit_code": exit_code}


def _guard_holds(conn: Connector, obj: dict[str, Any], *, check_creates: bool
                 ) -> tuple[bool, str]:
    """(holds, why). ``creates`` is checked (when asked) before ``unless`` runs read-only."""
    creates = obj.get("creates")
    if creates is not None:
        if check_creates and conn.exists(str(creates)):
            return True, f"{creates} exists"
        if obj.get("unless") is None:
            return False, f"{creates} does not exist"
    unless = obj["unless"]
    timeout = obj.get("timeout") or 600
    try:
        result = conn.run(argv_of(unless), mutating=False, env=obj.get("environment"),
                          cwd=obj.get("cwd"), timeout=float(timeout))
    except OSError as exc:
        return False, f"unless could not run: {exc}"
    if result.ok:
        return True, "unless exited 0"
    return False, f"unless exited {result.returncode}"
