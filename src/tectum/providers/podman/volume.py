"""``podman_volume``: a named podman volume (``podman volume create``).

The model follows Terraform's docker provider ``docker_volume`` (``name``, ``driver``,
``driver_opts``, ``labels``; every argument forces a new volume) and Ansible's
``containers.podman.podman_volume`` (``name``, ``driver``, ``label``, ``options``), with
podman's own CLI (``podman-volume-create(1)``) underneath:

* ``name`` (identity): podman's volume name rule ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``, checked at
  plan time (a name podman would read as an option never reaches it).
* ``labels``: ``{KEY: VALUE}`` strings, ``--label KEY=VALUE``. tectum adds
  ``tectum.managed=true`` to every volume it creates; that label is never compared or shown
  (a volume found without it is not changed for it), and a stack may not set it.
* ``driver``: ``--driver`` (default ``"local"``).
* ``options``: ``{KEY: VALUE}`` strings, ``--opt KEY=VALUE`` (e.g. ``{"type": "tmpfs",
  "device": "tmpfs", "o": "size=64m"}``). podman records some values it derives from the
  ``o`` option under upper-case keys (``UID``, ``GID``, ``SIZE``, ``INODES``, ``NOQUOTA``);
  those are not compared unless the stack sets them.
* ``mountpoint`` (computed, stored): where the volume's data lives on this machine.

Podman cannot change a volume: every setting forces a new one, and replacing a volume deletes
its data (the plan warns). Reads are one ``podman volume inspect`` of every volume at once.
Objects are found by their exact name: podman resolves a volume name that matches no volume as
a *prefix* of another one (``podman volume rm ab`` removes ``abc``), so a delete first checks
that a volume of exactly that name exists and never passes ``--force`` (which would remove the
containers using it).

A volume offers the implicit key ``("volume", NAME)``: a container that mounts it depends on
it, so the volume is made before the container and deleted after it. A volume still used by a
container (one not in the stack, or one created by hand) is not deleted: the apply fails
naming the containers (``podman ps -a --filter volume=NAME``). A volume tectum found already
there (not created by it) is only forgotten when its resource goes (the engine's
:meth:`~tectum.providers.base.ResourceType.takes_over_as_created`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from tectum.plans.plan import Action, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem, ResourceType
from tectum.providers.podman.client import Podman, PodmanError
from tectum.schema import Attr, Schema
from tectum.values import is_known

#: the label tectum puts on every volume it creates (never compared, never shown)
MANAGED_LABEL = "tectum.managed"
#: podman's volume name rule (libpod ``define.NameRegex``)
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
#: option keys podman derives from the ``o`` option of the local driver and records itself
_DERIVED_OPTIONS = frozenset({"UID", "GID", "SIZE", "INODES", "NOQUOTA"})


def _valid_name(value: Any) -> str | None:
    """Validator for ``name``: podman's volume name charset (see :data:`NAME_RE`)."""
    if not isinstance(value, str) or not is_known(value):
        return None
    if not NAME_RE.fullmatch(value):
        return (f"{value!r} is not a podman volume name: it starts with a letter or a digit "
                "and holds letters, digits, _ . and - only, e.g. \"app-data\"")
    return None


def _valid_driver(value: Any) -> str | None:
    if not isinstance(value, str) or not is_known(value):
        return None
    if not value or value.startswith("-") or "\x00" in value:
        return f"{value!r} is not a volume driver name (e.g. \"local\")"
    return None


def _string_map(what: str, reserved: frozenset[str] = frozenset()
                ) -> Callable[[Any], str | None]:
    """A validator for a ``{KEY: VALUE}`` table of strings given to podman as ``KEY=VALUE``:
    keys are non-empty and hold no ``=`` (podman splits at the first one), neither holds a NUL
    byte, and no key is in ``reserved``."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return None  # (the type check says so)
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                return (f"{what} are strings: {key!r} = {item!r} is not (write "
                        f"{{\"{key}\" = \"{item}\"}})")
            if not is_known(key) or not is_known(item):
                continue
            if not key or "=" in key or "\x00" in key or key.startswith("-"):
                return (f"{key!r} is not a valid key of {what} (non-empty, no '=', no NUL, "
                        "not starting with '-')")
            if "\x00" in item:
                return f"the value of {key!r} in {what} holds a NUL byte"
            if key in reserved:
                return f"{key!r} is set by tectum itself on every volume it creates"
        return None

    return check


class VolumeType(ResourceType[Podman]):
    """A named volume (see the module docstring): ``Volume("data")``, or
    ``Volume("cache", options={"type": "tmpfs", "device": "tmpfs"})``."""

    name = "podman_volume"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=_valid_name,
                     description="the volume's name: [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        "labels": Attr(dict, default={}, force_new=True,
                       validate=_string_map("labels", frozenset({MANAGED_LABEL})),
                       description="labels {KEY = VALUE} (tectum adds tectum.managed=true)"),
        "driver": Attr(str, default="local", force_new=True, validate=_valid_driver,
                       description="the volume driver (podman volume create --driver)"),
        "options": Attr(dict, default={}, force_new=True, validate=_string_map("options"),
                        description="driver options {KEY = VALUE} (--opt KEY=VALUE), e.g. "
                                    "{type = \"tmpfs\", device = \"tmpfs\"}"),
        "mountpoint": Attr(str, computed=True,
                           description="where the volume's data lives on this machine"),
    })
    stored_computed = ("mountpoint",)

    # -- configuration -------------------------------------------------------------------
    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Fill the defaults and check the resolved values again (a reference resolved at
        plan time was not checked when declared). Raises ``ValueError``."""
        out = super().prepare(attrs, base_dir)
        for key in ("name", "labels", "driver", "options"):
            value = out.get(key)
            if value is None:
                continue
            problem = self.schema.attrs[key].check(value)
            if problem is not None:
                raise ValueError(f"Attribute {key!r}: {problem}")
        for key in ("labels", "options"):
            if out.get(key) is None:
                out[key] = {}
        return out

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """``("volume", NAME)``: containers mounting the volume need it."""
        name = attrs.get("name")
        return [("volume", name)] if isinstance(name, str) else []

    # -- refresh -------------------------------------------------------------------------
    def read(self, target: Podman, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """Every volume with one ``podman volume inspect`` (exact names only). Returns per
        item ``{"name", "labels", "driver", "options", "mountpoint"}`` (labels without
        :data:`MANAGED_LABEL`, options without the keys podman derives itself unless the
        item sets them), or None when no volume has that name. Raises :class:`ReadError`
        when podman fails."""
        names = [str(i.attrs["name"]) for i in items if isinstance(i.attrs.get("name"), str)]
        try:
            found = target.inspect("volume", list(dict.fromkeys(names)))
        except PodmanError as exc:
            raise ReadError(str(exc)) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            info = found.get(str(item.attrs.get("name")))
            if info is None:
                out.append(None)
                continue
            wanted = (item.desired or item.prior or {}).get("options") or {}
            out.append(_observed(info, wanted))
        return out

    # -- plan ----------------------------------------------------------------------------
    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        where = prior.get("mountpoint")
        return ("deletes the volume's data" + (f" ({where})" if where else "") +
                "; fails while a container uses it")

    def warnings(self, change: ResourceChange) -> list[str]:
        """A replaced or deleted volume's data is gone: undoing the change makes an empty
        volume."""
        if change.action in (Action.REPLACE, Action.DELETE):
            return ["the volume is deleted with its data; undoing this makes it anew, empty "
                    "(the data is not brought back)"]
        return []

    # -- apply ---------------------------------------------------------------------------
    def apply(self, target: Podman, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE: ``podman volume create``; DELETE: ``podman volume rm NAME`` (never
        ``--force``); REPLACE: both, in that order. Raises :class:`ApplyError` (a volume in
        use names the containers using it)."""
        if change.action in (Action.DELETE, Action.REPLACE):
            old = change.prior or change.before or {}
            if isinstance(old.get("name"), str):
                self._delete(target, str(old["name"]))
            if change.action is Action.DELETE:
                return None
        after = dict(change.after or {})
        return self._create(target, after)

    def _create(self, podman: Podman, after: dict[str, Any]) -> dict[str, Any]:
        name = str(after["name"])
        args = ["volume", "create", "--driver", str(after.get("driver") or "local")]
        for key, value in sorted((after.get("labels") or {}).items()):
            args += ["--label", f"{key}={value}"]
        args += ["--label", f"{MANAGED_LABEL}=true"]
        for key, value in sorted((after.get("options") or {}).items()):
            args += ["--opt", f"{key}={value}"]
        args += ["--", name]
        try:
            podman.run(args, what=f"podman volume create {name}")
            info = podman.inspect("volume", [name]).get(name)
        except PodmanError as exc:
            hint = ""
            if "already exists" in str(exc):
                hint = (" (a volume of that name was made meanwhile: run tectum plan again, "
                        "or tectum import it)")
            raise ApplyError(f"{exc}{hint}") from None
        if info is None:
            raise ApplyError(f"podman volume create {name} succeeded but podman volume "
                             f"inspect finds no volume named {name}")
        return self.stored({**after, "mountpoint": info.get("Mountpoint")})

    def _delete(self, podman: Podman, name: str) -> None:
        try:
            # exact name only: rm would take a missing name as a prefix of another volume
            if name not in podman.inspect("volume", [name]):
                return
            proc = podman.run(["volume", "rm", "--", name], check=False,
                              what=f"podman volume rm {name}")
            if proc.returncode == 0:
                return
            text = (proc.stderr or proc.stdout).decode("utf-8", "replace")
            if "no such volume" in text:
                return  # (removed meanwhile)
            if "being used" in text or "in use" in text:
                users = podman.run(["ps", "-a", "--filter", f"volume={name}", "--format",
                                    "{{.Names}}"], mutating=False,
                                   what=f"podman ps --filter volume={name}")
                names = users.stdout.decode("utf-8", "replace").split()
                if names:
                    raise ApplyError(
                        f"volume {name} is in use by container(s) {', '.join(names)}: it was "
                        "not deleted. Remove those containers first (podman rm "
                        f"{' '.join(names)}), or declare them in the stack as "
                        "podman_container resources mounting it, so tectum removes them "
                        "before the volume; then apply again")
            raise ApplyError(podman.failure(proc, f"podman volume rm {name}"))
        except PodmanError as exc:
            raise ApplyError(str(exc)) from None


def _observed(info: dict[str, Any], wanted_options: dict[str, Any]) -> dict[str, Any]:
    """A ``podman volume inspect`` entry as attributes (see :meth:`VolumeType.read`)."""
    labels = {str(k): str(v) for k, v in (info.get("Labels") or {}).items()
              if k != MANAGED_LABEL}
    options = {str(k): str(v) for k, v in (info.get("Options") or {}).items()
               if k not in _DERIVED_OPTIONS or k in wanted_options}
    return {"name": info.get("Name"), "labels": labels,
            "driver": info.get("Driver") or "local", "options": options,
            "mountpoint": info.get("Mountpoint")}
