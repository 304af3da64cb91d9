"""Conformance cases kept beside their types' own tests: every module here defines

``BUILDERS``  type name -> a context manager taking ``tmp_path`` and yielding a
              :class:`~tectum.testing.Case` (and removing afterwards whatever the case made)
``MARKS``     type name -> the README markers (and skip conditions) its case needs

and :mod:`tests.providers.test_conformance` runs them with the built-in ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from tectum.testing import Case

Builder = Callable[[Path], AbstractContextManager[Case]]


def collect() -> tuple[dict[str, Builder], dict[str, list[pytest.MarkDecorator]]]:
    """Every module's ``BUILDERS`` and ``MARKS``, merged (a type named twice is an error)."""
    builders: dict[str, Builder] = {}
    marks: dict[str, list[pytest.MarkDecorator]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module: Any = importlib.import_module(f"{__name__}.{info.name}")
        for name, builder in getattr(module, "BUILDERS", {}).items():
            if name in builders:
                raise RuntimeError(f"two conformance cases for {name!r}")
            builders[name] = builder
        marks.update(getattr(module, "MARKS", {}))
    return builders, marks
