"""Recording proxies: see every call a resource type makes on its target.

A conformance test needs to prove that something did *not* happen (a no-op plan and apply
made no mutating call). :class:`Recorder` wraps any target (an API client, a store) and
records each method call, read-only or not; :class:`FakeConnector` is the recorder for a host
:class:`~tectum.providers.host.connector.Connector`, which knows which connector methods
mutate. Both forward every call to the real target: nothing is faked but the bookkeeping
(the same idea as the command log of :class:`~tectum.providers.host.connector.LocalConnector`,
for any target).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tectum.providers.host.connector import CommandResult, Connector, FactRequest, PathFact

__all__ = ["Call", "FakeConnector", "Recorder", "Recording", "recording"]


class Call(NamedTuple):
    """One recorded call: the ``method`` name, its positional ``args`` and keyword ``kwargs``
    (as passed), and whether it counts as ``mutating``."""

    method: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    mutating: bool

    def __str__(self) -> str:
        shown = [_short(a) for a in self.args] + [f"{k}={_short(v)}"
                                                  for k, v in self.kwargs.items()]
        return f"{self.method}({', '.join(shown)})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@runtime_checkable
class Recording(Protocol):
    """Anything that lists the mutating calls made through it so far, oldest first
    (:class:`Recorder`, :class:`FakeConnector`, :class:`~tectum.testing.mock.MockStore`)."""

    @property
    def mutations(self) -> list[Call]: ...


class CallLog:
    """The calls an object recorded (:attr:`calls`, :attr:`mutations`), kept under a lock:
    shared by :class:`Recorder` and :class:`~tectum.testing.mock.MockStore`. A subclass sets
    ``_calls`` and ``_lock``."""

    _calls: list[Call]
    _lock: Any

    @property
    def calls(self) -> list[Call]:
        """Every call so far (a copy), oldest first."""
        with self._lock:
            return list(self._calls)

    @property
    def mutations(self) -> list[Call]:
        """The calls that count as mutating, oldest first."""
        with self._lock:
            return [c for c in self._calls if c.mutating]


class Recorder(CallLog):
    """``Recorder(inner, read_only={...})``: a proxy that forwards every attribute access to
    ``inner`` and records each method call as a :class:`Call` in :attr:`calls`.

    A call of a method named in ``read_only`` is recorded as a read; **any other method call
    counts as mutating** (unknown means unsafe: a no-op check then fails and names the call,
    rather than passing by mistake). ``mutating_call(name, args, kwargs)``, when given,
    decides instead for the methods it answers (returns True/False; None: use the rule
    above). Attributes that are not callable (``host``, ``down``) are read through.
    Thread-safe: the engine reads and applies from worker threads."""

    def __init__(self, inner: Any, *, read_only: Collection[str] = (),
                 mutating_call: Callable[[str, tuple[Any, ...], Mapping[str, Any]],
                                         bool | None] | None = None) -> None:
        self._inner = inner
        self._read_only = frozenset(read_only)
        self._mutating_call = mutating_call
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    @property
    def inner(self) -> Any:
        """The target this recorder forwards to."""
        return self._inner

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        with self._lock:
            self._calls.clear()

    def _is_mutating(self, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        if self._mutating_call is not None:
            decided = self._mutating_call(name, args, kwargs)
            if decided is not None:
                return decided
        return name not in self._read_only

    def _call(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
        call = Call(name, args, dict(kwargs), self._is_mutating(name, args, kwargs))
        with self._lock:
            self._calls.append(call)
        return fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # only reached for names this object does not have itself
        if name.startswith("__") or name in ("_inner", "_read_only", "_mutating_call",
                                              "_lock", "_calls"):
            raise AttributeError(name)
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def recorded(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, value, args, kwargs)

        recorded.__name__ = name
        return recorded

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r})"


#: connector methods that only look
CONNECTOR_READS = frozenset({"prefetch", "forget_facts", "stat_paths", "exists", "connect",
                             "close"})


def _connector_run(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool | None:
    """``run`` mutates unless called with ``mutating=False`` (the Connector contract)."""
    if name == "run":
        return bool(kwargs.get("mutating", True))
    return None


class FakeConnector(Recorder):
    """``FakeConnector(inner)``: a recording proxy around a host
    :class:`~tectum.providers.host.connector.Connector` (local or SSH). Every call is
    forwarded to ``inner`` — the files, packages and accounts are real — and recorded.

    Read-only: ``prefetch``, ``forget_facts``, ``stat_paths``, ``exists``, ``connect``,
    ``close`` and ``run(..., mutating=False)``. Mutating: ``write_file``, ``set_attrs``,
    ``make_dir``, ``make_symlink``, ``remove``, ``sweep_temp``, ``run`` (``mutating`` left
    True), and the batch methods an SSH connector adds (``write_files``, ``make_dirs``) or
    any other method. :attr:`mutations` lists the mutating calls, so a test proves that a
    no-op apply changed nothing: ``assert fake.mutations == []``.

    Methods the inner connector lacks are absent here too (``getattr(fake, "write_files",
    None)`` is None on a local connector), so a resource type takes the same code path as it
    would on ``inner``."""

    def __init__(self, inner: Connector) -> None:
        super().__init__(inner, read_only=CONNECTOR_READS, mutating_call=_connector_run)
        self.host: str = inner.host

    # The Connector protocol, spelled out so that a FakeConnector *is* a Connector to mypy.
    def prefetch(self, request: FactRequest) -> None:
        self._call("prefetch", self._inner.prefetch, (request,), {})

    def forget_facts(self) -> None:
        self._call("forget_facts", self._inner.forget_facts, (), {})

    def run(self, argv: Sequence[str], *, input: bytes | None = None, mutating: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            timeout: float | None = None) -> CommandResult:
        result: CommandResult = self._call(
            "run", self._inner.run, (argv,),
            {"input": input, "mutating": mutating, "env": env, "cwd": cwd, "timeout": timeout})
        return result

    def stat_paths(self, paths: Sequence[str], *, content: bool = False
                   ) -> list[PathFact | None]:
        found: list[PathFact | None] = self._call("stat_paths", self._inner.stat_paths,
                                                  (paths,), {"content": content})
        return found

    def write_file(self, path: str, data: bytes, *, mode: str | None, owner: str | None,
                   group: str | None, validate: str | None = None) -> None:
        self._call("write_file", self._inner.write_file, (path, data),
                   {"mode": mode, "owner": owner, "group": group, "validate": validate})

    def set_attrs(self, path: str, *, mode: str | None, owner: str | None,
                  group: str | None) -> None:
        self._call("set_attrs", self._inner.set_attrs, (path,),
                   {"mode": mode, "owner": owner, "group": group})

    def make_dir(self, path: str, *, mode: str | None, owner: str | None,
                 group: str | None) -> None:
        self._call("make_dir", self._inner.make_dir, (path,),
                   {"mode": mode, "owner": owner, "group": group})

    def make_symlink(self, path: str, target: str) -> None:
        self._call("make_symlink", self._inner.make_symlink, (path, target), {})

    def remove(self, path: str, *, recursive: bool = False) -> None:
        self._call("remove", self._inner.remove, (path,), {"recursive": recursive})

    def exists(self, path: str) -> bool:
        found: bool = self._call("exists", self._inner.exists, (path,), {})
        return found

    def sweep_temp(self, paths: Sequence[str]) -> list[str]:
        removed: list[str] = self._call("sweep_temp", self._inner.sweep_temp, (paths,), {})
        return removed


def _is_connector(target: Any) -> bool:
    return all(callable(getattr(target, m, None))
               for m in ("stat_paths", "write_file", "run", "prefetch"))


def recording(target: Any) -> Any:
    """A recording view of ``target`` for the conformance suite: the target itself when it
    records already (:class:`Recording`: a :class:`Recorder`, a
    :class:`~tectum.testing.mock.MockStore`), a :class:`FakeConnector` around a host
    connector, else a :class:`Recorder` that counts *every* method call as mutating (pass
    ``Case.record`` to say which of a target's methods only read)."""
    if isinstance(target, Recording):
        return target
    if _is_connector(target):
        return FakeConnector(target)
    return Recorder(target)
