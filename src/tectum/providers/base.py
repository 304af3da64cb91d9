"""The provider contract: a :class:`Provider` owns the targets it talks to (host connections, API
clients, database connections) and offers :class:`ResourceType` s that read, diff and apply one
kind of object on such a target.

The shape follows OpenTofu's provider interface (``internal/providers/provider.go``: configure,
read, plan, apply, import, upgrade state, close), Terraform's resource lifecycle
(``docs/resource-instance-change-lifecycle.md``) and Pulumi's dynamic provider (check / diff /
create / read / update / delete), with one difference that matters for speed:
:meth:`ResourceType.read` takes *every* object of the type on a target at once, as
``(desired, prior)`` pairs, so a provider can read them in one pass (one ``dpkg-query`` for all
packages, one remote script per host, one Describe call per region).

Deciding and doing are separate methods the engine calls: :meth:`ResourceType.plan` decides, and
:meth:`ResourceType.apply` does what the plan decided. No method does both. The engine names no
resource type: everything type-specific (implicit dependencies, the identity the journal keeps,
values to mask, plan-view warnings, state upgrades) is a hook here, with a generic default.

Providers are found through the ``tectum.providers`` entry point group (name = provider name,
value = ``module:ProviderClass``); the built-in ones register the same way (``pyproject.toml``).
A type's name starts with its provider's name and ``_`` (``random_password``, OpenTofu's rule);
the built-in ``host`` provider alone keeps short names (``file``, ``package``, ...), so stacks
and states written before providers existed stay valid (see ``docs/providers.md``).
"""

from __future__ import annotations

import importlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, TypeVar

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.schema import MISSING, Schema

if TYPE_CHECKING:
    from tectum.config.inventory import Connection, Inventory

#: the target type a resource type works on (a host connector, an API client...)
T = TypeVar("T")

#: a key an object offers to the objects that depend on it (implicit dependencies), e.g.
#: ``("dir", "/srv/www")``; only keys of one provider on one machine are matched
ImplicitKey = Hashable


class ReadItem(NamedTuple):
    """One object to read: ``desired`` (resolved, prepared attributes; None for an object that
    left the configuration) and ``prior`` (the attributes state recorded, with any
    server-assigned id; None for an object not in state). At least one is set. ``recovery``:
    see below."""

    desired: dict[str, Any] | None
    prior: dict[str, Any] | None
    #: for an object whose create or replace a killed run may have done (not in state, or
    #: state still holding the replaced one): the journal identity of that run's intent
    #: (:meth:`ResourceType.journal_identity`: a client token, a server-assigned id), so a
    #: type can find what the desired attributes and the record cannot; None otherwise.
    #: Never a state record: types that take ``prior`` for one ignore it.
    recovery: dict[str, Any] | None = None

    @property
    def attrs(self) -> dict[str, Any]:
        """The attributes that find the object: desired, else prior."""
        if self.desired is not None:
            return self.desired
        return self.prior or {}


class ApplyError(Exception):
    """A resource's apply failed; the message is shown to the user as the failure reason."""


class ReadError(Exception):
    """Reading objects failed (refresh); the planner reports it as a diagnostic."""


class ResourceType(ABC, Generic[T]):
    """One resource type (``file``, ``random_password``...) working on targets of type ``T``.
    Instances are stateless singletons, shared by every session; per-session things (targets,
    settings) belong to the :class:`Provider`."""

    name: ClassVar[str]
    schema: ClassVar[Schema]
    #: attributes kept in state besides the settable ones (e.g. a content digest)
    stored_computed: ClassVar[tuple[str, ...]] = ()
    #: True when :meth:`apply_batch` groups several changes into one operation
    batches: ClassVar[bool] = False
    #: attributes a read cannot observe in the world (e.g. a command's text): never reported
    #: as drift; a no-op keeps their value from prior state (as Terraform keeps
    #: unobservable attributes)
    unobserved: ClassVar[frozenset[str]] = frozenset()
    #: computed attributes the configuration never sets whose change since the last apply is
    #: drift all the same (the commit a checkout is at, moved by hand)
    drift_attrs: ClassVar[frozenset[str]] = frozenset()
    #: True when applying may change other objects too (a package's install scripts chown a
    #: directory, a command writes files): after such a change the applier re-reads what the
    #: run changed on that target, so state records what the world holds when the run ends
    side_effects: ClassVar[bool] = False
    #: False for a type whose objects cannot be deleted (what a command did stays done): when
    #: such a resource goes, it is only forgotten (planned as ``forget``)
    deletable: ClassVar[bool] = True
    #: the version of this type's state record; a record written by an older version is passed
    #: through :meth:`upgrade_state` when state is read (OpenTofu's ``UpgradeResourceState``)
    schema_version: ClassVar[int] = 0
    #: stored attributes shown under another name (a digest stands for the content it hashes:
    #: drift reports "content", never the digest)
    labels: ClassVar[Mapping[str, str]] = {}
    #: attributes holding multi-line text: the plan view shows a line diff of them
    text_attrs: ClassVar[frozenset[str]] = frozenset()
    #: False for a type whose identity may be shared by several objects (two VPCs of one
    #: CIDR, two instances of one image): a resource renamed in the stack is then never
    #: taken for the old one by its identity (only ``moved()`` says so), as Terraform does
    moves_by_identity: ClassVar[bool] = True
    #: computed attributes an in-place update never changes (a server-assigned id): a
    #: resource referring to one stays known while its object is updated (Terraform keeps a
    #: computed attribute its provider does not mark unknown); every other computed attribute
    #: of a changing object is "(known after apply)" to those using it
    kept_on_update: ClassVar[frozenset[str]] = frozenset()
    #: why ``-replace`` cannot make this type's object anew (a sentence), or None when its
    #: apply of a REPLACE does (Terraform's ``-replace``: destroy and create)
    replace_refused: ClassVar[str | None] = None

    # -- configuration -------------------------------------------------------------------
    def check(self, attrs: dict[str, Any]) -> list[str]:
        """Cross-attribute validation of configured ``attrs``; returns problems (sentences)."""
        return []

    def check_declared(self, attrs: dict[str, Any]) -> list[tuple[str, str]]:
        """Problems with the *declared* attributes, references unresolved (``${tectum:...}``
        tokens, see :func:`tectum.values.refs_in`): ``(title, detail)`` pairs reported as plan
        errors at the resource's source (e.g. a secret in a command's argument list)."""
        return []

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Normalise resolved desired attributes (fill defaults, canonical forms, render
        templates). Values may still hold tokens. Raises ``ValueError`` for a bad value."""
        out = dict(attrs)
        for key, attr in self.schema.attrs.items():
            if key not in out and attr.default is not MISSING and not attr.computed:
                out[key] = attr.default
        return out

    def identity(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """The values that find the object (its identity attributes, in schema order)."""
        return tuple(attrs.get(k) for k in self.schema.identity)

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """What makes two resources manage the same object (refused in one stack): by default
        the type name and the identity; types sharing one namespace (files, directories and
        symlinks share paths) return the same key."""
        return (self.name, *self.identity(attrs))

    def part_of(self, attrs: dict[str, Any]) -> tuple[Any, ...] | None:
        """The :meth:`identity_key` of a whole object this resource manages only a part of
        (a line of a file), else None: a resource managing that whole object in the same
        stack is refused (each apply would undo the other); other parts of it are fine."""
        return None

    def provides_host(self, attrs: dict[str, Any]) -> str | None:
        """The host name under which a role applied to this object declares its resources
        (``apply_role(role, container)``), or None when the object is no host. Such a host
        is *provisioned* by the resource: its resources depend on it, are made anew when
        the object is created or replaced, and go with it when it is deleted. The name is
        ``PROVIDER:ID`` and the provider's :meth:`Provider.connector` reaches it
        (``podman:web1``)."""
        return None

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The attributes the journal keeps before a change, enough to find the object after a
        crash (adopt it, or clean it up): the identity attributes, plus any server-assigned id
        or client token the type records (override to add them)."""
        return {k: attrs.get(k) for k in self.schema.identity}

    # -- implicit dependencies (Puppet's autorequire) -------------------------------------
    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """Keys other objects of this provider on the same target may depend on (a
        directory offers its path, a user its name)."""
        return []

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        """What this object needs, as groups of alternative keys, nearest first: for each
        group the first key some object offers becomes a dependency (a path needs the nearest
        managed directory above it). When objects are deleted, an object is deleted before
        every object offering any of its keys."""
        return []

    # -- refresh -------------------------------------------------------------------------
    @abstractmethod
    def read(self, target: T, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """Read every object at once. Returns, per item, its attributes as found in the world,
        or None when it does not exist. Keys starting with ``_`` are transient (used for
        display, never stored). Raises any exception for a failed read (reported as a
        diagnostic naming the objects)."""

    def missing(self, target: T, items: Sequence[ReadItem]
                ) -> list[list[tuple[ImplicitKey | None, str]]]:
        """What each item's desired object needs on ``target`` that is not there (an owner
        that is no user there, a package no source offers, a service not installed), per
        item as ``(key, sentence)`` pairs; items without ``desired`` need nothing. Called
        right after :meth:`read` of the same items (a provider's prefetched facts still
        there). The planner reports each as an error at plan time, unless a resource
        declared on the same target offers ``key`` (:meth:`implicit_keys`: a ``User`` of
        that name; None: no resource can) or something the resource depends on changes in
        the plan (a package that may bring the service or add the user). Default: nothing
        is missing."""
        return [[] for _ in items]

    def exists(self, observed: dict[str, Any]) -> bool:
        """Whether what :meth:`read` found is an object that can be imported."""
        return True

    def import_item(self, import_id: str) -> ReadItem:
        """The read of the object ``tectum import ADDRESS ID`` names (Terraform's import ID):
        by default the first identity attribute set to ``import_id``."""
        keys = self.schema.identity
        return ReadItem(None, {keys[0]: import_id} if keys else {})

    def sweep_interrupted(self, target: T, identities: Sequence[dict[str, Any]]) -> None:
        """After a killed run: remove what its unfinished operations on these objects (their
        journal identities) left behind, such as temporary files. Raises on failure (reported
        as a warning)."""

    # -- plan ----------------------------------------------------------------------------
    def managed(self, desired: dict[str, Any]) -> list[str]:
        """Attributes this configuration manages (compared with the world)."""
        return [k for k in self.schema.settable if desired.get(k) is not None]

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        """The attribute changes needed to turn ``observed`` into ``desired``."""
        out: list[AttrChange] = []
        for key in self.managed(desired):
            want = desired[key]
            have = observed.get(key)
            if want != have:
                attr = self.schema.attrs[key]
                out.append(AttrChange(key, have, want, attr.force_new, attr.sensitive))
        return out

    def plan(
        self,
        desired: dict[str, Any],
        observed: dict[str, Any] | None,
        prior: dict[str, Any] | None,
    ) -> tuple[Action, list[AttrChange]]:
        """Decide the action for one object: ``desired`` attributes (resolved, prepared; may
        hold tokens), ``observed`` as read (None: absent), ``prior`` the attributes recorded in
        state by the last apply (None: not in state). Returns the action and attribute changes.
        """
        if observed is None:
            return Action.CREATE, [
                AttrChange(k, None, desired[k], sensitive=self.schema.attrs[k].sensitive)
                for k in self.managed(desired) if k in self.schema.attrs
            ]
        changes = self.diff(desired, observed)
        if any(c.force_new for c in changes):
            return Action.REPLACE, changes
        return (Action.UPDATE if changes else Action.NOOP), changes

    def stored(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The part of ``attrs`` kept in state."""
        keep = self._keep
        return {k: v for k, v in attrs.items() if k in keep}

    @cached_property
    def _keep(self) -> frozenset[str]:
        return frozenset(self.schema.settable) | frozenset(self.stored_computed)

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """Whether tectum counts as the creator of an object not yet in state that it found
        as ``found`` (stored attributes; None: absent) and makes ``desired``. The default: only
        an object that was absent. (A service that was stopped and that tectum starts counts
        as created: destroying it stops it again.) What tectum created is deleted when its
        resource goes; what it found is forgotten (:mod:`tectum.state.model`)."""
        return found is None

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        """What deleting the object recorded as ``prior`` does besides removing it, for the
        plan view (e.g. "stops the service"); None: nothing to say."""
        return None

    def warnings(self, change: ResourceChange) -> list[str]:
        """Sentences about what a rollback of ``change`` cannot undo (shown before ``apply``
        asks; e.g. "a command runs again; what it did is not undone")."""
        return []

    def sensitive_derived(self, sensitive: set[str]) -> set[str]:
        """Attributes that become sensitive when ``sensitive`` ones are (a file rendered from
        a template with a secret variable holds the secret in its content)."""
        return set()

    def masked_values(self, attrs: dict[str, Any], sensitive: set[str]) -> list[str]:
        """Values derived from the sensitive attributes ``sensitive`` of ``attrs`` that must be
        masked too (the digest of a secret-bearing content lets anyone test guesses)."""
        return []

    def masked_observed(self, observed: dict[str, Any], holds_secret: Any) -> list[str]:
        """Values to mask in what a read found: ``holds_secret(text)`` says whether a text
        holds a registered secret (a file found holding a secret: its digest is masked)."""
        return []

    def display(self, observed: dict[str, Any]) -> dict[str, Any]:
        """What the plan view may show of a read object beyond its stored attributes (the old
        text of a file, for a line diff): merged into the change's ``display``."""
        return {}

    def describe(self, attrs: dict[str, Any]) -> str:
        """A short label for plan output (a path, a package name)."""
        ident = self.identity(attrs)
        return " ".join(str(v) for v in ident if v is not None)

    def label(self, attr: str) -> str:
        """How attribute ``attr`` is named to the user (see :attr:`labels`)."""
        return self.labels.get(attr, attr)

    def upgrade_state(self, version: int, attrs: dict[str, Any]) -> dict[str, Any]:
        """A state record's attributes written at schema ``version`` (lower than
        :attr:`schema_version`), in the current shape. The default keeps them."""
        return attrs

    # -- apply ---------------------------------------------------------------------------
    @abstractmethod
    def apply(self, target: T, change: ResourceChange) -> dict[str, Any] | None:
        """Carry out ``change`` (its ``after`` is fully resolved). Returns the attributes to keep
        in state, or None after a delete. Raises :class:`ApplyError` on failure. A create that
        found its object made meanwhile by something else in the same apply (a package's own
        configuration file) returns ``_found: True`` with the attributes: state then records
        the object as found, so destroying the resource forgets it instead of deleting it."""

    def apply_batch(
        self, target: T, changes: Sequence[ResourceChange]
    ) -> list[dict[str, Any] | None | Exception]:
        """Apply several changes together (only called when ``batches`` is True)."""
        out: list[dict[str, Any] | None | Exception] = []
        for change in changes:
            try:
                out.append(self.apply(target, change))
            except Exception as exc:  # noqa: BLE001 - reported per change
                out.append(exc)
        return out


class ProviderContext(NamedTuple):
    """What a provider is configured with besides its own settings: the project directory,
    the workspace, the inventory (the host provider's), and session options."""

    root: str
    workspace: str
    inventory: Inventory
    options: Mapping[str, Any]
    #: the session's configured provider of a name (a provider reaching hosts through
    #: another one's connectors: :meth:`Provider.connector`); None outside a session
    provider: Callable[[str], Provider] | None = None


class Provider(ABC):
    """A provider family, configured once per session (OpenTofu's ``providers.Interface``).

    Settings come from ``[providers.NAME]`` in ``tectum.toml``, validated against
    :attr:`settings`; an environment variable ``TECTUM_PROVIDER_<NAME>_<SETTING>`` (upper
    case) overrides a setting. The engine asks :meth:`target` for the target of a resource
    on a host (None: a resource outside a role) and runs at most :meth:`concurrency`
    operations at once on one target."""

    name: ClassVar[str]
    #: the settings of ``[providers.NAME]``
    settings: ClassVar[Schema] = Schema({})
    #: resource type name → ``module:Class``; imported on first use
    resource_types: ClassVar[Mapping[str, str]] = {}
    #: the built-in host provider only: its types keep short names without a prefix
    short_names: ClassVar[bool] = False
    #: whether this provider knows facts about hosts (``host.facts`` in a stack:
    #: :meth:`gather_facts`, :meth:`want_facts`, :meth:`observed_facts`)
    offers_facts: ClassVar[bool] = False
    #: whether this provider makes host connectors (:meth:`connector`): an inventory host
    #: (or a host a role is applied to) with ``connector = NAME`` is reached through it
    offers_connector: ClassVar[bool] = False

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.context: ProviderContext | None = None

    def configure(self, config: dict[str, Any], context: ProviderContext) -> None:
        """Take the validated settings (defaults filled in). Raises :class:`DiagnosticError`
        for settings that are valid alone but not together."""
        self.config = config
        self.context = context

    @abstractmethod
    def target(self, host: str | None) -> Any:
        """The target for resources declared on ``host`` (None: outside a role), made on first
        use and kept until :meth:`close`. Raises :class:`DiagnosticError` when it cannot be
        made (an unknown host, a missing credential)."""

    def made(self, host: str | None) -> Any | None:
        """The target of ``host`` if :meth:`target` already made it, else None (never
        connects)."""
        return None

    @classmethod
    def target_key(cls, host: str | None, inventory: Inventory) -> Hashable:
        """Which resources share one target, known without configuring the provider (reads
        are batched per target; implicit dependencies and the managed-twice check match
        objects of one target): by default one target per host."""
        return host

    def concurrency(self, target: Any) -> int:
        """Operations at most at once on ``target``."""
        return int(self.config.get("concurrency", 10) or 10)

    def down(self, target: Any) -> tuple[str, str] | None:
        """``(kind, reason)`` when ``target`` was found unreachable or refused us."""
        down = getattr(target, "down", None)
        return down if isinstance(down, tuple) else None

    def begin_read(self, target: Any,
                   batches: Sequence[tuple[ResourceType[Any], Sequence[ReadItem]]]) -> None:
        """Called before the reads of one target: a provider that can fetch what every read
        needs in one round trip does it here. Raises as a read would."""
        return None

    def end_read(self, target: Any) -> None:
        """Called after the reads of one target (drop what :meth:`begin_read` fetched)."""
        return None

    def gather_facts(self, host: str | None) -> dict[str, Any]:
        """The facts of ``host`` (None: this machine), read now in one round trip, as a
        JSON-able dict (providers with :attr:`offers_facts`). Raises as a read would (the
        target is then looked at with :meth:`down`)."""
        raise NotImplementedError(f"the {self.name} provider knows no facts")

    def want_facts(self, host: str | None) -> None:
        """Read the facts of ``host`` with its next read (:meth:`begin_read`), in the same
        round trip; :meth:`observed_facts` gives them afterwards."""
        return None

    def observed_facts(self, host: str | None) -> dict[str, Any] | None:
        """The facts read with ``host``'s last read (after :meth:`want_facts`), else None."""
        return None

    def connector(self, host: str, connection: Connection) -> Any:
        """A host connector (the :class:`~tectum.providers.host.connector.Connector`
        contract) for inventory host ``host`` whose ``connector`` names this provider
        (providers with :attr:`offers_connector`: ``connector = "podman"`` reaches a
        container through ``podman exec``). Raises :class:`DiagnosticError` when it cannot
        be made."""
        raise NotImplementedError(f"the {self.name} provider makes no host connectors")

    def close(self) -> None:
        """Release every target (connections, clients)."""
        return None


class ProviderError(DiagnosticError):
    """A provider could not be found, loaded or configured."""


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group="tectum.providers")}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


# Providers that ship with tectum: also registered as entry points in pyproject.toml; listed
# here so a source checkout that was never installed still finds them.
_BUILTIN_PROVIDERS: dict[str, str] = {
    "host": "tectum.providers.host.provider:HostProvider",
    "random": "tectum.providers.random.provider:RandomProvider",
    "podman": "tectum.providers.podman.provider:PodmanProvider",
    "aws": "tectum.providers.aws.provider:AwsProvider",
    "postgresql": "tectum.providers.postgresql.provider:PostgresqlProvider",
    "etcd": "tectum.providers.etcd.provider:EtcdProvider",
}


class Registry:
    """Maps provider names to :class:`Provider` classes and resource type names to
    :class:`ResourceType` singletons, from the ``tectum.providers`` entry points.

    Rules checked when the providers are loaded (a :class:`ProviderError` names the
    offending package): a type name starts with ``PROVIDER_`` unless the provider has
    :attr:`Provider.short_names` (the built-in host provider only); no two providers offer one
    type name."""

    def __init__(self) -> None:
        self._types: dict[str, ResourceType[Any]] = {}
        self._providers: dict[str, type[Provider]] | None = None
        self._type_provider: dict[str, str] = {}
        self._scanned = False
        self._lock = threading.RLock()

    def _load_providers(self, full: bool = True) -> dict[str, type[Provider]]:
        """The providers loaded: the built-in ones at first; with ``full`` also every
        ``tectum.providers`` entry point (scanning them costs a process about 20 ms, so a
        run whose types are all built-in never does)."""
        loaded = self._providers
        if loaded is not None and (self._scanned or not full):
            return loaded  # (the common case, without the lock: called per resource)
        with self._lock:
            if self._providers is None:
                self._providers, self._type_provider = {}, {}
                self._register(_BUILTIN_PROVIDERS)
            if full and not self._scanned:
                saved = (dict(self._providers), dict(self._type_provider))
                try:
                    self._register({name: target for name, target in _entry_points().items()
                                    if _BUILTIN_PROVIDERS.get(name) != target})
                except ProviderError:
                    self._providers, self._type_provider = saved
                    raise
                self._scanned = True
            return self._providers

    def _register(self, found: Mapping[str, str]) -> None:
        assert self._providers is not None
        for name, target in sorted(found.items()):
            try:
                cls = _load(target)
            except Exception as exc:  # noqa: BLE001 - a broken plug-in is a diagnostic
                raise ProviderError(Diagnostic.error(
                    "Provider cannot be loaded",
                    f"The entry point tectum.providers {name} = {target!r} failed to "
                    f"load: {type(exc).__name__}: {exc}. Reinstall the package that "
                    "provides it, or uninstall it.")) from None
            if not (isinstance(cls, type) and issubclass(cls, Provider)) or cls.name != name:
                raise ProviderError(Diagnostic.error(
                    "Invalid provider",
                    f"The entry point tectum.providers {name} = {target!r} is not a "
                    f"tectum Provider named {name!r}."))
            if name in self._providers:
                raise ProviderError(Diagnostic.error(
                    "Provider registered twice",
                    f"The entry point tectum.providers {name} = {target!r} names a provider "
                    "tectum has already. Uninstall one of them."))
            _check_types(cls, self._type_provider)
            self._type_provider.update(dict.fromkeys(cls.resource_types, name))
            self._providers[name] = cls

    def add(self, cls: type[Provider]) -> bool:
        """Register ``cls`` as if an entry point declared it (tests, embedding). Returns False
        when it is registered already. Raises :class:`ProviderError` when its name is taken
        or a type name breaks the naming rule or is offered already."""
        providers = self._load_providers()
        with self._lock:
            if providers.get(cls.name) is cls:
                return False
            if cls.name in providers:
                raise ProviderError(Diagnostic.error(
                    "Provider registered twice",
                    f"A provider named {cls.name!r} is registered already."))
            _check_types(cls, self._type_provider)
            providers[cls.name] = cls
            self._type_provider.update(dict.fromkeys(cls.resource_types, cls.name))
            return True

    def remove(self, cls: type[Provider]) -> None:
        """Undo :meth:`add`: forget ``cls``, its type names and their singletons."""
        with self._lock:
            if self._providers is not None and self._providers.get(cls.name) is cls:
                del self._providers[cls.name]
            for type_name in cls.resource_types:
                if self._type_provider.get(type_name) == cls.name:
                    del self._type_provider[type_name]
                self._types.pop(type_name, None)

    @contextmanager
    def reloaded(self) -> Iterator[None]:
        """Inside the block the registry has forgotten what it loaded, so its next use looks
        for providers again (entry points on the current ``sys.path``); afterwards what it
        held before is back."""
        with self._lock:
            saved = (self._providers, dict(self._type_provider), dict(self._types),
                     self._scanned)
            self._providers, self._type_provider, self._types = None, {}, {}
            self._scanned = False
        try:
            yield
        finally:
            with self._lock:
                (self._providers, self._type_provider, self._types,
                 self._scanned) = saved

    def providers(self) -> dict[str, type[Provider]]:
        """Every provider found, by name."""
        return dict(self._load_providers())

    def names(self) -> list[str]:
        """Every resource type name offered."""
        self._load_providers()
        return sorted(self._type_provider)

    def provider_of(self, type_name: str) -> str | None:
        """The name of the provider that offers ``type_name`` (None: none does). A built-in
        type is found without scanning the entry points."""
        self._load_providers(full=False)
        found = self._type_provider.get(type_name)
        if found is None:
            self._load_providers()
            found = self._type_provider.get(type_name)
        return found

    def provider_class(self, name: str) -> type[Provider] | None:
        """The provider named ``name`` (None: not installed); a built-in one is found
        without scanning the entry points."""
        found = self._load_providers(full=False).get(name)
        return found if found is not None else self._load_providers().get(name)

    def get(self, name: str) -> ResourceType[Any] | None:
        """The resource type ``name`` (None when no provider offers it)."""
        found = self._types.get(name)
        if found is not None:
            return found
        provider = self.provider_of(name)
        if provider is None:
            return None
        provider_cls = self.provider_class(provider)
        assert provider_cls is not None
        cls = _load(provider_cls.resource_types[name])
        inst: ResourceType[Any] = cls()
        with self._lock:
            return self._types.setdefault(name, inst)

    def all_types(self) -> Iterator[ResourceType[Any]]:
        """Every resource type, loaded."""
        for name in self.names():
            rt = self.get(name)
            assert rt is not None
            yield rt


def _check_types(cls: type[Provider], type_provider: Mapping[str, str]) -> None:
    """Refuse a provider whose type names break the naming rule (``PROVIDER_`` prefix unless
    :attr:`Provider.short_names`) or are offered by another provider already."""
    name = cls.name
    for type_name in cls.resource_types:
        if not cls.short_names and not type_name.startswith(name + "_"):
            raise ProviderError(Diagnostic.error(
                "Invalid resource type name",
                f"Provider {name!r} offers a resource type {type_name!r}: a type's name "
                f"starts with its provider's name ({name}_...)."))
        other = type_provider.get(type_name)
        if other is not None:
            raise ProviderError(Diagnostic.error(
                "Resource type offered twice",
                f"Providers {other!r} and {name!r} both offer resource type {type_name!r}. "
                "Uninstall one of them."))


def provider_settings(name: str, cls: type[Provider], table: Mapping[str, Any],
                      source: str) -> dict[str, Any]:
    """The settings of provider ``name``: ``table`` (``[providers.NAME]`` from ``source``)
    with ``TECTUM_PROVIDER_<NAME>_<SETTING>`` environment overrides, checked against
    :attr:`Provider.settings` with the diagnostics resources get, defaults filled in. Raises
    :class:`ProviderError` naming the setting and where it was written."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    unknown = sorted(set(table) - set(cls.settings.attrs))
    for key in unknown:
        known = ", ".join(sorted(cls.settings.attrs)) or "none"
        problems.append(f"unknown setting {key!r} (settings of this provider: {known})")
    for key, spec in cls.settings.attrs.items():
        env = f"TECTUM_PROVIDER_{name.upper()}_{key.upper()}"
        if env in os.environ:
            value: Any = _from_env(os.environ[env], spec.type)
            where = f"environment variable {env}"
        elif key in table:
            value, where = table[key], f"[providers.{name}] {key}"
        elif spec.required:
            problems.append(f"setting {key!r} is required ({spec.description or 'no default'})")
            continue
        elif spec.default is not MISSING:
            out[key] = spec.default
            continue
        else:
            continue
        problem = spec.check(value)
        if problem is not None:
            problems.append(f"{where}: {problem}")
            continue
        out[key] = value
    if problems:
        raise ProviderError(Diagnostic.error(
            "Invalid provider settings",
            f"Provider {name!r}: " + "; ".join(problems) + ".",
            address=f"providers.{name}", source=SourceLocation(source)))
    return out


def _from_env(text: str, kind: type | tuple[type, ...]) -> Any:
    """An environment variable's text as the setting's type (booleans: true/false/1/0/yes/no)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if bool in kinds and text.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return text.strip().lower() in ("true", "1", "yes")
    if int in kinds:
        try:
            return int(text)
        except ValueError:
            pass
    if float in kinds:
        try:
            return float(text)
        except ValueError:
            pass
    return text
