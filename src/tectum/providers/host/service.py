"""``service``: a daemon's run state (``running``) and boot-time start (``enabled``).

Shapes (attribute dicts):

* desired: ``{"name": "nginx", "running": True | False | None, "enabled": True | False | None}``
  — None (unset) leaves that aspect alone.
* observed (:meth:`ServiceType.read`): ``{"name", "running": bool, "enabled": bool}``, or None
  when the host has no such service (no ``/etc/init.d/NAME`` script, or no systemd unit). Absent
  is not an error at plan time: a ``package`` in the same apply may install it.
* stored (what :meth:`ServiceType.apply` returns): ``{"name", "running", "enabled"}`` as found on
  the host after the change, plus two computed flags that no read can observe:
  ``started_by_tectum`` (an apply of this resource started the service and none has stopped it
  since) and ``enabled_by_tectum`` (an apply turned ``enabled`` from false to true and none has
  disabled it since). A service found already running or enabled keeps the flag False.

``restart_on`` / ``reload_on`` are not attributes: the engine turns them into
``change.triggered`` (``"restart"`` or ``"reload"``) and ``change.triggers`` (the upstream
addresses), possibly on an ``UPDATE`` with no attribute changes.

Two init systems are supported, chosen once per :meth:`~ServiceType.read` /
:meth:`~ServiceType.apply` by whether ``/run/systemd/system`` exists on the host (the test
``sd_booted()`` and Debian's ``service`` wrapper use):

* **systemd**: ``systemctl show`` (one call for all units) for ``LoadState`` / ``ActiveState`` /
  ``UnitFileState``; ``systemctl start|stop|restart|reload|enable|disable``.
* **System V init** (containers, minimal hosts): ``service NAME status`` (exit 0 running, 3 not
  running — LSB init-script actions; any other non-zero counts as not running),
  ``service NAME start|stop|restart|reload``; enabled = an ``S??NAME`` link in
  ``/etc/rc2.d`` … ``/etc/rc5.d``; ``update-rc.d NAME defaults`` (no links yet) or
  ``update-rc.d NAME enable`` / ``update-rc.d NAME disable``. ``invoke-rc.d`` is never used:
  ``policy-rc.d`` can block it while it still exits 0.

The apply order follows Puppet's ``service`` type: ``enabled`` first, then ``running``; a
triggered restart/reload (Puppet's ``refresh``) happens only when the service is running and was
not just started or stopped by this change.

Deleting (the resource left the configuration, or ``destroy``) undoes what the record says:
a service whose stored ``running`` is True is stopped, and one with ``enabled_by_tectum`` is
disabled (one found enabled stays enabled); the stop is verified like a start. The engine deletes
dependents first, so ``Service(..., depends_on=[package])`` is stopped before its package is
removed (a package's own ``prerm`` cannot be trusted to: ``policy-rc.d`` may block it).
:meth:`ServiceType.delete_summary` says in the plan what a delete will do.

A start, restart, reload or stop is verified by polling the status for up to
:data:`VERIFY_SECONDS`; a started service must still be running :data:`SETTLE_SECONDS` after the
command, which catches a daemon that forks and then dies on a bad configuration.
"""

from __future__ import annotations

import re
import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadItem
from tectum.providers.host.base import HostType
from tectum.schema import Attr, Schema
from tectum.values import is_known

#: where systemd unit files a stack may write live
_UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")

if TYPE_CHECKING:
    from tectum.providers.host.connector import CommandResult, Connector, FactRequest

_NAME_RE = re.compile(r"[A-Za-z0-9@._-]+")
#: How long a start / restart / reload / stop gets to show in the status.
VERIFY_SECONDS = 5.0
#: How long a started / restarted / reloaded service must keep running to count as started.
SETTLE_SECONDS = 0.5
_POLL_INTERVAL = 0.1
#: An init script's ``status`` that hangs must not hang the whole refresh.
_READ_TIMEOUT = 120.0
_UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount", ".target")
# `systemctl is-enabled` exits 0 for these UnitFileStates
_SYSTEMD_ENABLED = frozenset(
    {"enabled", "enabled-runtime", "static", "indirect", "generated", "alias", "transient"}
)
_SYSTEMD_RUNNING = frozenset({"active", "reloading", "activating"})
#: stored computed attributes: what tectum itself did to the service
_FLAGS = ("started_by_tectum", "enabled_by_tectum")

# System V reader: names come in as positional arguments ("$@"), never as script text.
# Prints one line per name: NAME <TAB> exists(0/1) <TAB> status rc <TAB> enabled(0/1) <TAB>
# has rc links(0/1).
_SYSV_READ = r"""
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
for n in "$@"; do
  if [ ! -f "/etc/init.d/$n" ]; then printf '%s\t0\t0\t0\t0\n' "$n"; continue; fi
  service "$n" status >/dev/null 2>&1 </dev/null; rc=$?
  enabled=0; links=0
  for d in /etc/rc0.d /etc/rc1.d /etc/rc2.d /etc/rc3.d /etc/rc4.d /etc/rc5.d /etc/rc6.d \
           /etc/rcS.d; do
    for l in "$d"/[SK][0-9][0-9]"$n"; do
      if [ -e "$l" ] || [ -L "$l" ]; then
        links=1
        case "$l" in
          /etc/rc[2345].d/S*) enabled=1 ;;
        esac
      fi
    done
  done
  printf '%s\t1\t%s\t%s\t%s\n' "$n" "$rc" "$enabled" "$links"
done
"""

# Both readers in one command (plan-time reads: one round trip per host). Arguments: COUNT, then
# COUNT service names, then their COUNT systemd unit names. Prints the init system first.
_READ_ANY = r"""
n=$1; shift
if [ -d /run/systemd/system ]; then
  echo systemd
  shift "$n"
  exec systemctl show --no-pager --property=LoadState,ActiveState,UnitFileState -- "$@"
fi
echo sysv
i=0
for x in "$@"; do
  if [ "$i" -lt "$n" ]; then set -- "$@" "$x"; fi
  i=$((i + 1))
done
shift $((2 * n))
""" + _SYSV_READ


def _valid_name(value: Any) -> str | None:
    if (not isinstance(value, str) or not _NAME_RE.fullmatch(value) or value.startswith("-")
            or set(value) == {"."} or len(value) > 255):
        return ("must be a service name: at most 255 letters, digits, '@', '.', '_' and '-', "
                "not starting with '-'")
    return None


def _unit(name: str) -> str:
    return name if name.endswith(_UNIT_SUFFIXES) else f"{name}.service"


def _tail(result: CommandResult) -> str:
    text = result.error_text(600)
    return text or f"exit {result.returncode}, no output"


class ServiceType(HostType):
    """A system service (systemd unit or System V init script) on a host."""
    replace_refused = (
        'a service is not made anew; a change it watches (restart_on) restarts it.')

    name = "service"
    side_effects = True
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=_valid_name,
                     description="service name (init script in /etc/init.d, or systemd unit)"),
        "running": Attr(bool, description="whether it should be running now; unset: leave it"),
        "enabled": Attr(bool, description="whether it should start at boot; unset: leave it"),
        "started_by_tectum": Attr(bool, computed=True, description=(
            "whether an apply started the service (and none stopped it since): what a "
            "delete undoes")),
        "enabled_by_tectum": Attr(bool, computed=True, description=(
            "whether an apply enabled the service (and none disabled it since): a delete "
            "disables it again")),
    })
    stored_computed = _FLAGS
    #: no read can see who started or enabled a service: never drift, kept on a no-op
    unobserved = frozenset(_FLAGS)

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("name", ""))

    # -- refresh -------------------------------------------------------------------------
    def read_objects(
        self, conn: Connector, objects: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any] | None]:
        """Read every service with one command (non-mutating): ``systemctl show`` for all
        units, or one ``sh -c`` script over all init scripts.

        Returns per object ``{"name", "running", "enabled"}`` (plus the transient ``_links``:
        whether System V rc links exist at all) or None when the service does not exist.
        Raises :class:`ApplyError` when the status command itself cannot run.
        """
        names = list(dict.fromkeys(str(o["name"]) for o in objects))
        if not names:
            return []
        found = self._read_any(conn, names)[1]
        return [found.get(str(o["name"])) for o in objects]

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """Its System V init script and systemd unit files, when the stack manages them
        (Puppet's autorequire): the service is started after they are written."""
        name = attrs.get("name")
        if not isinstance(name, str) or not is_known(name):
            return []
        needs: list[list[ImplicitKey]] = [[("file", f"/etc/init.d/{name}")]]
        needs += [[("file", f"{d}/{_unit(name)}")] for d in _UNIT_DIRS]
        return needs

    def missing(self, target: Connector, items: Sequence[ReadItem]
                ) -> list[list[tuple[Hashable | None, str]]]:
        """A service to run or enable that is not installed (no unit, no init script) is
        reported at plan time — unless something it depends on changes in the plan (the
        package that brings it). Answered from the read's facts."""
        found = self.read_objects(target, [i.attrs for i in items])
        where = "this machine" if target.host in ("local", "") else f"host {target.host}"
        out: list[list[tuple[Hashable | None, str]]] = []
        for item, obs in zip(items, found, strict=True):
            want = item.desired or {}
            if item.desired is not None and obs is None \
                    and (want.get("running") or want.get("enabled")):
                out.append([(None, f"service {want.get('name')!r} is not installed on "
                                   f"{where} (no systemd unit or init script)")])
            else:
                out.append([])
        return out

    def _read_any(self, conn: Connector, names: Sequence[str]
                  ) -> tuple[bool, dict[str, dict[str, Any] | None]]:
        """Whether the host runs systemd, and every service of ``names`` (one command)."""
        res = conn.run(self._read_argv(names), mutating=False, timeout=_READ_TIMEOUT)
        mode, _, rest = res.stdout.partition(b"\n")
        if mode == b"systemd":
            return True, self._parse_systemd(res._replace(stdout=rest), names)
        if mode == b"sysv" and res.ok:
            return False, self._parse_sysv(res._replace(stdout=rest), names)
        raise ApplyError(f"cannot read services: {_tail(res)}")

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        """The one read command, so a host's facts come back in one round trip."""
        from tectum.providers.host.connector import FactRequest

        names = list(dict.fromkeys(str(o["name"]) for o in objects))
        return FactRequest(commands=(tuple(self._read_argv(names)),) if names else ())

    @staticmethod
    def _read_argv(names: Sequence[str]) -> list[str]:
        """One command that reads every service with whichever init system runs:
        ``sh -c _READ_ANY sh COUNT NAME... UNIT...``; it prints ``systemd`` or ``sysv`` first."""
        return ["sh", "-c", _READ_ANY, "sh", str(len(names)), *names,
                *(_unit(n) for n in names)]

    @staticmethod
    def _parse_sysv(res: CommandResult, names: Sequence[str]
                    ) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for line in res.text().splitlines():
            parts = line.split("\t")
            if len(parts) != 5:
                continue
            name, exists, rc, enabled, links = parts
            out[name] = None if exists != "1" else {
                "name": name, "running": rc == "0", "enabled": enabled == "1",
                "_links": links == "1",
            }
        missing = [n for n in names if n not in out]
        if missing:
            raise ApplyError(f"cannot read services {', '.join(missing)}: no status reported")
        return out

    @staticmethod
    def _parse_systemd(res: CommandResult, names: Sequence[str]
                       ) -> dict[str, dict[str, Any] | None]:
        if not res.ok:
            raise ApplyError(f"cannot read services: systemctl show failed: {_tail(res)}")
        # One block of KEY=VALUE lines per unit, in argument order, separated by blank lines.
        blocks: list[dict[str, str]] = [{}]
        for line in res.text().splitlines():
            if not line.strip():
                if blocks[-1]:
                    blocks.append({})
                continue
            key, _, value = line.partition("=")
            blocks[-1][key] = value
        blocks = [b for b in blocks if b]
        if len(blocks) != len(names):
            raise ApplyError(f"cannot read services: systemctl show gave {len(blocks)} "
                             f"answers for {len(names)} units")
        out: dict[str, dict[str, Any] | None] = {}
        for name, props in zip(names, blocks, strict=True):
            if props.get("LoadState") in ("not-found", "error", "bad-setting", ""):
                out[name] = None
                continue
            out[name] = {
                "name": name,
                "running": props.get("ActiveState") in _SYSTEMD_RUNNING,
                "enabled": props.get("UnitFileState") in _SYSTEMD_ENABLED,
            }
        return out

    # -- plan ----------------------------------------------------------------------------
    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """Whether tectum counts as the creator of a service not yet in state: it was absent
        (``found`` None: its package comes in the same apply), or it was stopped and
        ``desired`` has ``running=True`` (tectum starts it, so a delete stops it again). A
        service found running — or stopped and left stopped — was there before tectum and is
        only forgotten when its resource goes (the rule of
        :meth:`tectum.providers.base.ResourceType.takes_over_as_created`)."""
        if found is None:
            return True
        return desired.get("running") is True and found.get("running") is False

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        """What deleting the service recorded as ``prior`` (its state record) will do, for the
        plan: ``"stops the service and disables it"``, ``"stops the service"``,
        ``"disables the service"``, or None when a delete only forgets it (the record says it
        was not running and tectum did not enable it). Reads nothing; the apply re-reads the
        service and skips what is already done."""
        stop = prior.get("running") is True
        disable = prior.get("enabled_by_tectum") is True
        if stop and disable:
            return "stops the service and disables it"
        if stop:
            return "stops the service"
        if disable:
            return "disables the service"
        return None

    # -- apply ---------------------------------------------------------------------------
    def apply(self, conn: Connector, change: ResourceChange) -> dict[str, Any] | None:
        """Carry out ``change`` on the service as it is *now* (re-read first).

        ``DELETE`` (see :meth:`_delete`): the record (``change.prior``, else ``change.before``)
        says what to undo — disable it when ``enabled_by_tectum``, stop it when ``running``
        was True — and the stop is verified; returns None. A ``REPLACE`` whose recorded name
        differs does the same to the old service first. ``CREATE`` / ``UPDATE`` / ``REPLACE``:
        set ``enabled`` when managed and different; start when ``running=True`` and stopped,
        stop when ``running=False`` and running; otherwise, when running, restart or reload if
        ``change.triggered`` says so. Returns the stored ``{"name", "running", "enabled",
        "started_by_tectum", "enabled_by_tectum"}``: the service re-read afterwards, and the
        flags carried over from the record and updated by what this apply did.

        Raises :class:`ApplyError` when the service does not exist, when a command fails (with
        its output's tail) or when the service is not running within :data:`VERIFY_SECONDS`
        after a start / restart / reload (or still running after a stop, with what its status
        command says).
        """
        if change.action is Action.DELETE:
            self._delete(conn, change.prior or change.before or {}, str(change.address))
            return None
        after = change.after or {}
        name = after.get("name") or (change.before or change.prior or {}).get("name")
        if not isinstance(name, str):
            raise ApplyError(f"{change.address}: no service name in the change")
        record = change.prior or {}
        if record.get("name") != name:
            if change.action is Action.REPLACE and isinstance(record.get("name"), str):
                self._delete(conn, record, str(change.address))
            record = {}  # another service's record: its flags are not this one's
        flags = {k: record.get(k) is True for k in _FLAGS}
        systemd, found = self._read_any(conn, [name])
        cur = found.get(name)
        if cur is None:
            where = f"unit {_unit(name)}" if systemd else f"init script /etc/init.d/{name}"
            raise ApplyError(f"service {name} does not exist on {conn.host} (no {where})")

        want_enabled = after.get("enabled")
        now: dict[str, Any] | None = cur
        if want_enabled is not None and want_enabled != cur["enabled"]:
            self._set_enabled(conn, name, bool(want_enabled), systemd, bool(cur.get("_links")))
            flags["enabled_by_tectum"] = bool(want_enabled)
            now = None

        want_running = after.get("running")
        if want_running is True and not cur["running"]:
            now = self._control(conn, name, "start", systemd)
            flags["started_by_tectum"] = True
        elif want_running is False and cur["running"]:
            now = self._control(conn, name, "stop", systemd)
            flags["started_by_tectum"] = False
        elif cur["running"] and change.triggered in ("restart", "reload"):
            now = self._control(conn, name, str(change.triggered), systemd)

        if now is None:  # enabled was changed and nothing read it since
            now = self._read_any(conn, [name])[1].get(name)
        if now is None:
            raise ApplyError(f"service {name} disappeared while it was being changed")
        if want_enabled is not None and now["enabled"] != want_enabled:
            raise ApplyError(f"service {name} is still {'dis' if want_enabled else 'en'}abled "
                             "after changing it")
        return self.stored({**now, **flags})

    def _delete(self, conn: Connector, record: dict[str, Any], address: str) -> None:
        """Undo what ``record`` (a stored ``{"name", "running", "enabled", ...flags}``) says
        of a service that leaves the configuration: ``update-rc.d NAME disable`` / ``systemctl
        disable`` when ``enabled_by_tectum`` and it is enabled now, then ``service NAME stop``
        / ``systemctl stop`` when ``running`` was True and it runs now, verified by polling
        its status (:data:`VERIFY_SECONDS`). A service that no longer exists, or whose record
        asks for neither, is only forgotten. Raises :class:`ApplyError` when a command fails
        or the service still runs (or is still enabled) afterwards, with the status output."""
        if self.delete_summary(record) is None:
            return
        name = record.get("name")
        if not isinstance(name, str):
            raise ApplyError(f"{address}: no service name in the state record")
        systemd, found = self._read_any(conn, [name])
        cur = found.get(name)
        if cur is None:
            return  # nothing left to stop: no init script / unit any more
        if record.get("enabled_by_tectum") is True and cur["enabled"]:
            self._set_enabled(conn, name, False, systemd, bool(cur.get("_links")))
            now = self._read_any(conn, [name])[1].get(name)
            if now is not None and now["enabled"]:
                raise ApplyError(f"service {name} is still enabled after disabling it: "
                                 f"{self._status_text(conn, name, systemd)}")
        if record.get("running") is True and cur["running"]:
            self._control(conn, name, "stop", systemd)

    def _set_enabled(
        self, conn: Connector, name: str, enabled: bool, systemd: bool, links: bool
    ) -> None:
        if systemd:
            argv = ["systemctl", "enable" if enabled else "disable", "--", _unit(name)]
        elif enabled:
            # `defaults` creates the links from the script's LSB header but does nothing when
            # links exist (e.g. after `disable`); `enable` turns existing K links back into S.
            argv = ["update-rc.d", name, "enable" if links else "defaults"]
        else:
            argv = ["update-rc.d", name, "disable"]
        res = conn.run(argv)
        if not res.ok:
            raise ApplyError(f"{' '.join(argv)} failed: {_tail(res)}")

    def _control(self, conn: Connector, name: str, verb: str, systemd: bool
                 ) -> dict[str, Any]:
        """Run ``verb`` (start/stop/restart/reload), then poll until the status agrees; returns
        the last status read. A start is first read :data:`SETTLE_SECONDS` after the command
        returned (an earlier "running" would not count)."""
        argv = (["systemctl", verb, "--", _unit(name)] if systemd
                else ["service", name, verb])
        res = conn.run(argv)
        if not res.ok:
            raise ApplyError(f"{' '.join(argv)} failed: {_tail(res)}")
        want = verb != "stop"
        began = time.monotonic()
        deadline = began + VERIFY_SECONDS
        # A daemon that forks and then dies on bad configuration looks "running" for a moment:
        # a start is only believed once the status still says running SETTLE_SECONDS later.
        settled = began + (SETTLE_SECONDS if want else 0.0)
        time.sleep(max(0.0, settled - time.monotonic()))
        while True:
            now = self._read_any(conn, [name])[1].get(name)
            at = time.monotonic()
            if now is not None and now["running"] == want and at >= settled:
                return now
            if at >= deadline:
                break
            time.sleep(_POLL_INTERVAL)
        state = "not running" if want else "still running"
        said = res.error_text(400)
        detail = "; ".join(p for p in (said, self._status_text(conn, name, systemd)) if p)
        raise ApplyError(f"service {name} is {state} {VERIFY_SECONDS:g} s after "
                         f"{' '.join(argv)}" + (f": {detail}" if detail else ""))

    @staticmethod
    def _status_text(conn: Connector, name: str, systemd: bool) -> str:
        """What the status command says (for an error message): ``COMMAND exited RC: OUTPUT``
        (its last 400 characters); read-only."""
        argv = (["systemctl", "status", "--no-pager", "--lines=5", "--", _unit(name)] if systemd
                else ["service", name, "status"])
        res = conn.run(argv, mutating=False, timeout=_READ_TIMEOUT)
        text = res.error_text(400)
        return f"{' '.join(argv)} exited {res.returncode}" + (f": {text}" if text else "")
