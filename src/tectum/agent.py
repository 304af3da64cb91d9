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
import uuid
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
    #: apply mode: a new commit's plan is saved and waits for ``tectum approve``
    require_approval: bool = False
    #: public keys (age, ssh-ed25519) the saved plans are encrypted to (the agent's own key
    #: among them: it decrypts the plan it applies)
    encrypt_to: tuple[str, ...] = ()
    #: a head that ``git verify-commit`` does not accept is refused
    require_signed_commits: bool = False
    #: the SSH signers trusted for signed commits (git's ``gpg.ssh.allowedSignersFile``);
    #: OpenPGP signatures are checked against the agent user's GnuPG keyring
    allowed_signers: str | None = None
    #: a TOML file of ``[[webhooks]]`` tables (:mod:`tectum.webhooks`): failed runs, drift
    #: and plans waiting for approval are posted there
    webhooks: str | None = None

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
        self.notifier = _notifier(options)

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
        self.run_id = uuid.uuid4().hex
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
        if result.get("status") == "refused":
            status = "refused"
        return self._finish(RunReport(
            workspace=session.workspace, host=o.name, mode=o.mode, status=status,
            started_at=started, branch=o.branch, commit=result.get("commit", head),
            corrective=result.get("corrective", 0), changes=result.get("changes", 0),
            drifted=result.get("drifted", 0), pending=result.get("pending", 0),
            interval=o.interval, errors=tuple(errors),
            drift=tuple(result.get("drift", ())[:100]), plan_path=result.get("plan_path"),
            plan_digest=result.get("plan_digest"), plan_serial=result.get("plan_serial"),
            id=self.run_id), t0)

    def _act(self, session: Session, head: str | None, errors: list[str]) -> dict[str, Any]:
        mode = self.options.mode
        if mode == "report":
            return self._report(session, head, errors)
        deployed = self._deployed(session) if mode == "remediate" else None
        if mode == "remediate":
            if deployed is None:
                # nothing applied yet: nothing to put back; the head waits for an apply
                return self._report(session, head, errors, pending_only=True)
            out = self._remediate(session, deployed)
            out["commit"] = deployed[0]
            if head is not None and deployed[0] != head:
                out["pending"] = max(out.get("pending", 0), 1)
                if out.get("status") == "unchanged":
                    out["status"] = "pending"
                self.log(f"commit {head[:12]} waits: mode remediate applies no new commit")
            return out
        # apply
        target = head or self.checked_out()
        if target is not None and self.options.require_signed_commits:
            refused = self.unverified(target)
            if refused:
                errors.append(refused)
                # the last accepted configuration still holds: drift against it is put back
                deployed = self._deployed(session)
                out = (self._remediate(session, deployed)
                       if deployed is not None else {})
                out.update(status="refused", commit=target)
                return out
        if self.options.require_approval:
            return self._gated(session, target)
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
            out = self._remediate(session, deployed)
            out.update(status="failed", commit=target)
            return out
        out = self._apply(session, stack, corrective_only=False)
        out["commit"] = target
        return out

    def unverified(self, commit: str) -> str | None:
        """Why ``commit`` is refused (``git verify-commit``: unsigned, a bad signature, or a
        signer not trusted), else None."""
        args = ["-c", f"gpg.ssh.allowedSignersFile={self.options.allowed_signers}"] \
            if self.options.allowed_signers else []
        try:
            git(*args, "verify-commit", commit, cwd=self.clone)
        except AgentError as exc:
            why = str(exc).split(" failed: ", 1)[-1].strip() or "the commit is not signed"
            return (f"commit {commit[:12]} is refused: its signature is missing or not "
                    f"trusted (git verify-commit: {why}); it is not applied")
        return None

    # -- approval ------------------------------------------------------------------------------
    def _gated(self, session: Session, head: str | None) -> dict[str, Any]:
        """Apply mode with approval: apply a plan approved since (exactly that file, by its
        digest); otherwise put back drift against the last applied configuration and, for a
        new commit with changes, save its plan and wait (status ``pending``)."""
        approved = self._approved(session)
        if approved is not None:
            return self._apply_approved(session, approved)
        deployed = self._deployed(session)
        out: dict[str, Any] = {"status": "unchanged"}
        if deployed is not None:
            out = self._remediate(session, deployed)
            out["commit"] = deployed[0]
            if head is None or deployed[0] == head:
                return out
        if head is not None and head != self.checked_out():
            self.checkout(head)
        stack = session.evaluate()
        with session.locked("plan"):
            state = session.read_state()
            plan = session.plan(stack, state).plan
        counts = _counts(plan)
        if not counts["todo"]:
            return out  # (a commit that changes nothing needs no approval)
        for earlier in self._mine(session, "pending"):
            if earlier.commit == head and earlier.plan_serial == state.serial \
                    and earlier.plan_path and os.path.exists(earlier.plan_path):
                # (the same commit, state unchanged since: that plan still waits)
                return {**out, "status": "pending", "commit": head, "pending": counts["todo"],
                        "plan_path": earlier.plan_path, "plan_digest": earlier.plan_digest,
                        "plan_serial": earlier.plan_serial}
        from tectum.plans.planfile import write_plan

        assert self.options.workdir is not None
        plans = os.path.join(self.options.workdir, "plans")
        os.makedirs(plans, mode=0o700, exist_ok=True)
        path = os.path.join(plans, f"{self.run_id}.tfplan")
        write_plan(path, plan, session.project.root, sealer=session.sealer,
                   encrypt_to=self.options.encrypt_to)
        self.log(f"commit {(head or '?')[:12]}: {counts['todo']} change(s) wait for approval: "
                 f"tectum runs show {self.run_id[:12]}; tectum approve {self.run_id[:12]}")
        return {**out, "status": "pending", "commit": head, "pending": counts["todo"],
                "plan_path": path, "plan_digest": file_digest(path),
                "plan_serial": state.serial}

    def _mine(self, session: Session, status: str) -> list[RunReport]:
        """This agent's runs with ``status``, newest first."""
        from tectum.config.project import load_project

        store = open_run_store(load_project(self.project_dir))
        try:
            return store.recent(workspace=session.workspace, host=self.options.name,
                                status=status, limit=20)
        finally:
            store.close()

    def _approved(self, session: Session) -> RunReport | None:
        found = [r for r in self._mine(session, "approved") if not r.applied_in]
        return found[0] if found else None

    def _apply_approved(self, session: Session, approved: RunReport) -> dict[str, Any]:
        """Apply exactly the approved plan file: its digest must be the one approved, then
        the stale-plan and world checks of ``tectum apply PLANFILE``."""
        from tectum.plans.planfile import read_plan

        path = approved.plan_path or ""
        self._mark(approved.with_(applied_in=self.run_id))
        if not os.path.exists(path) or file_digest(path) != approved.plan_digest:
            raise DiagnosticError(Diagnostic.error(
                "Approved plan changed",
                f"run {approved.id[:12]}'s plan {path} is missing or is not the file that "
                "was approved (digest mismatch): nothing was applied. The next cycle makes a "
                "new plan to approve."))
        saved, _ = read_plan(path)
        self.log(f"applying the plan of run {approved.id[:12]}, approved by "
                 f"{approved.approved_by}")
        with session.locked("apply"):
            state = session.read_state()
            session.check_fresh(saved, state, path)
            session.check_world(
                saved, made=f"{path} holds what tectum read when run {approved.id[:12]} "
                "planned.", retry="The next cycle makes a new plan to approve.")
            if approved.commit and approved.commit != self.checked_out():
                self.checkout(approved.commit)  # (the version records the commit applied)
            result = session.apply(saved, state, parallelism=self.options.parallelism,
                                   should_stop=self.stopping.is_set, operation="apply")
        applied = [c for c in saved.changes if c.address in result.applied]
        corrective = sum(1 for c in applied if c.drift)
        if result.failed or result.skipped:
            raise DiagnosticError(Diagnostic.error(
                "Apply failed", f"{len(result.failed)} failed, {len(result.skipped)} skipped: "
                + "; ".join(f"{a}: {m}" for a, m in list(result.failed.items())[:20])))
        return {"status": "changed", "commit": approved.commit, "changes": len(applied),
                "corrective": corrective}

    def _mark(self, report: RunReport) -> None:
        from tectum.config.project import load_project

        store = open_run_store(load_project(self.project_dir))
        try:
            store.put(report)
        finally:
            store.close()

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

    def _remediate(self, session: Session, deployed: tuple[str | None, Any]) -> dict[str, Any]:
        """Put back drift against the last applied configuration ``deployed`` (its commit and
        stack), with the work tree at that commit: the version written records it, never a
        commit that waits or was refused."""
        commit, stack = deployed
        if commit is not None and commit != self.checked_out():
            self.checkout(commit)
        return self._apply(session, stack, corrective_only=True)

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
        for event in events_of(report):
            self.notifier.notify(event, report.to_json())
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
        when ``--once``'s cycle failed or its commit was refused)."""
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
            self.notifier.close(timeout=10.0)
        if self.stopping.is_set():
            self.log("stopped: state is saved")
        return 1 if o.once and last is not None and last.status in ("failed", "refused") \
            else 0

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


def events_of(report: RunReport) -> list[str]:
    """The webhook events a run report raises: ``failed`` (failed or refused), ``drift``
    (drift found or put back), ``pending-approval`` (a plan saved by this run waits)."""
    out = []
    if report.status in ("failed", "refused"):
        out.append("failed")
    if report.drifted or report.corrective:
        out.append("drift")
    if report.status == "pending" and report.plan_path and report.id in report.plan_path:
        out.append("pending-approval")  # (once: when the plan is made, not while it waits)
    return out


def _notifier(options: AgentOptions) -> Any:
    """The :class:`~tectum.webhooks.Notifier` of ``options.webhooks`` (none: no hook).
    Raises DiagnosticError for a file that cannot be read or a bad hook."""
    from tectum.webhooks import Notifier, Webhook

    hooks: list[Webhook] = []
    if options.webhooks:
        import tomllib

        try:
            with open(options.webhooks, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DiagnosticError(Diagnostic.error(
                "Cannot read the webhooks file", f"--webhooks {options.webhooks}: {exc}."
                )) from None
        tables = data.get("webhooks")
        if not isinstance(tables, list) or not tables:
            raise DiagnosticError(Diagnostic.error(
                "No webhooks", f"--webhooks {options.webhooks} has no [[webhooks]] table."))
        hooks = [Webhook.from_table(t, f"{options.webhooks} [[webhooks]] #{i}")
                 for i, t in enumerate(tables, 1)]
    assert options.workdir is not None
    return Notifier(hooks, spool_dir=os.path.join(options.workdir, "webhooks"))


def file_digest(path: str) -> str:
    """SHA-256 of the file at ``path`` (hex)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


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
        workspace=args["workspace"], require_approval=args["require_approval"],
        encrypt_to=tuple(args["encrypt_to"] or ()),
        require_signed_commits=args["require_signed_commits"],
        allowed_signers=args["allowed_signers"], webhooks=args["webhooks"])
