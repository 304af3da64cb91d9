"""``tectum agent``: a reconciling agent that keeps a workspace matching a git branch, unattended.

Each cycle fetches the branch into the agent's clone (``git`` CLI), plans, acts by mode, and
stores a :class:`~tectum.runs.RunReport`:

``report``     plan the branch's head and report: drift (``drift-found``), changes waiting
               (``pending``) or ``unchanged``; nothing is applied.
``remediate``  put back drift — what was changed outside tectum — but never apply a new commit:
               the plan declares what the last apply declared (the desired state kept with the
               latest state version, as ``tectum rollback`` uses it; the new commit's code is
               not even evaluated), so only corrections are applied (``drift-corrected``);
               a new commit on the branch is reported as waiting. Argo CD's *self-heal*
               without *auto-sync*.
``apply``      check out the head and apply it (``changed``; ``drift-corrected`` when every
               change put back drift). A head whose stack does not evaluate fails the run, and
               the cycle still corrects drift against the last applied configuration.

Drift is checked every cycle, also when the branch did not move (unlike ``ansible-pull
--only-if-changed``, which then skips the run). A failed cycle is retried after a backoff
(5 s doubling, at most the interval); the agent never gives up. A cycle takes the workspace
lock like any run; SIGTERM (and SIGINT) lets the apply under way finish its operations and save
state, then the agent exits. Between cycles it sleeps ``interval`` plus a random ``splay`` (so a
fleet does not run at once; Puppet's ``splay``).

Where things are: the clone in ``WORKDIR/repo`` (default ``$XDG_CACHE_HOME/tectum/agent/<digest
of repository, branch and path>``), the project at ``WORKDIR/repo/PATH``, its state wherever
its ``tectum.toml`` says (the embedded SQLite file inside the clone's ``.tectum/``, untracked;
or the shared PostgreSQL database a fleet reports to), and reports that could not be stored in
``WORKDIR/spool`` until the store answers (:class:`~tectum.runs.Spool`).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.runs import MODES, RunReport, RunStore, Spool, masked, open_run_store

if TYPE_CHECKING:
    from tectum.engine.session import Session
    from tectum.plans.plan import Plan

#: the first wait after a failed cycle (seconds), doubled after each further failure
BACKOFF = 5.0


class AgentError(Exception):
    """A cycle step failed (the message says what and what to do)."""


@dataclass
class AgentOptions:
    """What ``tectum agent`` is given (see the module docstring). Times are seconds."""

    repo: str
    branch: str = "main"
    path: str = "."
    interval: float = 1800.0
    splay: float = 0.0
    mode: str = "remediate"
    once: bool = False
    max_runs: int | None = None
    workdir: str | None = None
    name: str = field(default_factory=socket.gethostname)
    workspace: str | None = None
    parallelism: int = 10
    lock_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DiagnosticError(Diagnostic.error(
                "Unknown agent mode", f"--mode {self.mode}: the modes are "
                f"{', '.join(MODES)}."))
        if self.interval <= 0 or self.splay < 0:
            raise DiagnosticError(Diagnostic.error(
                "Invalid interval", "--interval must be above 0 and --splay not below 0."))
        if self.workdir is None:
            cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                os.path.expanduser("~"), ".cache")
            digest = hashlib.sha256(f"{self.repo}\0{self.branch}\0{self.path}".encode())
            self.workdir = os.path.join(cache, "tectum", "agent", digest.hexdigest()[:16])


def git(*args: str, cwd: str | None = None, timeout: float = 300.0) -> str:
    """``git ARGS`` (no prompt for credentials); its standard output. Raises
    :class:`AgentError` with git's message."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
    except FileNotFoundError:
        raise AgentError("git is not installed: the agent needs the git CLI "
                         "(apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise AgentError(f"git {args[0]} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        message = " ".join((proc.stderr or proc.stdout).strip().split("\n")[-2:])
        raise AgentError(f"git {args[0]} failed: {message}")
    return proc.stdout


def messages(exc: BaseException) -> list[str]:
    """What went wrong, as sentences (a diagnostic's summary and detail)."""
    if isinstance(exc, DiagnosticError):
        return [f"{d.summary}: {d.detail}" if d.detail else d.summary
                for d in exc.diagnostics]
    if isinstance(exc, AgentError):
        return [str(exc)]
    return [f"{type(exc).__name__}: {exc}"]


class Agent:
    """The agent loop: :meth:`cycle` once, or :meth:`run` until stopped. ``log`` receives one
    line per event (the CLI prints them)."""

    def __init__(self, options: AgentOptions, log: Callable[[str], None] = print) -> None:
        self.options = options
        self.log = log
        assert options.workdir is not None
        self.clone = os.path.join(options.workdir, "repo")
        self.project_dir = os.path.normpath(os.path.join(self.clone, options.path))
        self.spool = Spool(os.path.join(options.workdir, "spool"))
        self.stopping = threading.Event()
        self.failures = 0
        self.runs = 0

    # -- git -----------------------------------------------------------------------------------
    def fetch(self) -> str:
        """Clone or fetch the branch (a force-pushed branch is followed); its head's commit."""
        o = self.options
        if not os.path.isdir(os.path.join(self.clone, ".git")):
            os.makedirs(os.path.dirname(self.clone), exist_ok=True)
            git("clone", "--quiet", "--branch", o.branch, "--single-branch", "--", o.repo,
                self.clone)
        else:
            git("fetch", "--quiet", "--force", "origin",
                f"+refs/heads/{o.branch}:refs/remotes/origin/{o.branch}", cwd=self.clone)
        return git("rev-parse", f"refs/remotes/origin/{o.branch}^{{commit}}",
                   cwd=self.clone).strip()

    def checked_out(self) -> str | None:
        try:
            return git("rev-parse", "HEAD^{commit}", cwd=self.clone).strip()
        except AgentError:
            return None

    def checkout(self, commit: str) -> None:
        """The work tree at ``commit`` (tracked files only: the state in ``.tectum/`` stays)."""
        git("checkout", "--quiet", "--force", "--detach", commit, cwd=self.clone)

    # -- one cycle -------------------------------------------------------------------------------
    def cycle(self) -> RunReport:
        """Fetch, plan, act by mode; the report is stored (or spooled) and returned."""
        from tectum.engine.session import Session

        o = self.options
        started, t0 = time.time(), time.monotonic()
        errors: list[str] = []
        head: str | None = None
        try:
            head = self.fetch()
        except AgentError as exc:
            errors.append(f"fetch of {o.branch} from {o.repo}: {exc}; the last fetched "
                          "commit is used")
        if self.checked_out() is None:
            if head is None:
                return self._finish(RunReport(
                    workspace=o.workspace or "default", host=o.name, mode=o.mode,
                    status="failed", started_at=started, branch=o.branch,
                    interval=o.interval, errors=tuple(errors)), t0)
            self.checkout(head)  # (the first cycle: some configuration to start from)
        result: dict[str, Any] = {}
        try:
            session = Session(self.project_dir, workspace=o.workspace,
                              lock_timeout=o.lock_timeout)
        except DiagnosticError as exc:
            errors.extend(messages(exc))
            return self._finish(RunReport(
                workspace=o.workspace or "default", host=o.name, mode=o.mode, status="failed",
                started_at=started, branch=o.branch, commit=head, interval=o.interval,
                errors=tuple(errors)), t0)
        try:
            result = self._act(session, head, errors)
        except DiagnosticError as exc:
            errors.extend(messages(exc))
        except Exception as exc:  # noqa: BLE001 - reported, and the agent goes on
            errors.append(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            session.close()
        status = result.get("status", "failed")
        if errors and status not in ("failed",):
            status = "failed"
        return self._finish(RunReport(
            workspace=session.workspace, host=o.name, mode=o.mode, status=status,
            started_at=started, branch=o.branch, commit=result.get("commit", head),
            corrective=result.get("corrective", 0), changes=result.get("changes", 0),
            drifted=result.get("drifted", 0), pending=result.get("pending", 0),
            interval=o.interval, errors=tuple(errors),
            drift=tuple(result.get("drift", ())[:100])), t0)

    def _act(self, session: Session, head: str | None, errors: list[str]) -> dict[str, Any]:
        mode = self.options.mode
        if mode == "report":
            return self._report(session, head, errors)
        deployed = self._deployed(session) if mode == "remediate" else None
        if mode == "remediate":
            if deployed is None:
                # nothing applied yet: nothing to put back; the head waits for an apply
                return self._report(session, head, errors, pending_only=True)
            out = self._apply(session, deployed[1], corrective_only=True)
            out["commit"] = deployed[0]
            if head is not None and deployed[0] != head:
                out["pending"] = max(out.get("pending", 0), 1)
                if out.get("status") == "unchanged":
                    out["status"] = "pending"
                self.log(f"commit {head[:12]} waits: mode remediate applies no new commit")
            return out
        # apply
        target = head or self.checked_out()
        if target is not None and target != self.checked_out():
            self.checkout(target)
        try:
            stack = session.evaluate()
        except DiagnosticError as exc:
            errors.extend(f"commit {(target or '?')[:12]}: {m}" for m in messages(exc))
            deployed = self._deployed(session)
            if deployed is None:
                return {"status": "failed", "commit": target}
            # the last good configuration still holds: drift against it is put back
            out = self._apply(session, deployed[1], corrective_only=True)
            out.update(status="failed", commit=target)
            return out
        out = self._apply(session, stack, corrective_only=False)
        out["commit"] = target
        return out

    def _deployed(self, session: Session) -> tuple[str | None, Any] | None:
        """The commit and the stack the latest state version applied (its recorded desired
        state), or None when no version holds one."""
        history = session.backend.history()
        for version in reversed(history):
            try:
                stack, _ = session.rollback_stack(version.serial)
            except DiagnosticError:
                continue
            commit = None
            if version.revision:
                try:
                    commit = git("rev-parse", "--verify", "--quiet",
                                 version.revision.removesuffix("-dirty") + "^{commit}",
                                 cwd=self.clone).strip() or None
                except AgentError:
                    commit = None
            return commit, stack
        return None

    def _report(self, session: Session, head: str | None, errors: list[str], *,
                pending_only: bool = False) -> dict[str, Any]:
        if head is not None and head != self.checked_out():
            self.checkout(head)
        stack = session.evaluate()
        with session.locked("plan"):
            state = session.read_state()
            plan = session.plan(stack, state).plan
        counts = _counts(plan)
        status = "unchanged"
        if counts["drifted"] and not pending_only:
            status = "drift-found"
        elif counts["todo"]:
            status = "pending"
        return {"status": status, "commit": head or self.checked_out(),
                "drifted": counts["drifted"], "pending": counts["todo"],
                "drift": counts["drift"]}

    def _apply(self, session: Session, stack: Any, *, corrective_only: bool) -> dict[str, Any]:
        with session.locked("apply"):
            state = session.read_state()
            plan = session.plan(stack, state).plan
            counts = _counts(plan)
            if not counts["todo"]:
                return {"status": "unchanged", "drifted": counts["drifted"],
                        "drift": counts["drift"]}
            result = session.apply(plan, state, parallelism=self.options.parallelism,
                                   should_stop=self.stopping.is_set,
                                   operation="remediate" if corrective_only else "apply")
        applied = [c for c in plan.changes if c.address in result.applied]
        corrective = sum(1 for c in applied if c.drift)
        out: dict[str, Any] = {"changes": len(applied), "corrective": corrective,
                               "drifted": counts["drifted"], "drift": counts["drift"]}
        if result.failed or result.skipped:
            failed = [f"{a}: {m}" for a, m in list(result.failed.items())[:20]]
            raise DiagnosticError(Diagnostic.error(
                "Apply failed", f"{len(result.failed)} failed, {len(result.skipped)} skipped"
                + (": " + "; ".join(failed) if failed else "")))
        out["status"] = "drift-corrected" if applied and corrective == len(applied) \
            else ("changed" if applied else "unchanged")
        return out

    def _finish(self, report: RunReport, t0: float) -> RunReport:
        report = masked(report.with_(duration=time.monotonic() - t0))
        self.store(report)
        line = (f"run {report.id[:12]} {report.status}: commit "
                f"{(report.commit or '-')[:12]}, {report.changes} changed "
                f"({report.corrective} corrective), {report.drifted} drifted, "
                f"{report.pending} pending, {report.duration:.1f} s")
        self.log(line)
        for error in report.errors:
            self.log(f"  error: {error}")
        return report

    def store(self, report: RunReport) -> None:
        """Store ``report`` after any spooled ones; spool it when the store cannot be
        reached (sent by a later cycle)."""
        store: RunStore | None = None
        try:
            from tectum.config.project import load_project

            store = open_run_store(load_project(self.project_dir))
            sent = self.spool.flush(store)
            if sent:
                self.log(f"{sent} spooled report(s) sent")
            store.put(report)
        except (DiagnosticError, OSError) as exc:
            self.spool.add(report)
            self.log(f"report {report.id[:12]} kept in {self.spool.directory}: "
                     f"{messages(exc)[0]}")
        finally:
            if store is not None:
                store.close()

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Cycles until ``--once``, ``--max-runs`` or a signal; returns the exit code (0, or 1
        when ``--once``'s cycle failed)."""
        o = self.options
        previous = {s: signal.signal(s, self._signalled) for s in (signal.SIGTERM,
                                                                    signal.SIGINT)}
        last: RunReport | None = None
        try:
            while not self.stopping.is_set():
                last = self.cycle()
                self.runs += 1
                self.failures = self.failures + 1 if last.status == "failed" else 0
                if o.once or (o.max_runs is not None and self.runs >= o.max_runs):
                    break
                wait = self.next_wait()
                self.log(f"next run in {wait:.1f} s")
                self.stopping.wait(wait)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.stopping.is_set():
            self.log("stopped: state is saved")
        return 1 if o.once and last is not None and last.status == "failed" else 0

    def next_wait(self) -> float:
        """The interval plus a random splay; after failures a backoff (5 s doubling, at most
        the interval) instead of the interval."""
        o = self.options
        base = o.interval
        if self.failures:
            base = min(o.interval, BACKOFF * 2 ** (self.failures - 1))
        return base + random.uniform(0, o.splay)

    def _signalled(self, signum: int, frame: Any) -> None:
        self.log(f"{signal.Signals(signum).name} received: finishing the operations under "
                 "way, then saving state")
        self.stopping.set()


def _counts(plan: Plan) -> dict[str, Any]:
    todo = [c for c in plan.changes if c.action.value != "no-op"]
    drift = sorted(c.address for c in plan.changes if c.drift)
    return {"todo": len(todo), "drifted": len(drift), "drift": drift}


def parse_duration(text: str) -> float:
    """``"30m"``, ``"2s"``, ``"1h30m"``, ``"90"`` (seconds) → seconds. Raises
    DiagnosticError."""
    import re

    found = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or found is None or not any(found.groups()):
        raise DiagnosticError(Diagnostic.error(
            "Invalid duration", f"{text!r} is no duration: write 30s, 5m, 1h30m or seconds."))
    h, m, s = found.groups()
    return int(h or 0) * 3600 + int(m or 0) * 60 + float(s or 0)


def options_from(args: dict[str, Any], extra: Sequence[str] = ()) -> AgentOptions:
    """:class:`AgentOptions` from the CLI's parsed arguments."""
    return AgentOptions(
        repo=args["repo"], branch=args["branch"], path=args["path"],
        interval=parse_duration(args["interval"]), splay=parse_duration(args["splay"]),
        mode=args["mode"], once=args["once"], max_runs=args["max_runs"],
        workdir=args["workdir"], name=args["name"] or socket.gethostname(),
        workspace=args["workspace"])
