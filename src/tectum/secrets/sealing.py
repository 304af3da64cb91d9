"""A state backend wrapper that seals sensitive values at rest (:mod:`tectum.secrets.seal`):
every document a :class:`~tectum.backends.base.StateBackend` stores goes through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tectum.backends.base import StateBackend
from tectum.masking import REDACTOR
from tectum.secrets.seal import Sealer, has_sealed
from tectum.state.model import State


class SealingBackend:
    """A state backend whose documents never hold a secret in plaintext: strings holding a
    registered secret are sealed (age-encrypted, :mod:`tectum.secrets.seal`) on the way in —
    state versions, the desired state kept with them, journal records — and unsealed on the way
    out of :meth:`read`. Everything else is the wrapped backend's. A backend that takes an
    ``unseal`` hook (:class:`~tectum.state.manager.StateManager`) is given one, so that the
    per-type state upgrades it runs see plain values."""

    def __init__(self, inner: StateBackend, sealer: Sealer) -> None:
        self._inner = inner
        self._sealer = sealer
        #: whether the wrapped backend unseals what it reads itself (through the hook)
        self._unseals = hasattr(inner, "unseal")
        if self._unseals:
            setattr(inner, "unseal", self._unseal_state)  # noqa: B010 - not every backend has it

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _seal_state(self, state: State) -> State:
        if not REDACTOR:
            return state
        out = state.copy()
        out.resources = {a: r._replace(attributes=self._sealer.seal(r.attributes))
                         for a, r in state.resources.items()}
        out.outputs = self._sealer.seal(state.outputs)
        return out

    def read(self) -> State:
        state = self._inner.read()
        return state if self._unseals else self._unseal_state(state)

    def _unseal_state(self, state: State) -> State:
        if any(has_sealed(r.attributes) for r in state.resources.values()) \
                or has_sealed(state.outputs):
            state.resources = {a: r._replace(attributes=self._sealer.unseal(r.attributes))
                               for a, r in state.resources.items()}
            state.outputs = self._sealer.unseal(state.outputs)
        return state

    def write(self, state: State, operation: str, *, revision: str | None = None,
              desired: dict[str, Any] | None = None) -> int:
        return self._inner.write(self._seal_state(state), operation, revision=revision,
                                 desired=self._sealer.seal(desired) if desired else desired)

    def record(self, base_serial: int, entries: Sequence[Any]) -> None:
        if REDACTOR:
            entries = [(a, act, rec._replace(attributes=self._sealer.seal(rec.attributes))
                        if rec is not None else None) for a, act, rec in entries]
        self._inner.record(base_serial, entries)
