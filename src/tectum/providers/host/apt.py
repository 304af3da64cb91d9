"""``package``: a Debian package, installed or removed with apt.

Shapes (attribute dicts):

* desired: ``{"name": "tree", "ensure": "present" | "absent", "version": "2.1.0-1" | None,
  "update_cache": True | None, "cache_valid_time": 3600 | None}``
* observed (:meth:`PackageType.read`): ``{"name", "ensure", "version"}`` for *every* package —
  never None, so a package that is not installed is planned through :meth:`PackageType.plan`
  like any other difference. ``version`` is the installed version, or None when not installed.
  A package that asks for the apt cache also gets the transient ``_cache_age`` (seconds since
  the last refresh, None: never), never stored.
* stored (what :meth:`PackageType.apply_batch` returns per change): the same three keys, as found
  on the host after the change, with ``version`` the version actually installed.

Reads are batched: every package on a host is read with one ``dpkg-query`` call. Applies are
batched too (:attr:`PackageType.batches`): all installs on a host become one ``apt-get install``
and all removals one ``apt-get remove``, so dependency resolution runs once and dpkg's lock is
taken once. The conventions follow Ansible's ``apt`` module: ``DEBIAN_FRONTEND=noninteractive``,
``--force-confdef``/``--force-confold`` (keep locally changed configuration files),
``--allow-downgrades`` for a pinned version lower than the installed one (Ansible's
``allow_downgrade``). When apt cannot find a package or version, the lists may be missing or
stale: tectum runs ``apt-get update`` once and retries, instead of updating on every run.
A pinned version is passed as ``name=version`` and compared with the installed version as an
exact string (epoch included when the archive's version has one); without a pin the installed
version is never compared.

**The apt cache** (Ansible ``apt``'s ``update_cache`` / ``cache_valid_time``): with
``cache_valid_time=N`` (seconds; it implies ``update_cache``) the plan shows an ``apt cache``
change — "refresh" — whenever the cache is older than N seconds, also on a run with nothing to
install, and apply runs one ``apt-get update`` before the batch's ``apt-get install``.
``update_cache=True`` alone refreshes the cache before the package is installed or re-versioned
(not on every run, unlike Ansible, so that a converged stack plans nothing). The cache's age
is read with the packages, in the same round trip (:data:`CACHE_FACTS`): ``now`` minus the
newer mtime of ``/var/lib/apt/periodic/update-success-stamp`` and ``/var/lib/apt/lists`` —
Ansible's two sources; Ansible takes the stamp when it exists, else the lists directory, whose
mtime apt leaves alone when nothing changed upstream. Every ``apt-get update`` tectum runs
touches that stamp on success (``APT::Update::Post-Invoke-Success``, as Ubuntu's
``update-notifier-common`` hook does), so a refresh counts even when the lists did not change.
A refresh planned for a cache that another change of the same apply refreshed meanwhile (an
``apt_repository``) is not run twice: apply reads the age again and skips it when the cache is
younger than N by then. ``apt-get update`` waits for apt's lists lock (up to
:data:`LOCK_WAIT` seconds) when another apt run holds it.

``apt-get remove`` removes packages that depend on a removed package too, as apt always does;
configuration files are kept (``remove``, not ``purge``). On a host without systemd (or where
``policy-rc.d`` forbids it) apt does not start the daemons it installs; a ``service`` resource does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ReadItem
from tectum.providers.host.base import HostType
from tectum.providers.host.connector import FactRequest
from tectum.schema import Attr, Schema

if TYPE_CHECKING:
    from tectum.providers.host.connector import CommandResult, Connector

# Debian Policy §5.6.1: lower case letters, digits, '+', '-', '.'; at least two characters;
# starts with an alphanumeric character (so never with '-', which apt would take for an option).
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# Debian Policy §5.6.12 characters ([epoch:]upstream[-revision]); must not start with '-'.
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~:-]*")

#: ``dpkg-query`` output format: one line per package known to dpkg.
DPKG_FORMAT = "${Package}\\t${db:Status-Abbrev}\\t${Version}\\n"
#: Second letter of ``db:Status-Abbrev`` meaning the package's files are installed and configured
#: (``i`` installed; ``W``/``t`` installed with triggers awaited/pending).
_INSTALLED_STATES = frozenset("iWt")

#: Options common to every mutating apt-get call. ``DPkg::Lock::Timeout`` waits for dpkg's lock
#: (held by another apt run, e.g. unattended-upgrades) instead of failing at once.
_APT_COMMON = ("-y", "-q", "-o", "DPkg::Lock::Timeout=120")
_APT_INSTALL = (
    "apt-get", "install", *_APT_COMMON, "--allow-downgrades",
    "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
)
_APT_REMOVE = ("apt-get", "remove", *_APT_COMMON)
#: where apt records its last successful ``apt-get update`` (Ubuntu's hook; Ansible reads it)
UPDATE_STAMP = "/var/lib/apt/periodic/update-success-stamp"
#: the package lists; their directory's mtime is Ansible's fallback for the cache's age
LISTS_DIR = "/var/lib/apt/lists"
_APT_UPDATE = ("apt-get", "update", "-q", "-o",
               f"APT::Update::Post-Invoke-Success::=touch {UPDATE_STAMP} 2>/dev/null || true")
#: read-only commands that give the apt cache's age: the host's clock, then the mtimes
CACHE_FACTS: tuple[tuple[str, ...], ...] = (
    ("date", "+%s"),
    ("stat", "-c", "%Y %n", "--", UPDATE_STAMP, LISTS_DIR),
)
#: seconds ``apt-get update`` keeps retrying while another apt run holds the lists lock
LOCK_WAIT = 120.0
#: the name of the pseudo-attribute that shows a planned cache refresh (Command's ``run`` is
#: the same kind of thing): ``apt cache: "updated 2 h 5 min ago" → "refresh"``
CACHE_CHANGE = "apt cache"
REFRESH = "refresh"
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none"}

# apt's messages when the package lists are missing or older than the archive; one
# ``apt-get update`` and a retry fixes these (apt's own hint: "maybe run apt-get update").
_STALE_LISTS = (
    "Unable to locate package",
    "has no installation candidate",
    "was not found",  # E: Version '1.2-3' for 'foo' was not found
    "Unable to fetch some archives",  # 404 for a .deb the archive no longer has
)


def _valid_name(value: Any) -> str | None:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        return ("must be a Debian package name: lower-case letters, digits, '+', '-' and '.', "
                "at least two characters, starting with a letter or digit")
    return None


def _valid_version(value: Any) -> str | None:
    if not isinstance(value, str) or not _VERSION_RE.fullmatch(value):
        return ("must be a Debian version such as \"2.1.0-1\" or \"1:9.2p1-2\" (letters, digits "
                "and . + ~ : -, starting with a letter or digit)")
    return None


def _valid_cache_time(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return ("must be a whole number of seconds, at least 1 (the cache is refreshed when it "
                "is older than that)")
    return None


def _wants_cache(attrs: dict[str, Any]) -> bool:
    """Whether ``attrs`` ask for an apt cache refresh (``update_cache``, or
    ``cache_valid_time``, which implies it, as in Ansible)."""
    return bool(attrs.get("update_cache")) or attrs.get("cache_valid_time") is not None


def cache_age(conn: Connector) -> int | None:
    """Seconds since the apt cache of ``conn``'s host was last refreshed (see the module
    docstring), by the host's clock; None when it never was (no stamp, no lists directory) or
    the host's answer cannot be read. Read-only; answered from the prefetch when
    :data:`CACHE_FACTS` were fetched."""
    now = conn.run(CACHE_FACTS[0], mutating=False)
    stamps = conn.run(CACHE_FACTS[1], mutating=False)
    try:
        clock = int(now.text().strip())
    except ValueError:
        return None
    times = []
    for line in stamps.text().splitlines():
        value = line.split(" ", 1)[0]
        if value.isdigit():
            times.append(int(value))
    return max(0, clock - max(times)) if times else None


def age_text(age: int | None) -> str:
    """``"updated 2 h 5 min ago"`` (``"never updated"`` for None)."""
    if age is None:
        return "never updated"
    if age < 60:
        return f"updated {age} s ago"
    minutes = age // 60
    if minutes < 60:
        return f"updated {minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"updated {hours} h {minutes} min ago" if minutes else f"updated {hours} h ago"
    return f"updated {hours // 24} days ago"


def apt_update(conn: Connector) -> CommandResult:
    """One ``apt-get update`` on ``conn``'s host (touching :data:`UPDATE_STAMP` on success),
    retried for up to :data:`LOCK_WAIT` seconds while another apt run holds the lists lock
    (``apt-get update`` does not wait for it, unlike dpkg's lock). Returns the last result."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        result = conn.run(list(_APT_UPDATE), env=_APT_ENV)
        if result.ok or time.monotonic() >= deadline:
            return result
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if "Could not get lock" not in output and "Unable to lock" not in output:
            return result
        time.sleep(2)


def _absent(name: str) -> dict[str, Any]:
    return {"name": name, "ensure": "absent", "version": None}


def _name_of(change: ResourceChange) -> str:
    for attrs in (change.after, change.before, change.prior):
        if attrs and isinstance(attrs.get("name"), str):
            return str(attrs["name"])
    raise ApplyError(f"{change.address}: no package name in the change")


def _apt_error(what: str, result: CommandResult) -> ApplyError:
    """An :class:`ApplyError` carrying apt's own last words (its ``E:`` lines come last)."""
    return ApplyError(f"{what} failed (exit {result.returncode}): {result.error_text(800)}")


class PackageType(HostType):
    """A Debian package managed with ``dpkg-query`` (read) and ``apt-get`` (apply)."""
    replace_refused = (
        'a package is not reinstalled by tectum; remove the resource and apply, then '
        'add it back, or reinstall it with a Command.')

    name = "package"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=_valid_name,
                     description="Debian package name, e.g. \"tree\""),
        "ensure": Attr(str, default="present", choices=("present", "absent"),
                       description="whether the package is installed"),
        "version": Attr(str, validate=_valid_version,
                        description="pin this exact version (installs, upgrades or downgrades "
                                    "to it); unset: any installed version will do"),
        "update_cache": Attr(bool, description=(
            "run apt-get update before installing the package (Ansible apt's update_cache); "
            "with cache_valid_time, only when the cache is older than that")),
        "cache_valid_time": Attr(int, validate=_valid_cache_time, description=(
            "seconds: refresh the apt cache when it is older than this, also on a run with "
            "nothing to install (Ansible apt's cache_valid_time; implies update_cache)")),
    })
    batches = True
    side_effects = True
    #: how the cache is refreshed, not what the package is: never drift, never in state
    unobserved = frozenset({"update_cache", "cache_valid_time"})

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        """A version pin only makes sense for a package that should be installed."""
        problems = []
        if attrs.get("ensure") == "absent" and attrs.get("version") is not None:
            problems.append("version is only used with ensure=\"present\"; remove it or the "
                            "ensure.")
        if attrs.get("ensure") == "absent" and _wants_cache(attrs):
            problems.append("update_cache and cache_valid_time are only used with "
                            "ensure=\"present\" (removing a package needs no package lists); "
                            "remove them or the ensure.")
        if attrs.get("update_cache") is False and attrs.get("cache_valid_time") is not None:
            problems.append("cache_valid_time refreshes the apt cache, and update_cache=False "
                            "says not to: remove one of them.")
        return problems

    def describe(self, attrs: dict[str, Any]) -> str:
        name = str(attrs.get("name", ""))
        version = attrs.get("version")
        return f"{name}={version}" if version and attrs.get("ensure") != "absent" else name

    # -- refresh -------------------------------------------------------------------------
    def read_objects(
        self, conn: Connector, objects: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any] | None]:
        """Read all packages with one ``dpkg-query -W`` (non-mutating).

        Returns one ``{"name", "ensure", "version"}`` dict per object, in order; a package dpkg
        does not know, or knows only as removed (``rc``: configuration files left), is
        ``ensure="absent", version=None``. ``dpkg-query`` exits 1 when some names are unknown;
        its output for the others is still complete. Objects that ask for the apt cache
        (``update_cache`` / ``cache_valid_time``) get ``_cache_age`` too (:func:`cache_age`).
        Raises :class:`ApplyError` when ``dpkg-query`` cannot run at all (exit status other
        than 0 and 1).
        """
        names = [str(o["name"]) for o in objects]
        found = self._query(conn, names)
        out: list[dict[str, Any] | None] = [dict(found.get(n) or _absent(n)) for n in names]
        if any(_wants_cache(o) for o in objects):
            # transient: what the plan decides a refresh on, never stored
            age = cache_age(conn)
            for obj, seen in zip(objects, out, strict=True):
                if _wants_cache(obj) and seen is not None:
                    seen["_cache_age"] = age
        return out

    def facts(self, objects: Sequence[dict[str, Any]]) -> FactRequest:
        """One ``dpkg-query`` for every package, and the apt cache's age
        (:data:`CACHE_FACTS`) when a package asks for a refresh."""
        unique = list(dict.fromkeys(str(o["name"]) for o in objects))
        commands: tuple[tuple[str, ...], ...] = (_dpkg_query(unique),) if unique else ()
        if any(_wants_cache(o) for o in objects):
            commands += CACHE_FACTS
        return FactRequest(commands=commands)

    # -- plan-time checks ------------------------------------------------------------------
    @staticmethod
    def _to_install(items: Sequence[ReadItem]) -> list[str]:
        """Names of packages desired present that state does not hold as installed (a no-op
        run has none: it asks apt nothing)."""
        out = []
        for item in items:
            want, prior = item.desired, item.prior
            if want is None or want.get("ensure", "present") == "absent" or _wants_cache(want):
                continue  # (a planned refresh may bring a name the lists lack now)
            if prior is None or prior.get("ensure") == "absent":
                out.append(str(want["name"]))
        return sorted(set(out))

    def plan_facts(self, items: Sequence[ReadItem]) -> FactRequest:
        """``apt-cache policy`` of the packages about to be installed, in the read's round
        trip (only when there are such packages: a no-op run asks nothing more)."""
        names = self._to_install(items)
        return FactRequest(commands=(_policy_argv(names),) if names else ())

    def missing(self, target: Connector, items: Sequence[ReadItem]
                ) -> list[list[tuple[Hashable | None, str]]]:
        """A package to install that no package list of the host offers (apt would say
        "Unable to locate package") — unless an ``AptRepository`` in the stack brings one.
        Not checked when the host has no package lists at all (its first ``apt-get update``
        is still to come) or the package asks for a cache refresh first."""
        out: list[list[tuple[Hashable | None, str]]] = [[] for _ in items]
        asked = self._to_install(items)  # (the names plan_facts fetched the policy of)
        if not asked:
            return out
        installed = self._query(target, [str(i.attrs["name"]) for i in items])
        names = [n for n in asked if n not in installed]
        if not names:
            return out
        known = _parse_policy(target.run(_policy_argv(asked), mutating=False).text())
        if known is None:
            return out
        where = "this machine" if target.host in ("local", "") else f"host {target.host}"
        for index, item in enumerate(items):
            name = str((item.desired or {}).get("name"))
            if name in names and name not in known:
                out[index].append((("apt_sources",), f"package {name!r} is in no package list "
                                   f"of {where} (apt: Unable to locate package)"))
        return out

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action is Action.DELETE:
            return ["removing the package keeps its configuration files."]
        return []

    def _query(self, conn: Connector, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{name: {"name", "ensure", "version"}}`` for the names dpkg knows as installed."""
        unique = list(dict.fromkeys(names))
        if not unique:
            return {}
        result = conn.run(_dpkg_query(unique), mutating=False)
        if result.returncode not in (0, 1):
            raise ApplyError(f"cannot read packages: dpkg-query failed "
                             f"(exit {result.returncode}): {result.error_text()}")
        found: dict[str, dict[str, Any]] = {}
        for line in result.text().splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            pkg, status, version = parts
            # Multi-arch packages print one line per architecture; any installed one counts.
            if len(status) >= 2 and status[1] in _INSTALLED_STATES:
                found[pkg] = {"name": pkg, "ensure": "present", "version": version or None}
        return found

    # -- plan ----------------------------------------------------------------------------
    def plan(
        self,
        desired: dict[str, Any],
        observed: dict[str, Any] | None,
        prior: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        """Decide install / remove / re-version (see the module docstring for the shapes).

        * wanted present, not installed → ``CREATE`` (changes: ``ensure``, and ``version``
          when pinned);
        * installed, wanted absent → ``UPDATE`` with ``ensure`` present → absent;
        * installed, a pinned ``version`` differs from the installed one → ``UPDATE`` with
          ``version`` old → new;
        * otherwise ``NOOP``. ``prior`` is not consulted: the host is the truth.

        A package wanted present that asks for the apt cache (``update_cache`` /
        ``cache_valid_time``) also gets an ``apt cache`` change ("refresh", before it the age):
        with ``cache_valid_time`` whenever the cache is older than that (a ``NOOP`` becomes an
        ``UPDATE`` that only refreshes), with ``update_cache`` alone whenever it installs.
        """
        action, changes = self._plan_package(desired, observed)
        if desired.get("ensure", "present") == "absent" or not _wants_cache(desired):
            return action, changes
        age = (observed or {}).get("_cache_age")
        valid = desired.get("cache_valid_time")
        # update_cache alone: before an install; cache_valid_time: whenever it is too old
        refresh = action is not Action.NOOP if valid is None else (age is None or age >= valid)
        if refresh:
            changes = [*changes, AttrChange(CACHE_CHANGE, age_text(age), REFRESH)]
            if action is Action.NOOP:
                action = Action.UPDATE
        return action, changes

    def _plan_package(
        self, desired: dict[str, Any], observed: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        name = str(desired["name"])
        have = observed if observed is not None else _absent(name)
        want_present = desired.get("ensure", "present") != "absent"
        installed = have.get("ensure") == "present"
        pinned = desired.get("version")
        if want_present and not installed:
            changes = [AttrChange("ensure", "absent", "present")]
            if pinned is not None:
                changes.append(AttrChange("version", None, pinned))
            return Action.CREATE, changes
        if not want_present:
            if installed:
                return Action.UPDATE, [AttrChange("ensure", "present", "absent")]
            return Action.NOOP, []
        if pinned is not None and pinned != have.get("version"):
            return Action.UPDATE, [AttrChange("version", have.get("version"), pinned)]
        return Action.NOOP, []

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
        """Install and remove packages for all ``changes`` with at most one ``apt-get install``
        and one ``apt-get remove`` (plus one ``apt-get update`` and a second install when the
        package lists were missing or stale).

        Installs: ``CREATE``, ``REPLACE`` and ``UPDATE`` whose ``after`` wants the package
        present; removals: ``DELETE`` (the resource left the configuration) and ``UPDATE`` to
        ``ensure="absent"``. A ``REPLACE`` whose old package name differs also removes the old
        package. Installs run before removals, so a package that replaces another (through
        ``Conflicts``) takes over before the old one goes. ``NOOP`` changes run nothing.

        Returns, per change in order: the stored attributes as re-read from the host after the
        install (the actual installed version), None for a ``DELETE``, or an
        :class:`ApplyError` — when an apt-get command fails, every change in that command gets
        the error with apt's message tail.

        Changes with a planned ``apt cache`` refresh get one ``apt-get update`` before the
        install (skipped when every one of them gives a ``cache_valid_time`` and the cache,
        read again now, is younger than it: a change earlier in this apply refreshed it). An
        ``UPDATE`` that only refreshes installs nothing (``apt-get install`` of an installed
        package could upgrade it, which the plan did not show). When the refresh fails, the
        changes that asked for it fail with apt's message and are not installed.
        """
        results: list[dict[str, Any] | None | Exception] = [None] * len(changes)
        names: dict[int, str] = {}
        installs: list[tuple[int, str]] = []  # (change index, "name" or "name=version")
        removals: list[tuple[int, str]] = []  # (change index, package name)
        removed: set[int] = set()  # changes whose outcome is "not installed"
        refresh: list[int] = []  # changes with a planned apt cache refresh
        for i, change in enumerate(changes):
            try:
                name = names[i] = _name_of(change)
            except ApplyError as exc:
                results[i] = exc
                continue
            after = change.after or {}
            planned = {c.name for c in change.changes}
            if CACHE_CHANGE in planned and change.action is not Action.DELETE:
                refresh.append(i)
                planned.discard(CACHE_CHANGE)
            if change.action is Action.NOOP:
                results[i] = self.stored({**_absent(name), **(change.before or {})})
            elif change.action is Action.DELETE or after.get("ensure", "present") == "absent":
                removed.add(i)
                if change.before is None or change.before.get("ensure") != "absent":
                    removals.append((i, name))
            elif change.action is Action.UPDATE and not planned:
                pass  # a cache refresh only: nothing to install
            else:
                version = after.get("version")
                installs.append((i, f"{name}={version}" if version else name))
                old = (change.before or change.prior or {}).get("name")
                if change.action is Action.REPLACE and isinstance(old, str) and old != name:
                    removals.append((i, old))

        failed: set[int] = set()
        if refresh:
            err = self._refresh(conn, [changes[i] for i in refresh])
            if err is not None:
                for i in refresh:
                    results[i] = err
                    failed.add(i)
                installs = [(i, arg) for i, arg in installs if i not in failed]
                removals = [(i, n) for i, n in removals if i not in failed]
        if installs:
            err = self._install(conn, list(dict.fromkeys(arg for _, arg in installs)))
            if err is not None:
                for i, _ in installs:
                    results[i] = err
                    failed.add(i)
        # a REPLACE whose install failed keeps its old package
        removals = [(i, name) for i, name in removals if i not in failed]
        if removals:
            err = self._remove(conn, list(dict.fromkeys(name for _, name in removals)))
            if err is not None:
                for i, _ in removals:
                    results[i] = err
                    failed.add(i)

        done = [i for i in names if i not in failed and changes[i].action is not Action.NOOP]
        if not done:
            return results
        found = self._query(conn, [names[i] for i in done])
        for i in done:
            name = names[i]
            now = found.get(name) or _absent(name)
            if i in removed:
                if now["ensure"] != "absent":
                    results[i] = ApplyError(f"{name} is still installed after apt-get remove")
                else:
                    results[i] = None if changes[i].action is Action.DELETE else self.stored(now)
                continue
            pinned = (changes[i].after or {}).get("version")
            if now["ensure"] != "present":
                results[i] = ApplyError(f"{name} is not installed after apt-get install")
            elif pinned and now["version"] != pinned:
                results[i] = ApplyError(f"{name}: version {now['version']} is installed, "
                                        f"not the pinned {pinned}")
            else:
                results[i] = self.stored(now)
        return results

    def _refresh(self, conn: Connector, changes: Sequence[ResourceChange]
                 ) -> ApplyError | None:
        """The planned cache refresh of ``changes``: one ``apt-get update``, unless every one
        of them has a ``cache_valid_time`` the cache now meets. Returns the failure, or None."""
        valid = [(c.after or {}).get("cache_valid_time") for c in changes]
        if all(isinstance(v, int) for v in valid):
            age = cache_age(conn)
            if age is not None and age < min(v for v in valid if isinstance(v, int)):
                return None
        res = apt_update(conn)
        return None if res.ok else _apt_error("apt-get update", res)

    def _install(self, conn: Connector, args: list[str]) -> ApplyError | None:
        """One ``apt-get install`` of ``args``; when it fails because the package lists are
        missing or stale, one ``apt-get update -q`` and a retry. Returns the failure, or None."""
        res = conn.run([*_APT_INSTALL, *args], env=_APT_ENV)
        if res.ok:
            return None
        output = res.stdout.decode("utf-8", "replace") + res.stderr.decode("utf-8", "replace")
        if not any(marker in output for marker in _STALE_LISTS):
            return _apt_error("apt-get install", res)
        update = apt_update(conn)
        if not update.ok:
            return _apt_error("apt-get update (after: " + _last_error(output) + ")", update)
        res = conn.run([*_APT_INSTALL, *args], env=_APT_ENV)
        return None if res.ok else _apt_error("apt-get install", res)

    def _remove(self, conn: Connector, names: list[str]) -> ApplyError | None:
        """One ``apt-get remove`` of ``names``. Returns the failure, or None."""
        res = conn.run([*_APT_REMOVE, *names], env=_APT_ENV)
        return None if res.ok else _apt_error("apt-get remove", res)


def _last_error(output: str) -> str:
    """apt's last ``E:`` line in ``output`` (or its last line)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or ["no output"])[-1]


#: how many package lists the host has, a separator, then ``apt-cache policy`` of the names
_POLICY = ("n=$(ls /var/lib/apt/lists/ 2>/dev/null | grep -c '_Packages' || true); "
           "echo \"lists $n\"; apt-cache policy -- \"$@\"")


def _policy_argv(names: Sequence[str]) -> tuple[str, ...]:
    return ("sh", "-c", _POLICY, "sh", *names)


def _parse_policy(output: str) -> set[str] | None:
    """The names ``apt-cache policy`` printed a block for; None when the host has no package
    lists (nothing can be told) or the output is not the command's."""
    lines = output.splitlines()
    if not lines or not lines[0].startswith("lists "):
        return None
    if lines[0].split()[1:] in ([], ["0"]):
        return None
    return {line[:-1].split(":")[0] for line in lines[1:]
            if line.endswith(":") and not line.startswith((" ", "\t"))}


def _dpkg_query(names: Sequence[str]) -> tuple[str, ...]:
    return ("dpkg-query", "-W", "-f", DPKG_FORMAT, "--", *names)
