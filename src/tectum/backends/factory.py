"""Which state backend a project uses: ``[state] backend = NAME`` in ``tectum.toml``, found
through the ``tectum.backends`` entry point group (name = backend name, value =
``module:function``; the function takes the project and a workspace name and returns a
:class:`~tectum.backends.base.StateBackend`). The built-in ``sqlite``, ``postgres`` and ``s3``
backends register the same way, and are also listed here for a checkout that was never
installed."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation

if TYPE_CHECKING:
    from tectum.backends.base import StateBackend
    from tectum.config.project import Project

#: a backend factory: (project, workspace) → backend
Factory = Callable[["Project", str], "StateBackend"]

_BUILTIN = {
    "sqlite": "tectum.backends.factory:sqlite",
    "postgres": "tectum.backends.factory:postgres",
    "s3": "tectum.backends.factory:s3",
}


def sqlite(project: Project, workspace: str) -> StateBackend:
    """The embedded default: ``[state] path`` (``.tectum/state.db``) in the project."""
    from tectum.backends.sqlite import SQLiteBackend

    return SQLiteBackend(project.state_path, workspace)


def postgres(project: Project, workspace: str) -> StateBackend:
    """PostgreSQL: ``TECTUM_PG_CONN_STR``, else ``[state] conn_str``."""
    from tectum.backends.postgres import PostgresBackend

    dsn = os.environ.get("TECTUM_PG_CONN_STR") or str(project.state.get("conn_str"))
    return PostgresBackend(dsn, workspace)


def s3(project: Project, workspace: str) -> StateBackend:
    """S3 with locks in DynamoDB: ``[state]`` ``bucket``, ``key``, ``dynamodb_table`` and
    optionally ``region``, ``profile``, ``endpoint_url``, ``use_path_style`` (Terraform's s3
    backend settings; see :mod:`tectum.backends.s3`). DiagnosticError "Invalid S3 state
    settings" for a missing or malformed setting, or credentials written there."""
    from tectum.backends.s3 import S3Backend, S3Settings

    return S3Backend(S3Settings.from_table(project.state, project.config_path), workspace)


def backend_names() -> dict[str, str]:
    """Every backend available: name → ``module:function``."""
    from importlib.metadata import entry_points

    return {**_BUILTIN, **{ep.name: ep.value for ep in entry_points(group="tectum.backends")}}


def open_backend(project: Project, workspace: str) -> StateBackend:
    """The backend ``[state] backend`` names (default ``sqlite``) for ``workspace``. Raises
    :class:`DiagnosticError` for a backend no installed package provides."""
    name = str(project.state.get("backend", "sqlite"))
    # (the built-in ones are found without scanning the entry points: ~20 ms a process)
    found = _BUILTIN if name in _BUILTIN else backend_names()
    target = found.get(name)
    if target is None:
        raise DiagnosticError(Diagnostic.error(
            "Unsupported state backend",
            f"[state] backend = {name!r} in {project.config_path}: the backends available are "
            f"{', '.join(repr(n) for n in sorted(found))}.",
            source=SourceLocation(project.config_path)))
    module, _, attr = target.partition(":")
    factory: Factory = getattr(importlib.import_module(module), attr)
    return factory(project, workspace)
