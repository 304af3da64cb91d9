"""Declaring resources, variables and outputs while a stack is evaluated.

Evaluating a stack only *declares*: each ``File(...)``/``Package(...)`` call records a
:class:`Declaration` in the :class:`Stack` being evaluated and returns a handle whose attributes
are references (``site.path``). Nothing touches the machine.

The stack being evaluated is held in a :class:`contextvars.ContextVar` for the duration of
``with Stack(...)`` — the one piece of implicit context, scoped to an evaluation, as Pulumi's
Python SDK does for its resource registrations. Problems are collected as diagnostics (with the
source line of the declaration) so that one run reports all of them.
"""

from __future__ import annotations

import contextvars
import json
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from types import FrameType, TracebackType
from typing import Any, ClassVar, NamedTuple

from tectum.addrs import ResourceAddress, valid_name
from tectum.config.facts import Facts, FactsNeeded, FactsSource, FactsUnknown, UnknownFact, facts_of
from tectum.config.inventory import Inventory, empty_inventory
from tectum.diagnostics import Diagnostic, DiagnosticError, Diagnostics, SourceLocation
from tectum.schema import MISSING, Schema
from tectum.values import SECRET, SENSITIVE_VAR, Ref, token

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_current: contextvars.ContextVar[Stack | None] = contextvars.ContextVar("tectum_stack",
                                                                        default=None)
#: the inventory host whose resources are being declared (inside a role); None: the local machine
_current_host: contextvars.ContextVar[str | None] = contextvars.ContextVar("tectum_host",
                                                                          default=None)


def caller_location(depth: int = 2) -> SourceLocation:
    """The first frame outside the tectum package: where the user declared something."""
    frame: FrameType | None = sys._getframe(depth)
    while frame is not None and frame.f_code.co_filename.startswith(_PKG_DIR):
        frame = frame.f_back
    if frame is None:
        return SourceLocation("<unknown>")
    return SourceLocation(frame.f_code.co_filename, frame.f_lineno)


class Declaration(NamedTuple):
    """One declared resource: attributes may hold reference tokens."""

    address: ResourceAddress
    type: str
    attrs: dict[str, Any]
    source: SourceLocation
    base_dir: str
    depends_on: list[str]
    watches: dict[str, list[str]]
    ignore_changes: list[str]
    #: ``"delete"``, ``"forget"``, or None: delete what tectum created, forget what it found
    on_destroy: str | None = None


class OutputDecl(NamedTuple):
    name: str
    value: Any
    sensitive: bool
    description: str
    source: SourceLocation


class VariableDecl(NamedTuple):
    name: str
    type: Any
    default: Any
    description: str
    sensitive: bool
    source: SourceLocation


class VarInput(NamedTuple):
    """A value given for a variable, and where it came from (for diagnostics)."""

    value: Any
    origin: str
    explicit: bool = False  # given with -var: undeclared is an error, not a warning


class Stack:
    """The declarations of one evaluation. Use as ``with Stack(...) as stack:``."""

    def __init__(self, base_dir: str = ".", inputs: Mapping[str, VarInput] | None = None,
                 inventory: Inventory | None = None, facts: FactsSource | None = None
                 ) -> None:
        self.base_dir = os.path.abspath(base_dir)
        #: where ``host.facts`` come from; None: unknown (``validate``)
        self.facts_source = facts
        #: hosts whose facts the stack asked for before they were gathered (None: local)
        self.facts_needed: list[str | None] = []
        #: hosts whose known facts the stack read
        self.facts_used: set[str | None] = set()
        #: where evaluating stopped at a fact that cannot be read during a plan (an
        #: unreachable host, one outside --limit): (the role's host, or None for the stack's
        #: own code; what stopped; the exception; where in the user's code)
        self.facts_stopped: list[tuple[str | None, str, FactsUnknown, SourceLocation]] = []
        #: hosts whose role stopped at such a fact: none of their resources is deleted
        self.incomplete_hosts: dict[str, str] = {}
        self.inventory: Inventory = inventory or empty_inventory(self.base_dir)
        self.inputs: dict[str, VarInput] = dict(inputs or {})
        self.resources: dict[str, Declaration] = {}
        self.outputs: dict[str, OutputDecl] = {}
        self.variables: dict[str, VariableDecl] = {}
        self.values: dict[str, Any] = {}
        #: secret names the stack uses (secret()), with where each was first used
        self.secrets: dict[str, SourceLocation] = {}
        #: values of sensitive string variables (the stack sees tokens in their place)
        self.sensitive_vars: dict[str, str] = {}
        #: ``moved(old, new)`` declarations: (old address, new address, where declared)
        self.moves: list[tuple[str, str, SourceLocation]] = []
        self.diagnostics = Diagnostics()
        self._token: contextvars.Token[Stack | None] | None = None
        self._dirs: dict[str, str] = {}

    def __enter__(self) -> Stack:
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    def facts_of(self, host: str | None) -> Facts | UnknownFact:
        """The facts of ``host`` (None: this machine), for ``host.facts`` / :func:`facts`.
        Raises :class:`~tectum.config.facts.FactsNeeded` when they are not gathered yet."""
        found = facts_of(self.facts_source, host)
        if isinstance(found, Facts):
            self.facts_used.add(host)
        return found

    def facts_pending(self, exc: FactsNeeded | FactsUnknown, what: str,
                      role_host: str | None = None) -> None:
        """Note that evaluating ``what`` stopped at a fact: ``role_host`` names the host a
        role was declaring for (None: the stack's own code). A fact to gather is noted for
        the session (it gathers and evaluates again); a fact not known is a warning while
        validating (the rest is checked at plan time) and, during a plan, an entry of
        :attr:`facts_stopped` — the session refuses the plan or keeps that host's state."""
        if isinstance(exc, FactsNeeded):
            if exc.host not in self.facts_needed:
                self.facts_needed.append(exc.host)
            return
        source = SourceLocation("<unknown>")
        tb = exc.__traceback__
        while tb is not None:
            name = tb.tb_frame.f_code.co_filename
            if not name.startswith(_PKG_DIR):
                source = SourceLocation(name, tb.tb_lineno)
            tb = tb.tb_next
        if self.facts_source is not None:
            self.facts_stopped.append((role_host, what, exc, source))
            return
        self.diagnostics.append(Diagnostic.warning(
            "Decided on a fact not known yet",
            f"{what} decides on the fact {exc.name} of {exc.host or 'this machine'}, which is "
            "read at plan time, not by validate: what follows it was not checked. "
            "`tectum plan` checks all of it.", source=source))

    def base_dir_of(self, filename: str) -> str:
        """The directory of a declaring file (templates are relative to it)."""
        found = self._dirs.get(filename)
        if found is None:
            found = os.path.dirname(os.path.abspath(filename)) \
                if os.path.exists(filename) else self.base_dir
            self._dirs[filename] = found
        return found

    def finish(self) -> None:
        """Checks that need the whole stack: undeclared variable inputs."""
        for name, given in self.inputs.items():
            if name in self.variables:
                continue
            if given.explicit:
                self.diagnostics.append(Diagnostic.error(
                    "Value for undeclared variable",
                    f"A value was given for variable {name!r} ({given.origin}), but the stack "
                    f"declares no such variable. Declare it with var({name!r}, ...) or remove "
                    "the value.",
                ))
            else:
                self.diagnostics.append(Diagnostic.warning(
                    "Value for undeclared variable",
                    f"{given.origin} sets variable {name!r}, which the stack does not declare; "
                    "the value is ignored.",
                ))


def current_stack(what: str) -> Stack:
    stack = _current.get()
    if stack is None:
        raise DiagnosticError(Diagnostic.error(
            "Declaration outside a stack",
            f"{what} was declared while no stack is being evaluated. Declare resources in "
            "stack.py (run it with `tectum plan`), or inside `with tectum.Stack():` when "
            "using the Python API.",
            source=caller_location(3),
        ))
    return stack


class Resource:
    """Base of resource declarations (``tectum.host.File`` and friends).

    ``Resource(label, **attributes)``: ``label`` names the resource in its address
    (``file.<label>``); keyword arguments are the type's attributes. Common arguments:
    ``depends_on`` (resources that must be applied first), ``ignore_changes`` (attribute names
    whose differences are not planned, as Terraform's ``lifecycle.ignore_changes``) and
    ``on_destroy`` (what removing the resource does to its object: ``"delete"`` or
    ``"forget"``; by default an object tectum created is deleted and one it found already there
    is forgotten — left as it is and no longer managed, as Terraform's ``removed`` block with
    ``destroy = false`` does).
    """

    type_name: ClassVar[str]
    #: schema attribute that defaults to the label (``Package("nginx")`` → name="nginx")
    label_attr: ClassVar[str | None] = None
    #: arguments that take resources, e.g. ``restart_on``; they add dependencies
    watch_args: ClassVar[tuple[str, ...]] = ()

    __slots__ = ("_decl",)

    @classmethod
    def type_schema(cls) -> Schema:
        from tectum.providers.registry import registry

        rtype = registry.get(cls.type_name)
        assert rtype is not None, cls.type_name
        return rtype.schema

    def __init__(
        self,
        label: str,
        /,
        *,
        depends_on: list[Any] | tuple[Any, ...] = (),
        ignore_changes: list[str] | tuple[str, ...] = (),
        on_destroy: str | None = None,
        **attrs: Any,
    ) -> None:
        from tectum.providers.registry import registry

        source = caller_location()
        stack = current_stack(f"{type(self).__name__}({label!r})")
        rtype = registry.get(self.type_name)
        assert rtype is not None, self.type_name
        schema = rtype.schema
        ok_label = isinstance(label, str) and valid_name(label)
        addr = ResourceAddress(self.type_name, label if ok_label else "invalid",
                               _current_host.get())
        address = str(addr)
        diags = stack.diagnostics
        if not ok_label:
            diags.append(Diagnostic.error(
                "Invalid resource name",
                f"{label!r} cannot name a {self.type_name} resource: a name starts with a "
                "letter or '_' and holds only letters, digits, '_' and '-'. Pass the real name "
                f"as an attribute instead, e.g. {type(self).__name__}(\"my_name\", "
                f"{self.label_attr or 'path'}=...).",
                source=source,
            ))
        if ok_label and address in stack.resources:
            other = stack.resources[address].source
            diags.append(Diagnostic.error(
                "Duplicate resource",
                f"{address} is declared twice: here and at {other}. Give each resource its "
                "own name.",
                address=address,
                source=source,
            ))
        values: dict[str, Any] = {}
        watches: dict[str, list[str]] = {}
        for key, value in attrs.items():
            if key in self.watch_args:
                watches[key] = self._addresses(value, key, address, source, diags)
                continue
            attr = schema.attrs.get(key)
            if attr is None or attr.computed:
                known = ", ".join(sorted(schema.settable) + list(self.watch_args))
                why = ("is computed by the provider and cannot be set" if attr is not None
                       else "is not an argument of this resource type")
                diags.append(Diagnostic.error(
                    "Unsupported argument",
                    f"{key!r} {why}. Arguments of {self.type_name}: {known}.",
                    address=address,
                    source=source,
                ))
                continue
            if value is None:
                continue
            value = _declared_value(value)
            problem = attr.check(value)
            if problem is not None:
                diags.append(Diagnostic.error(
                    "Invalid attribute value",
                    f"Attribute {key!r}: {problem}.",
                    address=address,
                    source=source,
                ))
                continue
            values[key] = value
        if self.label_attr and self.label_attr not in values and ok_label:
            values[self.label_attr] = label
        for key, attr in schema.attrs.items():
            if attr.required and key not in values and key not in attrs:
                diags.append(Diagnostic.error(
                    "Missing required argument",
                    f"The argument {key!r} is required by {self.type_name} resources"
                    + (f" ({attr.description})" if attr.description else "") + ".",
                    address=address,
                    source=source,
                ))
        for key in ignore_changes:
            if key not in schema.attrs:
                diags.append(Diagnostic.error(
                    "Unsupported argument",
                    f"ignore_changes names {key!r}, which is not an attribute of "
                    f"{self.type_name}.",
                    address=address,
                    source=source,
                ))
        if on_destroy is not None and on_destroy not in ("delete", "forget"):
            diags.append(Diagnostic.error(
                "Invalid attribute value",
                f"on_destroy must be \"delete\" or \"forget\", not {on_destroy!r}.",
                address=address,
                source=source,
            ))
            on_destroy = None
        given = {k: v for k, v in attrs.items() if k in schema.attrs and v is not None}
        for problem in rtype.check(given):
            diags.append(Diagnostic.error("Invalid resource configuration", problem,
                                          address=address, source=source))
        decl = Declaration(
            address=addr,
            type=self.type_name,
            attrs=values,
            source=source,
            base_dir=stack.base_dir_of(source.filename),
            depends_on=self._addresses(depends_on, "depends_on", address, source, diags),
            watches=watches,
            ignore_changes=list(ignore_changes),
            on_destroy=on_destroy,
        )
        object.__setattr__(self, "_decl", decl)
        if ok_label and address not in stack.resources:
            stack.resources[address] = decl

    @staticmethod
    def _addresses(value: Any, key: str, address: str, source: SourceLocation,
                   diags: Diagnostics) -> list[str]:
        items = value if isinstance(value, list | tuple) else [value]
        out: list[str] = []
        for item in items:
            if isinstance(item, Resource):
                out.append(str(item._decl.address))
            else:
                diags.append(Diagnostic.error(
                    "Invalid attribute value",
                    f"{key} takes resources (e.g. {key}=[site]); got {item!r}.",
                    address=address,
                    source=source,
                ))
        return out

    @property
    def address(self) -> str:
        return str(self._decl.address)

    def __getattr__(self, name: str) -> Ref:
        if name.startswith("_"):
            raise AttributeError(name)
        decl: Declaration = object.__getattribute__(self, "_decl")
        schema = self.type_schema()
        if name not in schema.attrs:
            raise AttributeError(
                f"{decl.address} has no attribute {name!r}; attributes of {decl.type}: "
                + ", ".join(sorted(schema.attrs))
            )
        return Ref(str(decl.address), name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("resource declarations are immutable once made")

    def __repr__(self) -> str:
        return f"<{self._decl.address}>"


def _declared_value(value: Any) -> Any:
    """A value as declared: references become tokens; a resource handle is an error."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Ref):
        return str(value)
    if isinstance(value, Resource):
        raise TypeError(
            f"a resource ({value.address}) cannot be an attribute value; use one of its "
            "attributes, e.g. .path"
        )
    if isinstance(value, list | tuple):
        return [_declared_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _declared_value(v) for k, v in value.items()}
    return value


_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _convert(value: Any, typ: Any) -> Any:
    """Convert a given value (often text from the CLI or environment) to ``typ``: one of
    ``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``, or a union of them (``int |
    str``, ``Optional[int]``). A union takes a value of any of its types as it is; text is
    tried as each of its types in turn, ``str`` last (so ``"512"`` is 512 for ``int | str``
    and ``"512mb"`` the string), and ``null`` is None where None is allowed. Raises
    ``ValueError`` naming what was expected."""
    members = typing.get_args(typ) if isinstance(typ, types.UnionType) \
        or typing.get_origin(typ) is typing.Union else ()
    if members:
        return _convert_union(value, members)
    origin = getattr(typ, "__origin__", None) or typ
    if origin is Any or origin is object:
        return value
    if isinstance(value, origin) and not (isinstance(value, bool) and origin is int):
        return value
    if not isinstance(value, str):
        if origin is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"expected {getattr(origin, '__name__', origin)}, got {value!r}")
    text = value.strip()
    if origin is bool:
        if text.lower() in _BOOL_TEXT:
            return _BOOL_TEXT[text.lower()]
        raise ValueError(f"expected true or false, got {value!r}")
    parsers: dict[Any, Any] = {int: int, float: float, list: json.loads, dict: json.loads}
    names = {int: "an integer", float: "a number", list: "a JSON list (e.g. [\"a\", \"b\"])",
             dict: "a JSON object (e.g. {\"k\": \"v\"})"}
    if origin in parsers:
        try:
            parsed = parsers[origin](text)
        except ValueError:
            parsed = None
        if isinstance(parsed, origin):
            return parsed
        raise ValueError(f"expected {names[origin]}, got {value!r}")
    raise ValueError(f"cannot convert {value!r} to {typ!r}")


def _convert_union(value: Any, members: tuple[Any, ...]) -> Any:
    plain = [m for m in members if m is not type(None)]
    if type(None) in members and (value is None or (
            isinstance(value, str) and value.strip().lower() in ("null", "none"))):
        return None
    if isinstance(value, str):
        # text (the CLI, the environment): as each other type in turn, as a string last
        for member in sorted(plain, key=lambda m: m is str):
            try:
                return _convert(value, member)
            except (ValueError, TypeError):
                continue
    else:
        for member in plain:
            origin = getattr(member, "__origin__", None) or member
            if isinstance(value, origin) \
                    and not (isinstance(value, bool) and origin is not bool):
                return value
    names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
    raise ValueError(f"expected {names}, got {value!r}")


def var(
    name: str,
    type: Any = str,
    *,
    default: Any = MISSING,
    description: str = "",
    sensitive: bool = False,
) -> Any:
    """Declare an input variable and return its value.

    The value comes, lowest precedence first (Terraform's order): ``default``, the environment
    (``TECTUM_VAR_<name>``), ``[vars]`` in ``tectum.toml``, ``-var-file`` files, then ``-var
    name=value``. Text values are converted to ``type`` (``str``, ``int``, ``float``, ``bool``,
    ``list``, ``dict``, or a union such as ``int | str``; lists and mappings as JSON). A missing
    or unconvertible value is a diagnostic at the line of this call.
    """
    source = caller_location()
    stack = current_stack(f"var({name!r})")
    if name in stack.variables:
        stack.diagnostics.append(Diagnostic.error(
            "Duplicate variable",
            f"Variable {name!r} is declared twice: here and at {stack.variables[name].source}.",
            source=source,
        ))
        return stack.values.get(name)
    stack.variables[name] = VariableDecl(name, type, default, description, sensitive, source)
    given = stack.inputs.get(name)
    if given is None:
        env = os.environ.get(f"TECTUM_VAR_{name}")
        if env is not None:
            given = VarInput(env, f"environment variable TECTUM_VAR_{name}")
    if given is None:
        if default is MISSING:
            raise DiagnosticError(Diagnostic.error(
                "No value for required variable",
                f"Variable {name!r} has no default and no value was given. Set it with "
                f"-var {name}=VALUE, in tectum.toml under [vars], or with TECTUM_VAR_{name}.",
                source=source,
            ))
        value = default
    else:
        try:
            value = _convert(given.value, type)
        except (ValueError, TypeError) as exc:
            raise DiagnosticError(Diagnostic.error(
                "Invalid value for variable",
                f"Variable {name!r} from {given.origin}: {exc}.",
                source=source,
            )) from None
    if sensitive:
        from tectum.masking import REDACTOR

        REDACTOR.add(str(value))
        if isinstance(value, str):
            # a token, as secret() gives: derived values stay marked, state never holds it
            stack.sensitive_vars[name] = value
            value = token(SENSITIVE_VAR, name)
    stack.values[name] = value
    return value


def moved(from_: str, to: Resource | str) -> None:
    """Declare that the resource once at address ``from_`` is now ``to`` (a resource of this
    stack, or its address): state follows at the next apply, and the object is neither deleted
    nor created (Terraform's ``moved`` block). Keep it while a workspace may still hold the
    old address; it does nothing once none does."""
    source = caller_location()
    stack = current_stack("moved()")
    new = str(to._decl.address) if isinstance(to, Resource) else to
    for text in (from_, new):
        try:
            ResourceAddress.parse(text)
        except (ValueError, TypeError) as exc:
            stack.diagnostics.append(Diagnostic.error(
                "Invalid moved declaration", f"{exc}.", source=source))
            return
    stack.moves.append((from_, new, source))


def secret(name: str) -> str:
    """The value of secret ``name`` in the workspace's encrypted secrets file
    (``secrets/WORKSPACE.yaml``; see ``tectum secrets``), as a *token* string: it works in
    f-strings, ``+``, template variables and outputs like a reference, and everything built from
    it is sensitive — masked in every output, encrypted at rest, never on a command line
    (DESIGN decision 6). The file is decrypted when the plan is made, not while the stack is
    evaluated."""
    source = caller_location()
    stack = current_stack(f"secret({name!r})")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
        raise DiagnosticError(Diagnostic.error(
            "Invalid secret name",
            f"{name!r} cannot name a secret: a name starts with a letter or '_' and holds "
            "letters, digits, '_', '.' and '-'.", source=source))
    stack.secrets.setdefault(name, source)
    return token(SECRET, name)


def output(name: str, value: Any, *, sensitive: bool = False, description: str = "") -> None:
    """Declare an output: a value shown after apply and kept in state (``tectum output``)."""
    source = caller_location()
    stack = current_stack(f"output({name!r})")
    if name in stack.outputs:
        stack.diagnostics.append(Diagnostic.error(
            "Duplicate output",
            f"Output {name!r} is declared twice: here and at {stack.outputs[name].source}.",
            source=source,
        ))
        return
    stack.outputs[name] = OutputDecl(name, _declared_value(value), sensitive,
                                     description, source)


class Host:
    """An inventory host as a role sees it: ``name``, ``groups``, merged ``vars`` (defaults <
    groups < host, as the inventory says) and ``address``. ``with host:`` declares the
    resources made in its body on that host (``host["NAME"].TYPE.LABEL``)."""

    __slots__ = ("name", "groups", "vars", "address", "_token")

    def __init__(self, name: str, groups: tuple[str, ...], vars: dict[str, Any],
                 address: str) -> None:
        self.name = name
        self.groups = groups
        self.vars = vars
        self.address = address
        self._token: contextvars.Token[str | None] | None = None

    def __enter__(self) -> Host:
        if _current_host.get() is not None:
            raise DiagnosticError(Diagnostic.error(
                "Nested host context",
                f"Resources are already being declared on host {_current_host.get()!r}; a "
                f"role cannot switch to {self.name!r} inside it. Apply roles one after "
                "another at the top level of the stack.",
                source=caller_location()))
        self._token = _current_host.set(self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _current_host.reset(self._token)
            self._token = None

    def __repr__(self) -> str:
        return f"<host {self.name}>"

    @property
    def facts(self) -> Facts | UnknownFact:
        """What the host is: OS, kernel, architecture, CPUs, memory, names, addresses, init
        system, package manager (``docs/facts.md``; Ansible's gathered facts). Read in the
        host's one round trip at plan time; unknown during ``validate``."""
        return current_stack(f"host[{self.name!r}].facts").facts_of(self.name)


def hosts(pattern: str = "all") -> list[Host]:
    """The inventory hosts matched by ``pattern`` (host and group names, comma-separated, or
    ``all``), in inventory order. Raises :class:`DiagnosticError` for an unknown name."""
    stack = current_stack(f"hosts({pattern!r})")
    inv = stack.inventory
    if not inv.hosts:
        raise DiagnosticError(Diagnostic.error(
            "No inventory",
            f"hosts({pattern!r}) needs an inventory, and {inv.path} does not exist. Write it "
            "(see `tectum --help` and README: [hosts.NAME] address = ...) or pass "
            "--inventory FILE.", source=caller_location()))
    try:
        names = inv.select(pattern)
    except DiagnosticError as exc:
        raise DiagnosticError([d._replace(source=caller_location()) for d in exc.diagnostics]
                              ) from None
    out = []
    for name in names:
        if name == "local":
            continue
        h = inv.hosts[name]
        out.append(Host(name, h.groups, dict(h.vars), h.connection.address))
    return out


def provisioned_host(resource: Resource) -> Host:
    """The host a provisioned object is (a container: ``podman:NAME``), for a role applied
    to it; raises :class:`DiagnosticError` when the resource is no host or its name is not
    known while the stack is evaluated."""
    from tectum.providers.registry import registry

    decl: Declaration = object.__getattribute__(resource, "_decl")
    rt = registry.get(decl.type)
    name = rt.provides_host(decl.attrs) if rt is not None else None
    if name is None or "${tectum:" in name:
        why = ("it is not a host a role can configure" if name is None else
               "its name is a reference, not known while the stack is evaluated: give it a "
               "literal name")
        raise DiagnosticError(Diagnostic.error(
            "Cannot apply a role", f"apply_role(..., {decl.address}): {why}.",
            address=str(decl.address), source=caller_location(3)))
    return Host(name, (), {}, name.partition(":")[2])


def apply_role(role: Any, to: Any = "all", /, *args: Any, **kwargs: Any) -> list[Any]:
    """Call ``role(host, *args, **kwargs)`` once for every host matched by ``to`` (a pattern as
    for :func:`hosts`; or a resource that is a host, such as a ``podman_container``, or a list
    of them), with that host's context set: every resource the role declares is that host's.
    Returns the role's return values, in host order. A role is an ordinary Python function
    (Ansible's roles, pyinfra's deploys); applied to a container it configures the container
    through its provider's connector (``podman exec``), in the same plan as the container."""
    stack = current_stack("apply_role()")
    results = []
    if isinstance(to, Resource) or (isinstance(to, list | tuple) and to
                                    and all(isinstance(t, Resource) for t in to)):
        targets = [provisioned_host(t) for t in (to if isinstance(to, list | tuple) else [to])]
    else:
        targets = hosts(to)
    for host in targets:
        with host:
            try:
                results.append(role(host, *args, **kwargs))
            except (FactsNeeded, FactsUnknown) as exc:
                name = getattr(role, "__name__", "a role")
                stack.facts_pending(exc, f"Role {name!r} on host {host.name!r}", host.name)
                results.append(None)
    return results


def facts() -> Facts | UnknownFact:
    """The facts of the machine resources are declared on: this machine at the top of a
    stack, the host inside a role (``host.facts`` there is the same). See :attr:`Host.facts`."""
    return current_stack("facts()").facts_of(_current_host.get())
