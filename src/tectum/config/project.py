"""The project: a directory with ``stack.py`` and an optional ``tectum.toml``.

``tectum.toml`` (all tables optional)::

    [project]
    name = "webserver"

    [vars]            # variable values (see tectum.var for precedence)
    port = 8080

    [state]
    backend = "sqlite"           # the embedded default
    path = ".tectum/state.db"    # relative to the project directory

    [state]                      # or, for teams: PostgreSQL (advisory locks)
    backend = "postgres"
    conn_str = "host=db.example port=5432 dbname=tectum user=tectum"
                                 # or TECTUM_PG_CONN_STR in the environment (it wins)

    [providers.host]             # each provider's settings (docs/providers.md); an
    concurrency = 10             # environment variable TECTUM_PROVIDER_HOST_CONCURRENCY wins
"""

from __future__ import annotations

import os
from typing import Any

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation

PROJECT_FILE = "tectum.toml"
STACK_FILE = "stack.py"


class Project:
    """A loaded project: its ``root`` directory, ``name``, ``vars`` and ``state`` tables."""

    __slots__ = ("root", "name", "vars", "state", "providers")

    def __init__(self, root: str, name: str, vars: dict[str, Any] | None = None,
                 state: dict[str, Any] | None = None,
                 providers: dict[str, dict[str, Any]] | None = None) -> None:
        self.root = root
        self.name = name
        self.vars: dict[str, Any] = vars if vars is not None else {}
        self.state: dict[str, Any] = state if state is not None else {}
        #: ``[providers.NAME]`` tables: each provider's settings (checked when it is configured)
        self.providers: dict[str, dict[str, Any]] = providers if providers is not None else {}

    @property
    def stack_file(self) -> str:
        return os.path.join(self.root, STACK_FILE)

    @property
    def config_path(self) -> str:
        """Where ``tectum.toml`` is (or would be)."""
        return os.path.join(self.root, PROJECT_FILE)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.root, ".tectum")

    @property
    def state_path(self) -> str:
        path = str(self.state.get("path", os.path.join(".tectum", "state.db")))
        return path if os.path.isabs(path) else os.path.join(self.root, path)


def _read_toml(path: str, what: str) -> dict[str, Any]:
    """The TOML document in ``path``. Raises :class:`DiagnosticError` "Invalid {what}" (the
    file, the line where known, and what is wrong: not TOML, not UTF-8 text, nested too deeply)
    or "Cannot read {what}" (the file cannot be opened or read)."""
    import tomllib

    def invalid(why: str, line: int = 0) -> DiagnosticError:
        return DiagnosticError(Diagnostic.error(
            f"Invalid {what}",
            f"{path} is not valid TOML: {why}. Fix the file and run the command again.",
            source=SourceLocation(path, line),
        ))

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DiagnosticError(Diagnostic.error(
            f"Cannot read {what}", f"{path}: {exc.strerror or exc}.", source=SourceLocation(path)
        )) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise invalid(f"it is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, "
                      f"column {column}; TOML files are UTF-8)", line) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = 0
        msg = str(exc)
        if "(at line " in msg:
            try:
                line = int(msg.rsplit("(at line ", 1)[1].split(",")[0])
            except ValueError:
                line = 0
        raise invalid(msg, line) from None
    except RecursionError:
        raise invalid("its arrays or tables are nested too deeply") from None


def load_project(directory: str) -> Project:
    """Load the project in ``directory``; raises :class:`DiagnosticError` when it has no stack
    or its ``tectum.toml`` is not valid."""
    root = os.path.abspath(directory)
    if not os.path.isdir(root):
        raise DiagnosticError(Diagnostic.error(
            "No such directory",
            f"{directory} is not a directory. Give the directory that holds stack.py.",
        ))
    if not os.path.isfile(os.path.join(root, STACK_FILE)):
        raise DiagnosticError(Diagnostic.error(
            "No stack found",
            f"{root} has no {STACK_FILE}. tectum reads the stack from DIR/{STACK_FILE}; run the "
            "command in the project directory or pass the directory.",
        ))
    data: dict[str, Any] = {}
    cfg_path = os.path.join(root, PROJECT_FILE)
    if os.path.isfile(cfg_path):
        data = _read_toml(cfg_path, "project file")
    project = data.get("project", {})
    vars_ = data.get("vars", {})
    state = data.get("state", {})
    providers = data.get("providers", {})
    for key, value in (("project", project), ("vars", vars_), ("state", state),
                       ("providers", providers), *(
                           (f"providers.{k}", v) for k, v in
                           (providers.items() if isinstance(providers, dict) else ()))):
        if not isinstance(value, dict):
            raise DiagnosticError(Diagnostic.error(
                "Invalid project file",
                f"[{key}] in {cfg_path} must be a table.",
                source=SourceLocation(cfg_path),
            ))
    # (an unknown backend name is refused where the backend is opened:
    # tectum.backends.factory, which knows the installed ones)
    backend = state.get("backend", "sqlite")
    if backend == "postgres" and not (state.get("conn_str")
                                       or os.environ.get("TECTUM_PG_CONN_STR")):
        raise DiagnosticError(Diagnostic.error(
            "No PostgreSQL connection string",
            f"[state] backend = \"postgres\" in {cfg_path} needs conn_str = \"host=... "
            "dbname=...\" there, or the TECTUM_PG_CONN_STR environment variable (keep a "
            "password out of the repository: use the environment or ~/.pgpass).",
            source=SourceLocation(cfg_path),
        ))
    return Project(root=root, name=str(project.get("name", os.path.basename(root))),
                   vars=dict(vars_), state=dict(state),
                   providers={k: dict(v) for k, v in providers.items()})


def read_var_file(path: str) -> dict[str, Any]:
    """Variables from a TOML file (``-var-file``): top-level keys are variable names. Raises
    :class:`DiagnosticError` "Invalid variables file" or "Cannot read variables file"."""
    return _read_toml(path, "variables file")
