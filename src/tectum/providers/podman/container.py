"""``podman_container``: a container of this machine's podman, created from an image and kept
running (or stopped) as configured.

Shapes (desired, after :meth:`ContainerType.prepare`)::

    name             str, identity ([a-zA-Z0-9][a-zA-Z0-9_.-]*)
    image            str: "name:tag" or an image id (typically a podman_image's image_id)
    command          list[str] | None (None: the image's CMD)
    env              dict[str, str] (values may be secrets: podman takes them with --env NAME
                     from its own environment, never on a command line or on disk)
    network          "bridge" (podman's default) | "none" | "host" | "/abs/netns/path"
    volumes          sorted list of "NAME_OR_ABS_PATH:/dest" or "...:/dest:ro"
    ulimits          dict NAME -> "SOFT:HARD" (over the provider's default ulimits)
    restart_policy   "no" | "on-failure" | "on-failure:N" | "always" | "unless-stopped"
    running          bool
    health_check     None | {"command": list[str] | str, "interval": int s, "retries": int}
    labels           dict[str, str] (tectum adds "tectum.managed=true", never shown)
    create_before_destroy  bool: lifecycle only, never compared with the world

Stored besides: ``id`` (the container id) and ``image_id`` (the id of the image it runs).

Every attribute but ``running`` forces a new container (podman cannot change them in place;
Terraform's docker provider ``docker_container`` does the same). ``running`` starts or stops the
container (Ansible's ``containers.podman.podman_container`` ``state: started/stopped``).

Images are compared by id, never by tag: a read resolves the configured image to its id and
reports ``image`` as configured when the container runs that id, else the container's own image
id; so a re-tagged image replaces the container and a tag that still names the same image never
does. Environment and labels are compared without what the image (and podman itself: ``PATH``,
``TERM``, ``container``, ``HOME``, ``HOSTNAME``) puts there, so a variable added by hand is
drift and an inherited one is not.

Reads are batched: one ``podman container inspect`` of every container name and one ``podman
image inspect`` of every image needed, whatever the number of containers.

A replace with ``create_before_destroy`` creates and starts the new container under the name
``NAME.tectum-new``, waits until it runs (and passes its health check), then removes the old one
and renames the new one (Terraform's ``create_before_destroy`` lifecycle); a killed run leaves
at most that temporary container, which :meth:`ContainerType.sweep_interrupted` adopts (the old
one is gone) or removes.

Health checks: podman 4.3 runs health checks from systemd timers, which do not exist without
systemd, so the apply itself runs ``podman healthcheck run NAME`` until it passes, up to
``retries * interval`` seconds plus a start grace (Docker's ``--health-start-period``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from tectum.masking import REDACTOR, redact_value
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadItem, ResourceType
from tectum.providers.podman.client import Podman, PodmanError, parse_ulimit
from tectum.schema import Attr, Schema
from tectum.values import is_known

#: a container name podman accepts
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
#: an environment variable's name (POSIX shells')
ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: a restart policy podman knows
RESTART_RE = re.compile(r"(no|always|unless-stopped|on-failure(:[0-9]+)?)\Z")
#: the suffix of the temporary name a create_before_destroy replace starts the new one under
TEMP_SUFFIX = ".tectum-new"
#: the label tectum puts on every container it creates (never compared)
MANAGED_LABEL = "tectum.managed"
#: environment variables podman adds to every container itself (not drift unless configured)
PODMAN_ENV = frozenset({"PATH", "TERM", "container", "HOME", "HOSTNAME"})
#: networks besides a namespace path
NETWORKS = ("bridge", "none", "host")
#: seconds podman waits for a container to stop before it kills it (stop, rm, replace)
STOP_TIMEOUT = 10
#: seconds a health check may take to pass beyond retries * interval (Docker's start period)
START_GRACE = 10.0
#: seconds after ``podman start`` before the container is looked at again (it may exit at once)
SETTLE = 0.5
#: log lines shown when a container fails to start or to become healthy
LOG_LINES = 20
#: podman's rlimit value for "unlimited"
_UNLIMITED = str(2**64 - 1)


# -- validation ------------------------------------------------------------------------------

def _bad_text(what: str, value: Any, *, dash: bool = True) -> str | None:
    """A sentence when ``value`` (a known string) cannot reach podman as one argv item."""
    if not isinstance(value, str) or not is_known(value):
        return None
    if "\0" in value or "\n" in value or "\r" in value:
        return f"{what} {value!r} holds a NUL byte or a line break"
    if dash and value.startswith("-"):
        return f"{what} {value!r} starts with '-' (podman would read it as an option)"
    return None


def _norm_volume(spec: str) -> str:
    """``SRC:/dest[:ro|:rw]`` in canonical form (``:rw`` dropped, paths normalised). Raises
    ``ValueError`` for anything else."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ValueError(f"volume {spec!r}: expected NAME_OR_ABS_PATH:/dest[:ro|:rw]")
    src, dest = parts[0], parts[1]
    if not src or not dest.startswith("/"):
        raise ValueError(f"volume {spec!r}: the source is a volume name or an absolute path, "
                         "the destination an absolute path")
    if src.startswith("/"):
        src = os.path.normpath(src)
    elif not NAME_RE.match(src):
        raise ValueError(f"volume {spec!r}: {src!r} is no volume name "
                         "([a-zA-Z0-9][a-zA-Z0-9_.-]*) and no absolute path")
    out = f"{src}:{os.path.normpath(dest)}"
    return out + ":ro" if len(parts) == 3 and parts[2] == "ro" else out


def _norm_ulimits(value: Mapping[str, Any]) -> dict[str, str]:
    """``{name: "SOFT:HARD"}`` (``"N"`` and ints as ``"N:N"``). Raises ``ValueError``."""
    out: dict[str, str] = {}
    for name, limit in value.items():
        out[str(name)] = parse_ulimit(str(name), limit).split("=", 1)[1]
    return out


def _norm_health(value: Mapping[str, Any]) -> dict[str, Any]:
    """``{command, interval, retries}`` with defaults (5 s, 3). Raises ``ValueError``."""
    unknown = sorted(set(value) - {"command", "interval", "retries"})
    if unknown:
        raise ValueError(f"health_check: unknown key(s) {unknown} (command, interval, retries)")
    command = value.get("command")
    if isinstance(command, list):
        if not command or not all(isinstance(c, str) for c in command):
            raise ValueError("health_check command: a non-empty list of strings, or a shell "
                             "command line")
    elif not isinstance(command, str) or not command.strip():
        raise ValueError("health_check command: a non-empty list of strings, or a shell "
                         "command line")
    elif is_known(command) and command.lstrip().startswith("["):
        raise ValueError("health_check command: a shell line starting with '[' would be read "
                         "as JSON by podman; give a list instead")
    interval, retries = value.get("interval", 5), value.get("retries", 3)
    for key, num in (("interval", interval), ("retries", retries)):
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"health_check {key}: a positive integer, got {num!r}")
    return {"command": list(command) if isinstance(command, list) else command,
            "interval": interval, "retries": retries}


def _problems(attrs: Mapping[str, Any]) -> list[str]:
    """What podman would misread in ``attrs`` (known values only; tokens are checked once
    resolved)."""
    out: list[str] = []
    name = attrs.get("name")
    if isinstance(name, str) and is_known(name) and not NAME_RE.match(name):
        out.append(f"container name {name!r} is not [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    if isinstance(name, str) and name.endswith(TEMP_SUFFIX):
        out.append(f"container name {name!r} ends with {TEMP_SUFFIX!r}, which tectum uses "
                   "for replacements")
    out += filter(None, [_bad_text("image", attrs.get("image"))])
    for arg in attrs.get("command") or []:
        if isinstance(arg, str) and "\0" in arg:
            out.append(f"command argument {arg!r} holds a NUL byte")
    for key, value in (attrs.get("env") or {}).items():
        if not isinstance(key, str) or not ENV_KEY_RE.match(key):
            out.append(f"environment variable name {key!r} is not [A-Za-z_][A-Za-z0-9_]*")
        elif isinstance(value, str) and is_known(value) and (
                "\0" in value or "\n" in value or "\r" in value):
            out.append(f"environment variable {key} holds a NUL byte or a line break "
                       "(an environment value cannot carry it through podman)")
    for key, value in (attrs.get("labels") or {}).items():
        out += filter(None, [_bad_text("label name", key), _bad_text("label value", value,
                                                                     dash=False)])
        if isinstance(key, str) and ("=" in key or not key):
            out.append(f"label name {key!r} is empty or holds '='")
        if key == MANAGED_LABEL:
            out.append(f"label {MANAGED_LABEL!r} is tectum's own")
    net = attrs.get("network")
    if isinstance(net, str) and is_known(net) and net not in NETWORKS \
            and not (net.startswith("/") and "\0" not in net and "\n" not in net):
        out.append(f"network {net!r}: expected bridge, none, host or an absolute network "
                   "namespace path")
    policy = attrs.get("restart_policy")
    if isinstance(policy, str) and is_known(policy) and not RESTART_RE.match(policy):
        out.append(f"restart_policy {policy!r}: expected no, on-failure[:N], always or "
                   "unless-stopped")
    for spec in attrs.get("volumes") or []:
        if isinstance(spec, str) and is_known(spec):
            try:
                _norm_volume(spec)
            except ValueError as exc:
                out.append(str(exc))
    if isinstance(attrs.get("ulimits"), Mapping):
        try:
            _norm_ulimits(attrs["ulimits"])
        except ValueError as exc:
            out.append(str(exc))
    if isinstance(attrs.get("health_check"), Mapping):
        try:
            _norm_health(attrs["health_check"])
        except ValueError as exc:
            out.append(str(exc))
    return out


# -- reading ---------------------------------------------------------------------------------

def _pairs(entries: Any) -> dict[str, str]:
    """``["K=V", ...]`` as a dict (podman's ``Config.Env``)."""
    out: dict[str, str] = {}
    for entry in entries or []:
        key, _, value = str(entry).partition("=")
        out[key] = value
    return out


def _own(found: Mapping[str, str], inherited: Mapping[str, str], managed: Any,
         implicit: frozenset[str] = frozenset()) -> dict[str, str]:
    """What of ``found`` the container was given itself: keys the configuration manages,
    and others unless the image has them with that value (or podman adds them: ``implicit``)."""
    keys = set(managed or ())
    return {k: v for k, v in sorted(found.items())
            if k in keys or (inherited.get(k) != v and k not in implicit)}


def _limits(found: Any) -> dict[str, str]:
    """podman's ``HostConfig.Ulimits`` as ``{name: "SOFT:HARD"}``."""
    out: dict[str, str] = {}
    for entry in found or []:
        name = str(entry.get("Name", "")).lower().removeprefix("rlimit_")
        soft, hard = (str(entry.get(k)) for k in ("Soft", "Hard"))
        out[name] = f"{'-1' if soft == _UNLIMITED else soft}:{'-1' if hard == _UNLIMITED else hard}"
    return out


def _health(found: Any, want: Any) -> dict[str, Any] | None:
    """podman's ``Config.Healthcheck`` as the ``health_check`` shape (None: none). podman
    stores a one-item list ``["true"]`` as the shell line ``"true"``: read as configured
    (``want``)."""
    if not isinstance(found, dict):
        return None
    test = list(found.get("Test") or [])
    if not test or test[0] == "NONE":
        return None
    command: list[str] | str = test[1] if test[0] == "CMD-SHELL" and len(test) == 2 \
        else list(test[1:]) if test[0] == "CMD" else list(test)
    wanted = want.get("command") if isinstance(want, dict) else None
    if isinstance(command, str) and wanted == [command]:
        command = [command]
    return {"command": command, "interval": int(found.get("Interval") or 0) // 1_000_000_000,
            "retries": int(found.get("Retries") or 0)}


def _volumes(mounts: Any, image_volumes: Any = None) -> list[str]:
    """Mounts as ``SOURCE:DEST[:ro]``, leaving out the anonymous volumes podman makes for
    the image's own ``VOLUME`` paths (not the configuration's)."""
    out = []
    anonymous = set(image_volumes or {})
    for mount in mounts or []:
        kind = mount.get("Type")
        if kind == "volume" and mount.get("Destination") in anonymous \
                and re.fullmatch(r"[0-9a-f]{64}", str(mount.get("Name") or "")):
            continue
        src = mount.get("Name") if kind == "volume" else mount.get("Source") \
            if kind == "bind" else None
        if not src:
            continue
        spec = f"{src}:{mount.get('Destination')}"
        out.append(spec if mount.get("RW", True) else spec + ":ro")
    return sorted(out)


def _network(mode: Any) -> str:
    text = str(mode or "bridge")
    return text.removeprefix("ns:") if text.startswith("ns:") else text


def _restart(policy: Any) -> str:
    policy = policy or {}
    name = str(policy.get("Name") or "no")
    count = int(policy.get("MaximumRetryCount") or 0)
    return f"{name}:{count}" if name == "on-failure" and count else name


class ContainerType(ResourceType[Podman]):
    """A podman container (see the module docstring for shapes and behaviour). Errors:
    ``ValueError`` from :meth:`prepare` for values podman would misread; :class:`ApplyError`
    from :meth:`apply` naming the podman call that failed, with the container's last log lines
    when it exits or never becomes healthy."""

    name = "podman_container"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True,
                     description="the container's name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"),
        "image": Attr(str, required=True, force_new=True,
                      description="an image: name:tag or an image id (compared by id)"),
        "command": Attr(list, force_new=True,
                        description="the command (argv list); default: the image's CMD"),
        "env": Attr(dict, default={}, force_new=True,
                    description="environment variables (values may be secrets)"),
        "network": Attr(str, default="bridge", force_new=True,
                        description="bridge, none, host or a network namespace path"),
        "volumes": Attr(list, default=[], force_new=True,
                        description="NAME_OR_ABS_PATH:/dest[:ro|:rw] mounts"),
        "ulimits": Attr(dict, default={}, force_new=True,
                        description="NAME = \"SOFT:HARD\" over the provider's ulimits"),
        "restart_policy": Attr(str, default="no", force_new=True,
                               description="no, on-failure[:N], always or unless-stopped"),
        "running": Attr(bool, default=True, description="started (true) or stopped (false)"),
        "health_check": Attr(dict, force_new=True,
                             description="{command, interval (s, 5), retries (3)}; apply "
                                         "waits until it passes"),
        "labels": Attr(dict, default={}, force_new=True, description="container labels"),
        "create_before_destroy": Attr(bool, default=False,
                                      description="a replace starts the new container before "
                                                  "the old one is removed"),
        "id": Attr(str, computed=True, description="the container id"),
        "image_id": Attr(str, computed=True, description="the id of the image it runs"),
    })
    stored_computed = ("id", "image_id")
    unobserved = frozenset({"create_before_destroy"})

    def __init__(self) -> None:
        #: per target: image reference -> its id (None: no such image), from the last read
        self._images: weakref.WeakKeyDictionary[Any, dict[str, str | None]] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        """Names, images, labels starting with '-' or holding NUL/line breaks, bad name
        charsets, bad environment variable names, malformed volumes, networks, restart
        policies, ulimits and health checks."""
        return _problems(attrs)

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Defaults filled in; volumes, ulimits and the health check in canonical form.
        Raises ``ValueError`` for what :meth:`check` refuses."""
        out = super().prepare(attrs, base_dir)
        problems = _problems(out)
        if problems:
            raise ValueError("; ".join(problems))
        if out.get("volumes"):
            out["volumes"] = sorted(_norm_volume(v) if isinstance(v, str) and is_known(v)
                                    else v for v in out["volumes"])
        if isinstance(out.get("ulimits"), Mapping) and is_known(out["ulimits"]):
            out["ulimits"] = _norm_ulimits(out["ulimits"])
        if isinstance(out.get("health_check"), Mapping):
            out["health_check"] = _norm_health(out["health_check"])
        if out.get("command") is not None:
            out["command"] = list(out["command"])
        out["env"] = dict(out.get("env") or {})
        out["labels"] = dict(out.get("labels") or {})
        return out

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The name, and the container id once known."""
        out: dict[str, Any] = {"name": attrs.get("name")}
        if attrs.get("id"):
            out["id"] = attrs["id"]
        return out

    def provides_host(self, attrs: dict[str, Any]) -> str | None:
        """``podman:NAME``: a role applied to the container (``apply_role(role,
        container)``) configures it through ``podman exec``."""
        name = attrs.get("name")
        return f"podman:{name}" if isinstance(name, str) else None

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """``("image", REF)`` for the image, ``("volume", NAME)`` for each named volume."""
        out: list[list[ImplicitKey]] = []
        image = attrs.get("image")
        if isinstance(image, str) and is_known(image):
            out.append([("image", image)])
        for spec in attrs.get("volumes") or []:
            if isinstance(spec, str) and is_known(spec) and not spec.startswith("/"):
                out.append([("volume", spec.split(":", 1)[0])])
        return out

    def describe(self, attrs: dict[str, Any]) -> str:
        return str(attrs.get("name") or "")

    def managed(self, desired: dict[str, Any]) -> list[str]:
        """Every settable attribute set, but ``create_before_destroy`` (lifecycle only)."""
        return [k for k in super().managed(desired) if k != "create_before_destroy"]

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return "stops and removes the container"

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action in (Action.REPLACE, Action.DELETE):
            name = (change.prior or change.before or change.after or {}).get("name")
            return [f"container {name}: what was written inside it outside its volumes is "
                    "lost"]
        return []

    # -- refresh -------------------------------------------------------------------------
    def read(self, target: Podman, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """Two podman calls for every item: ``podman container inspect`` of every name,
        ``podman image inspect`` of every configured image and every container's image.
        Raises :class:`PodmanError` when podman fails."""
        refs = [item.desired if item.desired is not None else (item.prior or {})
                for item in items]
        names = list(dict.fromkeys(str(r["name"]) for r in refs
                                   if isinstance(r.get("name"), str) and is_known(r["name"])))
        found = target.inspect("container", names)
        wanted = [str(r["image"]) for r in refs
                  if isinstance(r.get("image"), str) and is_known(r["image"]) and r["image"]]
        used = [str(c.get("Image")) for c in found.values() if c.get("Image")]
        images = target.inspect("image", list(dict.fromkeys(wanted + used)))
        resolved = {ref: (str(images[ref].get("Id")) if ref in images else None)
                    for ref in wanted}
        with self._lock:
            self._images[target] = resolved
        out: list[dict[str, Any] | None] = []
        for ref in refs:
            data = found.get(str(ref.get("name")))
            out.append(None if data is None else
                       self._observed(target, ref, data, images, resolved))
        return out

    def _observed(self, target: Podman, ref: Mapping[str, Any], data: Mapping[str, Any],
                  images: Mapping[str, Mapping[str, Any]],
                  resolved: Mapping[str, str | None]) -> dict[str, Any]:
        config = data.get("Config") or {}
        host = data.get("HostConfig") or {}
        image_id = str(data.get("Image") or "")
        image = images.get(image_id) or {}
        image_config = image.get("Config") or {}
        want_image = ref.get("image")
        same = isinstance(want_image, str) and resolved.get(want_image) == image_id \
            and bool(image_id)
        labels = _own(config.get("Labels") or {}, image.get("Labels")
                      or image_config.get("Labels") or {}, ref.get("labels"))
        labels.pop(MANAGED_LABEL, None)
        defaults = {k: v.split("=", 1)[1] for k, v in target.ulimits.items()}
        raw = ref.get("ulimits")
        want_limits: dict[str, str] = {}
        if isinstance(raw, dict) and is_known(raw):
            try:
                want_limits = _norm_ulimits(raw)
            except ValueError:
                want_limits = {}
        limits = _limits(host.get("Ulimits"))
        # only limits the configuration or the provider sets are compared (rootful podman
        # records its own defaults for the others)
        ulimits = {k: v for k, v in sorted(limits.items())
                   if k in want_limits or (k in defaults and defaults[k] != v)}
        state = data.get("State") or {}
        return {
            "name": str(data.get("Name", "")).lstrip("/"),
            "image": want_image if same else image_id,
            "command": list(config.get("Cmd") or []),
            "env": _own(_pairs(config.get("Env")), _pairs(image_config.get("Env")),
                        ref.get("env"), PODMAN_ENV),
            "network": _network(host.get("NetworkMode")),
            "volumes": _volumes(data.get("Mounts"), image_config.get("Volumes")),
            "ulimits": ulimits,
            "restart_policy": _restart(host.get("RestartPolicy")),
            "running": bool(state.get("Running")),
            "health_check": _health(config.get("Healthcheck"), ref.get("health_check")),
            "labels": labels,
            "create_before_destroy": bool(ref.get("create_before_destroy", False)),
            "id": str(data.get("Id") or ""),
            "image_id": image_id,
        }

    def missing(self, target: Podman, items: Sequence[ReadItem]
                ) -> list[list[tuple[ImplicitKey | None, str]]]:
        """A configured image that is not in podman's storage, as ``("image", REF)`` (a
        ``podman_image`` offering that key excuses it)."""
        with self._lock:
            known = dict(self._images.get(target) or {})
        refs = [i.desired.get("image") if i.desired is not None else None for i in items]
        ask = [r for r in refs if isinstance(r, str) and is_known(r) and r and r not in known]
        if ask:
            found = target.inspect("image", list(dict.fromkeys(ask)))
            known.update({r: str(found[r].get("Id")) if r in found else None for r in ask})
        out: list[list[tuple[ImplicitKey | None, str]]] = []
        for item, ref in zip(items, refs, strict=True):
            if isinstance(ref, str) and is_known(ref) and ref and known.get(ref) is None:
                name = (item.desired or {}).get("name")
                out.append([(("image", ref),
                             f"container {name}: image {ref!r} is not in podman's storage "
                             "(build or import it with a podman_image, or name an image "
                             "that exists; tectum never pulls)")])
            else:
                out.append([])
        return out

    def sweep_interrupted(self, target: Podman, identities: Sequence[dict[str, Any]]) -> None:
        """A killed ``create_before_destroy`` replace leaves ``NAME.tectum-new``: it is
        removed (the plan made after the kill already decided what ``NAME`` needs: made
        again if the old one is gone)."""
        names = [str(i["name"]) for i in identities if isinstance(i.get("name"), str)]
        if not names:
            return
        temps = [n + TEMP_SUFFIX for n in names]
        found = target.inspect("container", names + temps)
        for temp in temps:
            if temp in found:
                self._remove(target, temp)

    # -- apply ---------------------------------------------------------------------------
    def apply(self, target: Podman, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE: create (+ start); UPDATE: start or stop; DELETE: ``podman rm -f``; REPLACE:
        remove then create, or with ``create_before_destroy`` create, start and wait under a
        temporary name, remove the old one and rename. Raises :class:`ApplyError`."""
        try:
            return self._apply(target, change)
        except PodmanError as exc:
            raise ApplyError(str(exc)) from None

    def _apply(self, target: Podman, change: ResourceChange) -> dict[str, Any] | None:
        if change.action is Action.DELETE:
            old = change.prior or change.before or {}
            self._remove(target, str(old["name"]))
            return None
        after = dict(change.after or {})
        name = str(after["name"])
        if change.action is Action.UPDATE:
            ident = self._exact(target, name)
            if ident is None:
                raise ApplyError(f"container {name} is gone since the plan: run plan again")
            if after.get("running", True):
                target.run(["start", ident], what=f"starting container {name}")
                self._wait(target, name, after, remove_on_failure=False)
            else:
                target.run(["stop", "-t", str(STOP_TIMEOUT), ident],
                           what=f"stopping container {name}")
        elif change.action is Action.REPLACE and after.get("create_before_destroy"):
            temp = name + TEMP_SUFFIX
            self._remove(target, temp)  # (left by an earlier killed replace)
            self._make(target, temp, after)
            self._remove(target, name)
            target.run(["rename", temp, name], what=f"renaming {temp} to {name}")
        else:
            if change.action is Action.REPLACE:
                old = change.prior or change.before or after
                self._remove(target, str(old.get("name") or name))
            self._make(target, name, after)
        (found,) = self.read(target, [ReadItem(after, None)])
        if found is None:
            raise ApplyError(f"container {name} is gone right after it was made")
        return self.stored(found)

    @staticmethod
    def _exact(target: Podman, name: str) -> str | None:
        """The full id of the container named exactly ``name`` (None: there is none). podman
        itself would take a name that matches nothing as an id prefix of another container."""
        found = target.inspect("container", [name]).get(name)
        return str(found.get("Id")) if found is not None and found.get("Id") else None

    def _remove(self, target: Podman, name: str) -> None:
        ident = self._exact(target, name)
        if ident is not None:
            # -v: the anonymous volumes podman made for it go too (named ones stay)
            target.run(["rm", "-f", "-v", "-i", "-t", str(STOP_TIMEOUT), ident],
                       what=f"removing container {name}")

    def _make(self, target: Podman, name: str, after: Mapping[str, Any]) -> None:
        """``podman create`` (environment values through podman's own environment:
        ``--env NAME``) and, when ``running``, ``podman start`` and the wait (:meth:`_wait`)."""
        args = ["create", "--name", name, *target.ulimit_args(after.get("ulimits") or {})]
        network = str(after.get("network") or "bridge")
        args += ["--network", network if network in NETWORKS else f"ns:{network}"]
        args += ["--restart", str(after.get("restart_policy") or "no")]
        args += ["--label", f"{MANAGED_LABEL}=true"]
        for key, value in sorted((after.get("labels") or {}).items()):
            args += ["--label", f"{key}={value}"]
        for spec in after.get("volumes") or []:
            args += ["--volume", str(spec)]
        health = after.get("health_check")
        if health:
            command = health["command"]
            args += ["--health-cmd", json.dumps(command) if isinstance(command, list)
                     else str(command),
                     "--health-interval", f"{int(health.get('interval', 5))}s",
                     "--health-retries", str(int(health.get("retries", 3)))]
        env = {str(k): str(v) for k, v in (after.get("env") or {}).items()}
        # ``--env NAME`` takes the value from podman's own environment: never on a command
        # line, never in a file a kill -9 could leave behind
        for key in sorted(env):
            args += ["--env", key]
        args += ["--", str(after["image"]), *[str(a) for a in after.get("command") or []]]
        target.run(args, what=f"creating container {name}", env=env)
        if after.get("running", True):
            try:
                target.run(["start", name], what=f"starting container {name}")
            except PodmanError as exc:
                logs = self._logs(target, name)
                self._remove(target, name)
                raise ApplyError(f"{exc}{logs}") from None
            self._wait(target, name, after, remove_on_failure=True)

    def _wait(self, target: Podman, name: str, after: Mapping[str, Any], *,
              remove_on_failure: bool) -> None:
        """Check the container still runs shortly after its start and, with a health
        check, run ``podman healthcheck run`` until it passes (at most retries * interval +
        :data:`START_GRACE` seconds). Raises :class:`ApplyError` with its last log lines
        (after removing it, with ``remove_on_failure``)."""
        def fail(why: str) -> ApplyError:
            logs = self._logs(target, name)
            if remove_on_failure:
                self._remove(target, name)
            return ApplyError(f"container {name} {why}{logs}")

        time.sleep(SETTLE)
        self._running(target, name, fail)
        health = after.get("health_check")
        if not health:
            return
        interval, retries = int(health.get("interval", 5)), int(health.get("retries", 3))
        limit = retries * interval + START_GRACE
        deadline = time.monotonic() + limit
        last = ""
        while True:
            proc = target.run(["healthcheck", "run", name], check=False, mutating=False,
                              what=f"the health check of container {name}")
            if proc.returncode == 0:
                return
            last = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
            self._running(target, name, fail)
            if time.monotonic() >= deadline:
                shown = f" (last: {last.splitlines()[-1]})" if last else ""
                raise fail(f"did not pass its health check within {limit:g} s{shown}")
            time.sleep(min(float(interval), 1.0))

    def _running(self, target: Podman, name: str, fail: Any) -> None:
        state = (target.inspect("container", [name]).get(name) or {}).get("State") or {}
        if not state.get("Running"):
            code = state.get("ExitCode")
            raise fail(f"exited right after it started (status {state.get('Status', 'gone')}"
                       f", exit code {code})")

    def _logs(self, target: Podman, name: str) -> str:
        """The container's last :data:`LOG_LINES` log lines, as a message tail ('' if none)."""
        try:
            proc = target.run(["logs", "--tail", str(LOG_LINES), name], check=False,
                              mutating=False)
        except PodmanError:
            return ""
        text = (proc.stdout + proc.stderr).decode("utf-8", "replace").rstrip()
        if not text:
            return "; it logged nothing"
        if REDACTOR:
            text = str(redact_value(text))
        return f"; its last log lines:\n{text}"
