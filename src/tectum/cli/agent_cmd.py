"""``tectum agent`` and ``tectum runs``: the reconciling agent (:mod:`tectum.agent`) and the run
reports it stores (:mod:`tectum.runs`). ``tectum.cli.main`` registers the commands; the
functions here take the parsed arguments as ``func(obj, **params)``."""

from __future__ import annotations

import datetime
import json
import sys
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError

if TYPE_CHECKING:
    import argparse

    from tectum.cli.main import Ctx
    from tectum.runs import RunReport


def add_follow_options(p: argparse.ArgumentParser, *, repo_help: str) -> None:
    """What an agent follows and how often (``tectum agent``, ``tectum bootstrap``)."""
    p.add_argument("--repo", required=True, metavar="URL", help=repo_help)
    p.add_argument("--branch", default="main", help="the branch to follow (default: main)")
    p.add_argument("--path", default=".", metavar="DIR",
                   help="the project directory inside the repository (default: its root)")
    p.add_argument("--interval", default="30m", metavar="DURATION",
                   help="time between runs: 30s, 5m, 1h (default 30m)")
    p.add_argument("--splay", default="0s", metavar="DURATION",
                   help="a random delay up to this added to each interval (default 0s)")
    p.add_argument("--mode", default="remediate", choices=("report", "remediate", "apply"),
                   help="report: only report drift and waiting changes; remediate: put back "
                   "drift, never apply new commits (default); apply: apply the branch's head")


def add_agent_options(p: argparse.ArgumentParser) -> None:
    add_follow_options(p, repo_help="the git repository to follow (any URL git fetches: "
                       "file://, ssh, https)")
    p.add_argument("--once", action="store_true",
                   help="run one cycle and exit (1 if it failed or refused the commit)")
    p.add_argument("--max-runs", type=int, metavar="N", help="exit after N cycles")
    p.add_argument("--workdir", metavar="DIR",
                   help="where the clone and the report spool live (default: under "
                   "~/.local/state/tectum/agent/)")
    p.add_argument("--name", metavar="HOST",
                   help="the host name reports carry (default: this machine's)")
    p.add_argument("--workspace", metavar="NAME", help="the workspace (default: the project's)")
    add_gate_options(p)


def add_gate_options(p: argparse.ArgumentParser) -> None:
    """What an agent applies and whose word it takes (``tectum agent``, ``tectum
    bootstrap``)."""
    p.add_argument("--require-approval", action="store_true",
                   help="apply mode: save a new commit's plan and wait for `tectum approve`")
    p.add_argument("--encrypt-to", action="append", metavar="RECIPIENT",
                   help="encrypt the saved plans to this age or ssh-ed25519 public key "
                   "(repeatable; include the agent's own: it decrypts what it applies)")
    p.add_argument("--require-signed-commits", action="store_true",
                   help="refuse a head that `git verify-commit` does not accept")
    p.add_argument("--allowed-signers", metavar="FILE",
                   help="the SSH keys trusted to sign commits (git's gpg.ssh.allowedSignersFile)")
    p.add_argument("--approvers", metavar="FILE",
                   help="apply only approvals signed by these SSH keys (OpenSSH allowed "
                   "signers: PRINCIPAL KEYTYPE KEY per line; tectum approve --sign-with)")
    p.add_argument("--webhooks", metavar="FILE",
                   help="a TOML file of [[webhooks]] (url, secret_env, events): failed runs, "
                   "drift and plans waiting for approval are posted there, signed")


def add_approve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID",
                   help="the pending runs to approve (an id or the start of one)")
    p.add_argument("--project", dest="directory", default=".", metavar="DIR",
                   help="a project whose state backend holds the runs (default: the current "
                   "directory; an agent's is WORKDIR/repo/PATH)")
    p.add_argument("--sign-with", metavar="KEY",
                   help="sign the approval with this SSH key (agents given --approvers apply "
                   "only signed approvals)")


def approve(obj: Ctx, run_ids: list[str], directory: str, sign_with: str | None = None) -> None:
    """Approve pending runs: each agent applies exactly the plan it saved for that run (by
    its digest) in its next cycle, after the stale-plan and world checks."""
    import time

    from tectum.backends.base import author

    store = _store(directory)
    try:
        chosen = []
        for run_id in run_ids:
            found = store.get(run_id)
            if found is None:
                raise DiagnosticError(Diagnostic.error(
                    "No such run", f"No run's id starts with {run_id!r} in {store.where}; "
                    "`tectum runs list --status pending` shows the runs waiting."))
            if found.status != "pending" or not found.plan_digest:
                raise DiagnosticError(Diagnostic.error(
                    "Not a pending plan",
                    f"Run {found.id[:12]} is {found.status}"
                    + ("" if found.plan_digest else " and saved no plan")
                    + ": only a run waiting for approval (status pending, with a plan) can be "
                    "approved."))
            newer = store.recent(workspace=found.workspace, host=found.host, limit=1)
            if newer and newer[0].id != found.id and newer[0].plan_digest != found.plan_digest:
                # (the agent ran since with another plan, or none: the branch or the state
                # moved on, and this plan is not what it would apply now)
                latest = newer[0]
                raise DiagnosticError(Diagnostic.error(
                    "Plan superseded",
                    f"Run {found.id[:12]}'s plan is no longer what the agent on {found.host} "
                    f"waits with: its last run {latest.id[:12]} is {latest.status}"
                    + (f"; approve {latest.id[:12]} instead." if latest.status == "pending"
                       and latest.plan_digest else ".")))
            chosen.append(found)
        for found in chosen:
            signature = None
            if sign_with:
                from tectum.approvals import sign

                signature = sign(found, sign_with)
            store.put(found.with_(status="approved", approved_by=author(),
                                  approved_at=time.time(), approval_signature=signature))
            obj.view.out(f"Approved run {found.id[:12]} ({found.host}, commit "
                         f"{(found.commit or '-')[:12]}, {found.pending} change(s), plan "
                         f"sha256 {str(found.plan_digest)[:16]}…): its agent applies it in "
                         "its next cycle.")
    finally:
        store.close()


def agent(obj: Ctx, **args: Any) -> None:
    """Keep a workspace matching a git branch: fetch, plan, and by --mode report drift, put it
    back, or apply new commits; every --interval, until stopped (SIGTERM finishes the work
    under way and saves state)."""
    from tectum.agent import Agent, options_from

    view = obj.view

    def log(line: str) -> None:
        stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
        view.out(f"{stamp} {line}")
        sys.stdout.flush()

    sys.exit(Agent(options_from(args), log).run())


def _store(directory: str) -> Any:
    from tectum.config.project import load_project
    from tectum.runs import open_run_store

    return open_run_store(load_project(directory))


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def runs_list(obj: Ctx, directory: str, workspace: str | None, host: str | None,
              status: str | None, last: int, as_json: bool) -> None:
    """List the run reports of agents (newest first), and the hosts whose agent has not
    reported for twice its interval (unreported)."""
    from tectum.runs import unreported

    store = _store(directory)
    try:
        found = store.recent(workspace=workspace, host=host, status=status, limit=last)
        late = unreported(store.latest())
    finally:
        store.close()
    view = obj.view
    if as_json:
        view.out(json.dumps({"runs": [r.to_json() for r in found],
                             "unreported": [{"workspace": r.workspace, "host": r.host,
                                             "last_run": r.id, "finished_at": r.finished_at,
                                             "interval": r.interval} for r in late]},
                            indent=2))
        return
    if not found:
        view.out(f"No runs recorded in {store.where}.")
    else:
        view.out(f"{'RUN':12}  {'STARTED':19}  {'WORKSPACE':12}  {'HOST':16}  {'MODE':9}  "
                 f"{'STATUS':15}  {'COMMIT':12}  CHANGES")
        for r in found:
            view.out(f"{r.id[:12]:12}  {_when(r.started_at):19}  {r.workspace[:12]:12}  "
                     f"{r.host[:16]:16}  {r.mode:9}  {_styled(view, r.status):15}  "
                     f"{(r.commit or '-')[:12]:12}  {r.changes} ({r.corrective} corrective), "
                     f"{r.drifted} drifted, {r.pending} pending")
    for r in late:
        view.out(view.style(
            f"unreported: {r.host} ({r.workspace}): last run {_when(r.finished_at)}, "
            f"interval {r.interval:.0f} s", fg="yellow"))


def _styled(view: Any, status: str) -> str:
    colour = {"failed": "red", "drift-found": "yellow", "pending": "yellow",
              "refused": "red", "changed": "green", "drift-corrected": "green"}.get(status)
    text = f"{status:15}"
    return view.style(text, fg=colour) if colour else text


def runs_show(obj: Ctx, run_id: str, directory: str, as_json: bool) -> None:
    """Show one run report (RUN_ID: its id or the start of it)."""
    store = _store(directory)
    try:
        found = store.get(run_id)
    finally:
        store.close()
    if found is None:
        raise DiagnosticError(Diagnostic.error(
            "No such run", f"No run's id starts with {run_id!r} in {store.where}; "
            "`tectum runs list` shows them."))
    view = obj.view
    if as_json:
        view.out(json.dumps(found.to_json(), indent=2))
        return
    for line in describe(found):
        view.out(line)


def describe(r: RunReport) -> list[str]:
    """A run report as lines of text."""
    lines = [f"run {r.id}", f"  status:     {r.status}", f"  workspace:  {r.workspace}",
             f"  host:       {r.host}", f"  mode:       {r.mode}",
             f"  branch:     {r.branch or '-'}", f"  commit:     {r.commit or '-'}",
             f"  started:    {_when(r.started_at)} ({r.duration:.1f} s)",
             f"  changes:    {r.changes} applied, {r.corrective} corrective",
             f"  drifted:    {r.drifted}", f"  pending:    {r.pending}"]
    if r.interval:
        lines.append(f"  interval:   {r.interval:.0f} s")
    if r.plan_digest:
        lines.append(f"  plan:       {r.plan_path} (sha256 {r.plan_digest})")
    if r.drift:
        lines.append("  drift:")
        lines.extend(f"    {a}" for a in r.drift)
    if r.errors:
        lines.append("  errors:")
        lines.extend(f"    {e}" for e in r.errors)
    if r.approved_by:
        lines.append(f"  approved:   by {r.approved_by} at {_when(r.approved_at or 0)}")
    return lines


