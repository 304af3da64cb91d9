"""``tectum serve``: the status page and Prometheus metrics of the run reports
(:mod:`tectum.serve`). ``tectum.cli.main`` registers the command; :func:`serve` takes the parsed
arguments as ``func(obj, **params)``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from tectum.diagnostics import Diagnostic, DiagnosticError

if TYPE_CHECKING:
    from tectum.cli.main import Ctx


# the defaults of tectum.serve, repeated: the parser is built on every run of the CLI, and
# importing tectum.serve (sockets, logging, the run store) would slow every command's start
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8088
TOKEN_ENV = "TECTUM_SERVE_TOKEN"
HISTORY = 50


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535; 0: any "
                                         "free port)")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of runs from 1 to 1000")
    return int(text)


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """The options of ``tectum serve`` (dest names: directory, host, port, token_env,
    history)."""
    p.add_argument("directory", nargs="?", default=".", metavar="DIR",
                   help="project directory (default: the current one)")
    p.add_argument("--host", default=DEFAULT_HOST, metavar="ADDRESS",
                   help=f"the address to listen on (default {DEFAULT_HOST}: this machine "
                   "only; any other address requires a token)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, metavar="PORT",
                   help=f"the port to listen on (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--token-env", default=TOKEN_ENV, metavar="NAME",
                   help=f"the environment variable holding the token that requests must carry "
                   f"(default {TOKEN_ENV}); required when --host is not a loopback address, "
                   "checked on every request when set")
    p.add_argument("--history", type=_count, default=HISTORY, metavar="N",
                   help=f"the runs shown in the page's history (default {HISTORY})")


def serve(obj: Ctx, directory: str, host: str, port: int, token_env: str,
          history: int = HISTORY) -> None:
    """Serve a status page of the agents' run reports and Prometheus /metrics over HTTP, until
    Ctrl-C or SIGTERM. Listens on 127.0.0.1 unless --host says otherwise; then every request
    must carry the token from $TECTUM_SERVE_TOKEN (--token-env)."""
    import importlib.util

    from tectum.config.project import load_project
    from tectum.masking import REDACTOR
    from tectum.runs import open_run_store
    from tectum.serve import check_token, create_app, listen, serve_forever, snapshot, url_of

    missing = [m for m in ("starlette", "uvicorn", "prometheus_client")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise DiagnosticError(Diagnostic.error(
            "The status page is not installed",
            f"tectum serve needs {', '.join(missing)}: pip install 'tectum[serve]'."))
    if not token_env or "=" in token_env:
        raise DiagnosticError(Diagnostic.error(
            "Invalid --token-env", f"{token_env!r} is not an environment variable's name."))
    token = check_token(host, os.environ.get(token_env), token_env)
    if token is not None:
        REDACTOR.add(token)  # never in a log line (the access log shows ?token=...)
    project = load_project(directory)

    store = open_run_store(project)
    view = obj.view
    try:
        snap = snapshot(store, history)
        found = (f"{len(snap.latest)} agent(s), {len(snap.unreported)} unreported, "
                 f"{len(snap.approvals)} pending approval(s)")
    except DiagnosticError as exc:  # serve anyway: the page says 503 until the store answers
        view.diagnostics(Diagnostic.warning(d.summary, d.detail) for d in exc.diagnostics)
        found = "not readable now"
    finally:
        store.close()
    app = create_app(lambda: open_run_store(project), token=token, title=project.name,
                     history=history)
    sock = listen(host, port)

    def ready() -> None:
        if token is not None:
            view.out(f"Every request but /healthz needs the token from ${token_env}: "
                     "`Authorization: Bearer TOKEN`, or ?token=TOKEN in a browser.")
        view.out(f"Serving the run reports of {project.name} ({store.where}: {found}) on "
                 f"{url_of(sock)} — /metrics for Prometheus; Ctrl-C stops.")
        sys.stdout.flush()

    try:
        serve_forever(app, sock, ready)
    finally:
        sock.close()
