"""``tectum bootstrap HOST...``: install tectum and the agent as a service on inventory hosts
(:mod:`tectum.bootstrap`). ``tectum.cli.main`` registers the command with the fleet options
(``--inventory``, ``--forks``, ``--accept-new-host-keys``; they arrive in ``obj.fleet``)."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError

if TYPE_CHECKING:
    import argparse

    from tectum.cli.main import Ctx


def add_bootstrap_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("targets", nargs="+", metavar="HOST",
                   help="inventory hosts or groups ('all': every host)")
    p.add_argument("--dir", dest="directory", default=".", metavar="DIR",
                   help="the project whose inventory.toml names the hosts (default: the "
                   "current directory)")
    from tectum.cli.agent_cmd import add_follow_options

    add_follow_options(p, repo_help="the git repository the agents follow (a URL the hosts "
                       "can fetch)")
    p.add_argument("--workspace", metavar="NAME",
                   help="the agents' workspace; {host} stands for each host's name (one "
                   "workspace per host in a shared database: --workspace '{host}')")
    from tectum.cli.agent_cmd import add_gate_options

    add_gate_options(p)  # (the files they name are copied to /etc/tectum/ on each host)
    p.add_argument("--pg-conn-str-env", default="TECTUM_PG_CONN_STR", metavar="VAR",
                   help="the environment variable holding the PostgreSQL DSN the agents "
                   "report to (default TECTUM_PG_CONN_STR; unset: none is configured); "
                   "written to the hosts' /etc/tectum/agent.env (mode 0600), never shown")
    p.add_argument("--pip-env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment setting for pip on the hosts (PIP_INDEX_URL, "
                   "PIP_CERT, ...; repeatable), when the hosts install tectum's "
                   "dependencies from an index")
    p.add_argument("--wheelhouse", metavar="DIR",
                   help="build tectum's dependencies here as wheels on this machine (a cache) "
                   "and install them on the hosts with no index (the hosts must have this "
                   "machine's Python version and architecture)")
    p.add_argument("--from", dest="source", metavar="CHECKOUT|WHEEL",
                   help="the tectum to install: a source checkout or a wheel (default: the "
                   "checkout this tectum runs from)")


def bootstrap(obj: Ctx, targets: list[str], directory: str, repo: str, branch: str, path: str,
              interval: str, splay: str, mode: str, workspace: str | None,
              pg_conn_str_env: str, pip_env: list[str], wheelhouse: str | None,
              source: str | None, require_approval: bool = False,
              encrypt_to: list[str] | None = None, require_signed_commits: bool = False,
              allowed_signers: str | None = None, approvers: str | None = None,
              webhooks: str | None = None, **_: Any) -> None:
    """Install python3, tectum and the agent (as a service) on inventory hosts, configured to
    follow REPO's BRANCH and report to PostgreSQL; exits 1 when a host failed (the others are
    done), naming the host, the step and what to do."""
    from tectum.bootstrap import BootstrapOptions, build_wheels
    from tectum.bootstrap import bootstrap as run_bootstrap
    from tectum.config.inventory import LOCAL, load_inventory

    view = obj.view
    fleet = obj.fleet
    settings: dict[str, str] = {}
    for item in pip_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise DiagnosticError(Diagnostic.error(
                "Invalid --pip-env", f"--pip-env {item.split('=')[0]!r}... is not of the form "
                "NAME=VALUE (e.g. PIP_INDEX_URL=https://...)."))
        settings[name] = value
    options = BootstrapOptions(
        repo=repo, branch=branch, path=path, interval=interval, splay=splay, mode=mode,
        workspace=workspace, pg_conn_str=os.environ.get(pg_conn_str_env) or None,
        pip_env=settings, require_approval=require_approval,
        encrypt_to=tuple(encrypt_to or ()), require_signed_commits=require_signed_commits,
        allowed_signers=allowed_signers, approvers=approvers, webhooks=webhooks)
    if source is not None and not os.path.exists(source):
        raise DiagnosticError(Diagnostic.error(
            "No such wheel" if source.endswith(".whl") else "No tectum source",
            f"--from {source}: no such file or directory; give a tectum checkout or a "
            "tectum-VERSION-py3-none-any.whl."))
    inventory = load_inventory(os.path.abspath(directory), fleet.get("inventory"))
    names = [n for n in inventory.select(",".join(targets)) if n != LOCAL]
    if fleet.get("limit"):
        allowed = set(inventory.select(fleet["limit"]))
        names = [n for n in names if n in allowed]
    if not names:
        raise DiagnosticError(Diagnostic.error(
            "No hosts", f"{' '.join(targets)} names no SSH host of {inventory.path} "
            "('local' is this machine: run `tectum agent` here instead)."))
    if options.pg_conn_str is None:
        view.out(f"note: {pg_conn_str_env} is not set: the agents report where their "
                 "project's state is configured")
    with tempfile.TemporaryDirectory(prefix="tectum-bootstrap-") as tmp:
        what = source if source and source.endswith(".whl") else "tectum's wheel"
        view.out(f"Preparing {what}" + (f" and the wheelhouse {wheelhouse}" if wheelhouse
                                        else "") + " ...")
        wheels = build_wheels(source, tmp, wheelhouse)

        def log(line: str) -> None:
            view.out(f"  {line}")
            sys.stdout.flush()

        results = run_bootstrap(inventory, names, options, wheels,
                                forks=int(fleet.get("forks") or 50),
                                trust_unknown=bool(fleet.get("accept_new_host_keys")), log=log)
    failed = [r for r in results if r.error]
    changed = [r for r in results if r.changes and not r.error]
    for r in results:
        for warning in r.warnings:
            view.diagnostic(Diagnostic.warning("Database not reachable", warning,
                                               address=f'host["{r.host}"]'))
        if r.error:
            view.diagnostic(Diagnostic.error(
                f"Bootstrap failed on {r.host}",
                f"{r.error} (host {r.host!r} in {inventory.path}; fix it and run "
                "`tectum bootstrap` again: what is done is kept)", address=f'host["{r.host}"]'))
        elif not r.changes:
            view.out(f"{r.host}: ok, nothing to change (agent running, {r.init})")
        else:
            view.out(f"{r.host}: {len(r.changes)} change(s), agent running ({r.init})")
    view.out(f"Hosts: {len(changed)} changed, {len(results) - len(changed) - len(failed)} ok, "
             f"{len(failed)} failed.")
    if failed:
        sys.exit(1)
