"""``podman_image``: an image built from a base and a role, content-addressed.

Shapes: desired ``{"name": "localhost/app", "base": "localhost/debian:12" | None,
"base_tarball": "/abs/rootfs.tar" | None, "recipe": [...] (see
:mod:`~tectum.providers.podman.recipe`), "labels": {...}, "command": [...] | None, "keep": 3,
"build_network": "host"}``; prepared adds ``base_digest`` (SHA-256 of the tarball) and
``role_hash`` (SHA-256 of the role's resolved desired state). Stored adds the computed ``tag``,
``image_id``, ``digest`` and ``base_id``; the recipe itself is kept in the state version's
desired state (for ``rollback``), not in the record.

**The tag is content-addressed**: a hash of the base (the tarball's digest, or the base image's
*id*), the role hash, the labels and the command. An unchanged role never rebuilds (the tag
exists: nothing runs); a changed one always does. The plan shows ``tag OLD → NEW``; when the
new tag is an image still kept (a rollback), apply only points the resource at it — no build.

**Baking** (apply): the base (a tarball is ``podman import``-ed once, by digest) runs as a build
container ``tectum-build-HASH-TAG`` (``sleep infinity``; ``build_network``), the recipe is applied
inside it through a :class:`~tectum.providers.podman.connector.PodmanConnector` (one read round
trip, then each host resource in dependency order), then ``podman commit`` makes ``NAME:TAG``
with labels ``tectum.image``, ``tectum.tag``, ``tectum.role_hash``, ``tectum.base_id``,
``tectum.revision`` (``git describe`` of the project) and the user's, keeping the base's
command unless ``command`` is set. ``NAME:latest``
follows the current version. The ``keep`` newest versions stay; older ones are removed (one in
use by a container stays until it is not). Nothing is ever pulled.

**Crash safety**: a build container left by a killed run is found by its label and removed
(:meth:`ImageType.sweep_interrupted`, and before every bake); ``podman commit`` is the last step,
so an image that has its tag is complete — the next plan adopts it.

Drift: an image deleted by hand is rebuilt (the plan says "deleted").
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.base import ApplyError, ImplicitKey, ReadItem, ResourceType
from tectum.providers.podman.client import Podman, PodmanError
from tectum.providers.podman.recipe import bake, prepare_recipe, recipe_hash
from tectum.schema import Attr, Schema
from tectum.values import is_known

_TAG_RE = re.compile(r"[0-9a-f]{16}")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
#: the labels tectum puts on what it builds
LABEL_IMAGE = "tectum.image"
LABEL_ROLE = "tectum.role_hash"
LABEL_REVISION = "tectum.revision"
LABEL_BASE_ID = "tectum.base_id"
LABEL_TAG = "tectum.tag"
LABEL_BASE_DIGEST = "tectum.base_digest"
#: shown in a plan for a value apply decides
AFTER_APPLY = "(known after apply)"

_digests: dict[tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def _name(value: Any) -> str | None:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        return ("must be an image name without a tag: lowercase letters, digits, '.', '_', "
                "'-' and '/' (e.g. \"localhost/app\")")
    return None


def _network(value: Any) -> str | None:
    return None if value in ("host", "none", "bridge") else "must be host, none or bridge"


def _keep(value: Any) -> str | None:
    return None if isinstance(value, int) and 1 <= value <= 100 else "must be 1 to 100"


def file_digest(path: str) -> str:
    """SHA-256 of a file, remembered by (path, size, mtime) for the process."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    with _digests_lock:
        found = _digests.get(key)
    if found is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        found = h.hexdigest()
        with _digests_lock:
            _digests[key] = found
    return found


def image_tag(base_key: str, role_hash: str, labels: dict[str, Any] | None,
              command: list[str] | None) -> str:
    """The content-addressed tag: 16 hex digits of SHA-256 over the base, the role hash,
    the labels and the command."""
    text = json.dumps([base_key, role_hash, labels or {}, command], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_import_locks: dict[str, threading.Lock] = {}


def _import_lock(digest: str) -> threading.Lock:
    """One import of a tarball at a time (two images on one base, applied in parallel)."""
    with _digests_lock:
        return _import_locks.setdefault(digest, threading.Lock())


def _imported_base(digest: str) -> str:
    """The name a ``base_tarball`` is imported under: by its content digest."""
    return f"localhost/tectum-base:{digest[:16]}"


def _builder_prefix(name: str) -> str:
    """The name every build container of image ``name`` starts with (then its tag)."""
    return f"tectum-build-{hashlib.sha256(name.encode()).hexdigest()[:8]}-"


def _revision(root: str | None) -> str:
    if not root:
        return ""
    try:
        proc = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


class ImageType(ResourceType[Podman]):
    """See the module docstring."""

    name = "podman_image"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=_name,
                     description="the image's name without a tag (e.g. localhost/app)"),
        "base": Attr(str, description="a local image the build starts from (never pulled)"),
        "base_tarball": Attr(str, description="a root filesystem tarball, podman import-ed"),
        "recipe": Attr(list, description="the host resources of the role baked in "
                                         "(Image(role=...) fills it)"),
        "labels": Attr(dict, description="labels of the image"),
        "command": Attr(list, description="the image's command (default: the base's)"),
        "keep": Attr(int, default=3, validate=_keep,
                     description="image versions kept (the newest; older ones are removed)"),
        "build_network": Attr(str, default="host", validate=_network,
                              description="the build container's network (host, none, bridge)"),
        "base_digest": Attr(str, computed=True, description="SHA-256 of base_tarball"),
        "role_hash": Attr(str, computed=True, description="SHA-256 of the role's desired state"),
        "tag": Attr(str, computed=True, description="the content-addressed tag"),
        "image_id": Attr(str, computed=True, description="the image's id"),
        "digest": Attr(str, computed=True, description="the image's manifest digest"),
        "base_id": Attr(str, computed=True, description="the id of the base image built on"),
    })
    stored_computed = ("base_digest", "role_hash", "tag", "image_id", "digest", "base_id")
    #: the command of each base image id inspected (an image's default command)
    _base_cmd: dict[str, Any] = {}
    #: the bases a read of a podman found (:meth:`_bases`), kept for the missing check after it
    _seen_bases: weakref.WeakKeyDictionary[Podman, tuple[list[str], dict[str, Any]]] = \
        weakref.WeakKeyDictionary()
    #: what a version is built from is known by its tag; these are not read back
    unobserved = frozenset({"recipe", "keep", "build_network", "base", "base_tarball",
                            "command", "labels"})

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        out = []
        if (attrs.get("base") is None) == (attrs.get("base_tarball") is None):
            out.append("set exactly one of base (a local image) and base_tarball (a root "
                       "filesystem tarball to import)")
        base = attrs.get("base")
        if isinstance(base, str) and (base.startswith("-") or "\n" in base or "\0" in base):
            out.append(f"base {base!r} is not an image reference")
        for key, value in (attrs.get("labels") or {}).items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", str(key)) \
                    or str(key).startswith("tectum."):
                out.append(f"label {key!r}: a label name holds letters, digits, '.', '_', "
                           "'/' and '-', and tectum.* names are tectum's own")
            if "\n" in str(value) or "\0" in str(value):
                out.append(f"label {key!r}: a value is one line of text")
        command = attrs.get("command")
        if command is not None and not all(isinstance(c, str) for c in command):
            out.append("command is a list of strings (argv)")
        return out

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        name = out.get("name")
        if isinstance(name, str) and is_known(name) and "/" not in name:
            out["name"] = f"localhost/{name}"  # (what podman names it: compared as such)
        tarball = out.get("base_tarball")
        if isinstance(tarball, str) and is_known(tarball):
            path = os.path.join(base_dir, tarball)
            if not os.path.isfile(path):
                raise ValueError(f"base_tarball {tarball!r}: no such file ({path}). Give a "
                                 "root filesystem tarball, e.g. `debootstrap --variant=minbase "
                                 "bookworm DIR` then `tar -C DIR -cf FILE .`")
            out["base_tarball"] = os.path.abspath(path)
            try:
                out["base_digest"] = file_digest(out["base_tarball"])
            except OSError as exc:
                raise ValueError(f"base_tarball {tarball!r}: cannot be read: "
                                 f"{exc.strerror or exc}") from None
        recipe = out.get("recipe") or []
        if recipe:
            try:
                out["recipe"] = prepare_recipe(recipe)
            except (KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"recipe: not a recipe Image(role=...) makes ({exc!r}); "
                                 "give role= a role function instead") from None
        found = recipe_hash(out.get("recipe") or [])
        if found is not None:
            out["role_hash"] = found
        return out

    def sensitive_derived(self, sensitive: set[str]) -> set[str]:
        """A recipe holding a secret makes its hash (and the tag from it) sensitive."""
        return {"role_hash", "tag"} if "recipe" in sensitive else set()

    def masked_values(self, attrs: dict[str, Any], sensitive: set[str]) -> list[str]:
        """The digests of a secret-bearing recipe would let anyone test guesses: masked."""
        if "recipe" not in sensitive:
            return []
        return [v for v in (attrs.get("role_hash"), attrs.get("tag"))
                if isinstance(v, str) and is_known(v)]

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        return (self.name, attrs.get("name"))

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        return [("image", attrs.get("name"))]

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"name": attrs.get("name"), "tag": attrs.get("tag")}

    def describe(self, attrs: dict[str, Any]) -> str:
        tag = attrs.get("tag")
        return f"{attrs.get('name')}:{tag}" if isinstance(tag, str) and is_known(tag) \
            else str(attrs.get("name"))

    # -- refresh -------------------------------------------------------------------------
    def _base_key(self, podman: Podman, desired: dict[str, Any],
                  bases: dict[str, dict[str, Any]]) -> str | None:
        if desired.get("base_digest"):
            return f"tarball:{desired['base_digest']}"
        base = desired.get("base")
        if isinstance(base, str) and is_known(base) and base in bases:
            return f"image:{bases[base].get('Id')}"
        return None

    def want_tag(self, desired: dict[str, Any], base_key: str | None) -> str | None:
        role = desired.get("role_hash") or recipe_hash([])
        if base_key is None or not isinstance(role, str):
            return None
        return image_tag(base_key, role, desired.get("labels"), desired.get("command"))

    def _versions(self, podman: Podman) -> dict[str, dict[str, Any]]:
        """Every tagged image in the store, by ``NAME:TAG``: one ``podman images``."""
        out: dict[str, dict[str, Any]] = {}
        for item in podman.json(["images", "--format", "json"], what="podman images"):
            for tag in item.get("Names") or item.get("RepoTags") or []:
                out[str(tag)] = item
        return out

    def _bases(self, podman: Podman, items: Sequence[ReadItem], *,
               after_read: bool = False) -> dict[str, dict[str, Any]]:
        """The ``base`` images the items name, found in podman's storage: one ``podman image
        inspect`` for all. What :meth:`read` found is handed once to :meth:`missing`
        (``after_read``), which the planner calls right after the read of the same items."""
        refs = sorted({i.desired["base"] for i in items if i.desired is not None
                       and isinstance(i.desired.get("base"), str)
                       and is_known(i.desired["base"])})
        if after_read:
            with _digests_lock:
                known = self._seen_bases.pop(podman, None)
            if known is not None and known[0] == refs:
                return known[1]
        found = podman.inspect("image", refs) if refs else {}
        if not after_read:
            with _digests_lock:
                self._seen_bases[podman] = (refs, found)
        return found

    def read(self, target: Podman, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """One ``podman images`` for every item (and one ``podman image inspect`` of the bases
        named); each item reads as the version state records (its tag), else — not in state
        — the version the configuration makes if it exists already (adopted), else absent.
        ``_want_tag``/``_want_id`` say which version the configuration makes, if known."""
        versions = self._versions(target)
        bases = self._bases(target, items)
        out: list[dict[str, Any] | None] = []
        for item in items:
            attrs = item.attrs
            name = attrs.get("name")
            want = None
            if item.desired is not None:
                want = self.want_tag(item.desired, self._base_key(target, item.desired, bases))
            tag = (item.prior or {}).get("tag")
            if not tag:
                # not in state (adoption, or a crash before the record): the version the
                # configuration makes; without a configuration, the latest tectum tagged
                tag = want if item.desired is not None else "latest"
            found = versions.get(f"{name}:{tag}") if tag else None
            if found is None:
                out.append(None)
                continue
            labels = found.get("Labels") or {}
            obs: dict[str, Any] = {
                "name": name, "tag": labels.get(LABEL_TAG) or tag, "image_id": found.get("Id"),
                "digest": found.get("Digest"), "role_hash": labels.get(LABEL_ROLE),
                "base_id": labels.get(LABEL_BASE_ID) or (item.prior or {}).get("base_id"),
                "base_digest": labels.get(LABEL_BASE_DIGEST)
                or (item.prior or {}).get("base_digest"),
                "_want_tag": want,
            }
            obs = {k: v for k, v in obs.items() if v is not None}
            wanted = versions.get(f"{name}:{want}") if want else None
            if wanted is not None:
                obs["_want_id"] = wanted.get("Id")
            out.append(obs)
        return out

    def missing(self, target: Podman, items: Sequence[ReadItem]
                ) -> list[list[tuple[ImplicitKey | None, str]]]:
        """A ``base`` image that is not in podman's storage (tectum never pulls); excused when
        a ``podman_image`` of the stack makes it."""
        found = self._bases(target, items, after_read=True)
        out: list[list[tuple[ImplicitKey | None, str]]] = []
        for item in items:
            base = (item.desired or {}).get("base")
            if isinstance(base, str) and is_known(base) and base not in found:
                repo = base.rsplit(":", 1)[0] if ":" in base.rsplit("/", 1)[-1] else base
                out.append([(("image", repo),
                             f"the base image {base} is not in podman's storage (tectum never "
                             "pulls: build it with a podman_image, or podman import/load it)")])
            else:
                out.append([])
        return out

    # -- plan ----------------------------------------------------------------------------
    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """CREATE when no version is there; UPDATE (a build, or only a new pointer when the
        version is kept) when the configuration makes another tag; else NOOP."""
        role = desired.get("role_hash")
        if observed is None:
            # (known now when the base is a tarball: its digest is the base's part of the tag)
            known = self.want_tag(desired, f"tarball:{desired['base_digest']}") \
                if desired.get("base_digest") else None
            return Action.CREATE, [
                AttrChange("name", None, desired.get("name")),
                AttrChange("tag", None, known or AFTER_APPLY),
                AttrChange("role_hash", None, role if role else AFTER_APPLY)]
        want = observed.get("_want_tag")
        if want is not None and want == observed.get("tag"):
            return Action.NOOP, []
        changes = [AttrChange("tag", observed.get("tag"), want or AFTER_APPLY)]
        if role != observed.get("role_hash"):
            changes.append(AttrChange("role_hash", observed.get("role_hash"),
                                      role or AFTER_APPLY))
        changes.append(AttrChange("image_id", observed.get("image_id"),
                                  observed.get("_want_id") or AFTER_APPLY))
        return Action.UPDATE, changes

    def stored(self, attrs: dict[str, Any]) -> dict[str, Any]:
        out = super().stored(attrs)
        out.pop("recipe", None)  # (kept in the version's desired state; the hash stands for it)
        return out

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        return True  # (an image with tectum's content-addressed tag is tectum's)

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return "removes every version tectum built of it"

    # -- apply ---------------------------------------------------------------------------
    def apply(self, target: Podman, change: ResourceChange) -> dict[str, Any] | None:
        podman = target
        if change.action is Action.DELETE:
            was = change.prior or change.before or {}
            self._remove_builders(podman, str(was.get("name")))
            self._remove_versions(podman, str(was.get("name")), keep=0, current=None)
            digest = was.get("base_digest")
            if isinstance(digest, str) and digest:
                # the base tectum imported for it goes too, unless another image is built
                # on it (podman refuses: it stays for that one)
                podman.run(["rmi", _imported_base(digest)], check=False,
                           what="removing the imported base")
            return None
        desired = dict(change.after or {})
        name = str(desired["name"])
        try:
            base_ref, base_id, base_key = self._base(podman, desired)
            tag = self.want_tag(desired, base_key)
            assert tag is not None
            ref = f"{name}:{tag}"
            found = podman.inspect("image", [ref]).get(ref)
            if found is None:
                self._build(podman, desired, base_ref, ref, base_id)
                found = podman.inspect("image", [ref]).get(ref)
                if found is None:
                    raise ApplyError(f"podman commit reported success but {ref} is not there")
            podman.run(["tag", ref, f"{name}:latest"], what=f"tagging {ref} as latest")
            self._remove_versions(podman, name, keep=int(desired.get("keep") or 3),
                                  current=str(found.get("Id")))
        except PodmanError as exc:
            raise ApplyError(str(exc)) from None
        return {**desired, "tag": tag, "image_id": found.get("Id"),
                "digest": found.get("Digest"), "base_id": base_id,
                "role_hash": desired.get("role_hash") or recipe_hash([])}

    def _base(self, podman: Podman, desired: dict[str, Any]) -> tuple[str, str, str]:
        """The base image (reference, id, tag key); a tarball is imported once by digest."""
        digest = desired.get("base_digest")
        if digest:
            ref = _imported_base(digest)
            with _import_lock(digest):
                return self._import(podman, desired, ref, digest)
        base = str(desired.get("base"))
        found = podman.inspect("image", [base]).get(base)
        if found is None:
            raise ApplyError(f"the base image {base} is not in podman's storage (tectum never "
                             "pulls: build it with a podman_image, or podman import/load it)")
        self._base_cmd[str(found.get("Id"))] = (found.get("Config") or {}).get("Cmd")
        return base, str(found.get("Id")), f"image:{found.get('Id')}"

    def _import(self, podman: Podman, desired: dict[str, Any], ref: str,
                digest: str) -> tuple[str, str, str]:
        found = podman.inspect("image", [ref]).get(ref)
        if found is None:
            podman.run(["import", "--change", 'CMD ["/bin/sh"]', "--message",
                        f"tectum base {digest}", str(desired["base_tarball"]), ref],
                       what=f"podman import {desired['base_tarball']}")
            found = podman.inspect("image", [ref]).get(ref)
        if found is None:
            raise ApplyError(f"podman import did not make {ref}")
        self._base_cmd[str(found.get("Id"))] = (found.get("Config") or {}).get("Cmd")
        return ref, str(found.get("Id")), f"tarball:{digest}"

    def import_item(self, import_id: str) -> ReadItem:
        """``tectum import ADDRESS NAME:TAG``: the version ``NAME:TAG`` (``NAME`` alone:
        ``latest``)."""
        name, _, tag = import_id.rpartition(":") if ":" in import_id.rsplit("/", 1)[-1] \
            else (import_id, ":", "latest")
        return ReadItem(None, {"name": name, "tag": tag})

    def _build(self, podman: Podman, desired: dict[str, Any], base: str, ref: str,
               base_id: str) -> None:
        from tectum.providers.podman.connector import PodmanConnector

        name = str(desired["name"])
        builder = f"{_builder_prefix(name)}{ref.rsplit(':', 1)[1]}"
        labels = {**(desired.get("labels") or {}), LABEL_IMAGE: name,
                  LABEL_ROLE: desired.get("role_hash") or recipe_hash([]),
                  LABEL_REVISION: _revision(podman.project_root), LABEL_BASE_ID: base_id,
                  LABEL_TAG: ref.rsplit(":", 1)[1],
                  LABEL_BASE_DIGEST: desired.get("base_digest") or ""}
        try:
            # (inside the try: a container created whose start failed is removed too)
            # --replace: one left by a killed build of this very version goes (stop timeout
            # 0: sleep as PID 1 ignores SIGTERM); other versions' builds are their runs'
            started = podman.run(["run", "-d", "--replace", "--stop-timeout", "0", "--name",
                                  builder, "--network",
                                  str(desired.get("build_network") or "host"),
                                  *podman.ulimit_args(), "--entrypoint", "", base, "sleep",
                                  "infinity"], what=f"starting the build container from {base}")
            ident = started.stdout.decode().strip().splitlines()[-1:]
            recipe = desired.get("recipe") or []
            if recipe:
                conn = PodmanConnector(f"image:{name}", builder, podman,
                                       ident=ident[0] if ident else None)
                try:
                    bake(conn, recipe)
                finally:
                    conn.close()
            command = desired.get("command")
            if command is None:
                command = self._base_cmd.get(base_id) or ["/bin/sh"]
            changes = ["--change", f"CMD {json.dumps(list(command))}",
                       "--change", "ENTRYPOINT []"]
            for key, value in sorted(labels.items()):
                changes += ["--change", f"LABEL {key}={json.dumps(str(value))}"]
            podman.run(["commit", "--format", "oci", *changes, builder, ref],
                       what=f"podman commit of {ref}")
        finally:
            podman.run(["rm", "-f", "-t", "0", "-i", builder], check=False,
                       what="removing the build container")

    def _remove_builders(self, podman: Podman, name: str) -> list[str]:
        proc = podman.run(["ps", "-a", "--filter", f"name=^{_builder_prefix(name)}", "--format",
                           "{{.Names}}"], mutating=False, check=False)
        gone = [n for n in proc.stdout.decode().split() if n.startswith(_builder_prefix(name))]
        if gone:
            podman.run(["rm", "-f", "-t", "0", *gone], check=False,
                       what="removing build containers left behind")
        return gone

    def _remove_versions(self, podman: Podman, name: str, *, keep: int,
                         current: str | None) -> None:
        """Remove the versions of ``name`` tectum built beyond the ``keep`` newest (the
        current one always stays); a version a container uses stays (said in the error only
        when deleting the resource)."""
        found = podman.json(["images", "--filter", f"label={LABEL_IMAGE}={name}", "--format",
                             "json"], what="podman images")
        # only what tectum built: an image tagged NAME:TAG with TAG its own tectum.tag label
        # (an image built FROM one of them inherits the labels, not that tag)
        found = [i for i in found
                 if f"{name}:{(i.get('Labels') or {}).get(LABEL_TAG)}" in (i.get("Names") or [])
                 and _TAG_RE.fullmatch(str((i.get("Labels") or {}).get(LABEL_TAG)))]
        found = sorted(found, key=lambda i: int(i.get("Created") or 0), reverse=True)
        keepers: set[str] = {current} if current else set()
        for item in found:
            if len(keepers) >= keep:
                break
            keepers.add(str(item.get("Id")))
        refused = []
        seen: set[str] = set()
        for item in found:
            ident = str(item.get("Id"))
            if ident in keepers or ident in seen:
                continue  # (podman lists an image once per tag)
            seen.add(ident)
            # by its tags tectum gave it (never -f: that would remove the containers using
            # it too); a tag someone else added keeps the image
            tags = [str(t) for t in item.get("Names") or []
                    if str(t) in (f"{name}:{(item.get('Labels') or {}).get(LABEL_TAG)}",
                                  f"{name}:latest")]
            proc = podman.run(["rmi", *tags], check=False, what=f"removing {name} {ident[:12]}")
            if proc.returncode != 0 and b"image not known" not in proc.stderr:
                refused.append((ident, proc))
        if keep == 0 and refused:
            ident, proc = refused[0]
            raise ApplyError(podman.failure(proc, f"removing image {name} ({ident[:12]})")
                             + "\n(a container still uses it: remove or change that container "
                               "first)")

    def sweep_interrupted(self, target: Podman, identities: Sequence[dict[str, Any]]) -> None:
        """Remove the build containers and untagged images a killed bake left."""
        for ident in identities:
            name = ident.get("name")
            if not isinstance(name, str):
                continue
            self._remove_builders(target, name)
            proc = target.run(["images", "-q", "--filter", "dangling=true", "--filter",
                               f"label={LABEL_IMAGE}={name}"], mutating=False, check=False)
            for left in proc.stdout.decode().split():
                target.run(["rmi", left], check=False, what="removing a half-made image")
