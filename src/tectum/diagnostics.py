"""User-facing problems as diagnostics, never tracebacks.

A :class:`Diagnostic` has a fixed short ``summary`` ("Unsupported argument"), a full-sentence
``detail`` that says what is wrong and what to do, and — where known — the resource ``address``
and the ``source`` location (file and line) it comes from. The shape follows Terraform's
``tfdiags`` package and OpenTofu's ``docs/diagnostics.md``: a summary names the class of problem,
the detail is specific to this occurrence.

Code that finds a user error either appends to a :class:`Diagnostics` list (to report every problem
at once, as ``validate`` does) or raises :class:`DiagnosticError` (to stop at once). The CLI renders
both and exits 1; it never shows a Python traceback for them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from typing import NamedTuple


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


class SourceLocation(NamedTuple):
    """A place in a user's file: ``filename`` as given, ``line`` 1-based (0 = unknown)."""

    filename: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}" if self.line else self.filename


class Diagnostic(NamedTuple):
    severity: Severity
    summary: str
    detail: str = ""
    address: str | None = None
    source: SourceLocation | None = None

    @classmethod
    def error(
        cls,
        summary: str,
        detail: str = "",
        *,
        address: str | None = None,
        source: SourceLocation | None = None,
    ) -> Diagnostic:
        return cls(Severity.ERROR, summary, detail, address, source)

    @classmethod
    def warning(
        cls,
        summary: str,
        detail: str = "",
        *,
        address: str | None = None,
        source: SourceLocation | None = None,
    ) -> Diagnostic:
        return cls(Severity.WARNING, summary, detail, address, source)

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "summary": self.summary,
            "detail": self.detail,
            "address": self.address,
            "source": (
                {"filename": self.source.filename, "line": self.source.line}
                if self.source
                else None
            ),
        }


class Diagnostics:
    """An ordered list of diagnostics; ``has_errors`` says whether to stop."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Diagnostic] = ()) -> None:
        self._items: list[Diagnostic] = list(items)

    def append(self, diag: Diagnostic) -> None:
        self._items.append(diag)

    def extend(self, diags: Iterable[Diagnostic]) -> None:
        self._items.extend(diags)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self._items)

    def raise_if_errors(self) -> None:
        """Raise :class:`DiagnosticError` carrying every diagnostic if any is an error."""
        if self.has_errors:
            raise DiagnosticError(self)


class DiagnosticError(Exception):
    """Carries diagnostics out of the engine to the CLI (which renders them and exits 1)."""

    def __init__(self, diags: Diagnostics | Diagnostic | Iterable[Diagnostic]) -> None:
        if isinstance(diags, Diagnostic):
            diags = Diagnostics([diags])
        elif not isinstance(diags, Diagnostics):
            diags = Diagnostics(diags)
        self.diagnostics = diags
        first = next(iter(diags), None)
        super().__init__(first.summary if first else "error")
