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

Where things are: the clone in ``WORKDIR/repo`` (default ``$XDG_STATE_HOME/tectum/agent/<digest
of repository, branch, path, workspace and name>``), the project at ``WORKDIR/repo/PATH``, its
state wherever its ``tectum.toml`` says (the embedded SQLite file inside the clone's
``.tectum/``, untracked; or the shared PostgreSQL database a fleet reports to), and reports
that could not be stored in ``WORKDIR/spool`` until the store answers
(:class:`~tectum.runs.Spool`)."""

from __future__ import annotations

import contextlib
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
    #: an allowed signers file: only approvals signed by one of its keys are applied
    #: (:mod:`tectum.approvals`)
    approvers: str | None = None
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
        check_recipients(self.encrypt_to)
        if self.workdir is None:
            # (state, not cache: the clone holds the embedded state of the workspace)
            home = os.environ.get("XDG_STATE_HOME") or os.path.join(
                os.path.expanduser("~"), ".local", "state")
            digest = hashlib.sha256(f"{self.repo}\0{self.branch}\0{self.path}\0"
                                    f"{self.workspace}\0{self.name}".encode())
            self.workdir = os.path.join(home, "tectum", "agent", digest.hexdigest()[:16])


def check_recipients(recipients: Sequence[str]) -> None:
    """Each ``--encrypt-to`` recipient must parse as an age or ssh-ed25519 public key. Raises
    :class:`DiagnosticError` naming the one that does not."""
    if not recipients:
        return
    from tectum.secrets.store import SecretsError, parse_recipient

    for recipient in recipients:
        try:
            parse_recipient(recipient)
        except SecretsError as exc:
            diag = exc.diagnostic()
            raise DiagnosticError(Diagnostic.error(
                diag.summary, f"--encrypt-to {recipient}: {diag.detail}")) from None


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
        lines = (proc.stderr or proc.stdout).strip().split("\n")
        said = [line for line in lines if line.startswith(("fatal:", "error:"))]
        message = " ".join(said or lines[-2:])
        raise AgentError(f"git {args[0]} failed: {message}")
    return proc.stdout


def safe_url(url: str) -> str:
    """``url`` without a password or token in it (``https://user:TOKEN@host/...`` →
    ``https://user@host/...``); the secret is registered for masking."""
    import urllib.parse

    from tectum.masking import REDACTOR

    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password:
        REDACTOR.add(parts.password)
        netloc = parts.netloc.rsplit("@", 1)
        user = parts.username or ""
        return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))
    if parts.username and "@" in parts.netloc and parts.scheme in ("http", "https"):
        REDACTOR.add(parts.username)  # (a token given as the user name)
        return urllib.parse.urlunsplit(parts._replace(
            netloc="(sensitive value)@" + parts.netloc.rsplit("@", 1)[-1]))
    return url


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
        self._runs: RunStore | None = None

    # -- git -----------------------------------------------------------------------------------
    def fetch(self) -> str:
        """Clone or fetch the branch (a force-pushed branch is followed); its head's commit."""
        o = self.options
        if not os.path.isdir(os.path.join(self.clone, ".git")):
            os.makedirs(os.path.dirname(self.clone), exist_ok=True)
            git("clone", "--quiet", "--branch", o.branch, "--single-branch", "--", o.repo,
                self.clone)
        else:
            # (the repository given now, also when it changed since the clone)
            git("remote", "set-url", "origin", o.repo, cwd=self.clone)
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
        o = self.options
        started, t0 = time.time(), time.monotonic()
        self.run_id = uuid.uuid4().hex
        self.errors: list[str] = []
        self.session: Session | None = None
        head: str | None = None
        result: dict[str, Any] = {}
        try:
            try:
                head = self.fetch()
            except AgentError as exc:
                last = self.checked_out()
                self.errors.append(
                    f"fetch of {o.branch} from {safe_url(o.repo)}: {exc}"
                    + (f"; going on with commit {last[:12]}" if last else ""))
            accepted = head
            if head is not None and o.require_signed_commits:
                refused = self.unverified(head)
                if refused:
                    self.errors.append(refused)
                    accepted = None  # (never checked out, never evaluated)
                    result["status"] = "refused"
            result = {**self._act(head, accepted), **result}
        except DiagnosticError as exc:
            self.errors.extend(messages(exc))
        except AgentError as exc:
            self.errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported, and the agent goes on
            self.errors.append(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            workspace = self.session.workspace if self.session is not None else None
            self._close_session()
        status = result.get("status", "failed")
        if self.errors and status != "refused":
            status = "failed"
        return self._finish(RunReport(
            workspace=workspace or self._workspace(), host=o.name, mode=o.mode,
            status=status, started_at=started, branch=o.branch,
            commit=result.get("commit", head), corrective=result.get("corrective", 0),
            changes=result.get("changes", 0), drifted=result.get("drifted", 0),
            pending=result.get("pending", 0), interval=o.interval + o.splay,
            errors=tuple(self.errors), drift=tuple(result.get("drift", ())[:100]),
            plan_path=result.get("plan_path"), plan_digest=result.get("plan_digest"),
            plan_serial=result.get("plan_serial"), id=self.run_id), t0)

    def _workspace(self) -> str:
        """The workspace a run without a session reports (the one the session would use)."""
        if self.options.workspace:
            return self.options.workspace
        try:
            from tectum.config.project import load_project
            from tectum.engine.session import current_workspace

            return current_workspace(load_project(self.project_dir))
        except DiagnosticError:
            return os.environ.get("TECTUM_WORKSPACE") or "default"

    # -- sessions: one per tree ---------------------------------------------------------------
    def _session_at(self, commit: str | None) -> Session:
        """A session over the project with the work tree at ``commit`` (None: as it is). A
        tree whose project does not load (a broken ``tectum.toml``) falls back to the last
        commit that loaded, so drift is still checked; the error is reported."""
        from tectum.engine.session import Session

        if commit is not None and commit != self.checked_out():
            self._close_session()
            self.checkout(commit)
        if self.session is not None:
            return self.session
        o = self.options
        try:
            self.session = Session(self.project_dir, workspace=o.workspace,
                                   lock_timeout=o.lock_timeout)
        except DiagnosticError as exc:
            good = self._last_good()
            if good is None or good == self.checked_out():
                raise
            self.errors.extend(f"commit {(self.checked_out() or '?')[:12]}: {m}"
                               for m in messages(exc))
            self.checkout(good)
            self.session = Session(self.project_dir, workspace=o.workspace,
                                   lock_timeout=o.lock_timeout)
        self._remember_good()
        return self.session

    def _close_session(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def _last_good(self) -> str | None:
        try:
            with open(os.path.join(str(self.options.workdir), "last-good"),
                      encoding="utf-8") as fh:
                return fh.read().strip() or None
        except OSError:
            return None

    def _remember_good(self) -> None:
        commit = self.checked_out()
        if commit is not None and commit != self._last_good():
            path = os.path.join(str(self.options.workdir), "last-good")
            with open(path + ".tmp", "w", encoding="utf-8") as fh:
                fh.write(commit + "\n")
            os.replace(path + ".tmp", path)

    # -- acting by mode -------------------------------------------------------------------------
    def _act(self, head: str | None, accepted: str | None) -> dict[str, Any]:
        """``head``: the branch's head (None: not fetched); ``accepted``: the same, when it
        may be checked out (None: not fetched, or refused)."""
        mode = self.options.mode
        if self.checked_out() is None:  # (the first cycle: a tree to start from)
            if accepted is None:
                raise AgentError("no commit to start from: the branch was not fetched"
                                 + (" or its head was refused" if head else ""))
            self.checkout(accepted)
        if mode == "report":
            if accepted is None:
                return {}
            return self._report(self._session_at(accepted), accepted)
        if mode == "apply" and not self.options.require_approval and accepted is not None:
            # (the head's plan puts back drift too, and finishes what an interrupted or
            # failed apply of it left undone)
            session = self._session_at(accepted)
            if self.checked_out() == accepted:
                try:
                    stack = session.evaluate()
                except DiagnosticError as exc:
                    self.errors.extend(f"commit {accepted[:12]}: {m}" for m in messages(exc))
                else:
                    return {**self._apply(session, stack, corrective_only=False),
                            "commit": accepted}
            # the head does not load or evaluate: drift against the last applied
            # configuration is still put back, below
        base = self._session_at(None)
        deployed = self._deployed(base)
        out: dict[str, Any] = {"status": "unchanged"}
        if deployed is not None:
            out = {**self._remediate(deployed), "commit": deployed[0]}
        if accepted is None or (deployed is not None and deployed[0] == accepted):
            return out
        if mode == "remediate":
            if deployed is None:
                # nothing applied yet: nothing to put back; the head waits for an apply
                return self._report(self._session_at(accepted), accepted, pending_only=True)
            out["pending"] = max(out.get("pending", 0), 1)
            if out.get("status") == "unchanged":
                out["status"] = "pending"
            self.log(f"commit {accepted[:12]} waits: mode remediate applies no new commit")
            return out
        if self.options.require_approval:
            return self._gated(accepted, deployed, out)
        return out  # (apply mode, the head failed above: reported)

    def unverified(self, commit: str) -> str | None:
        """Why ``commit`` is refused (``git verify-commit``: unsigned, a bad signature, or a
        signer not trusted), else None."""
        # (a good signature is not enough: its key must be trusted — an SSH key listed in
        # the allowed signers, an OpenPGP key trusted fully in the agent user's keyring)
        args = ["-c", "gpg.minTrustLevel=fully"]
        if self.options.allowed_signers:
            args += ["-c", f"gpg.ssh.allowedSignersFile={self.options.allowed_signers}"]
        try:
            git(*args, "verify-commit", commit, cwd=self.clone)
        except AgentError as exc:
            why = str(exc).split(" failed: ", 1)[-1].strip() or "the commit is not signed"
            return (f"commit {commit[:12]} is refused: its signature is missing or not "
                    f"trusted (git verify-commit: {why}); it is not applied")
        return None

    # -- approval ------------------------------------------------------------------------------
    def _gated(self, head: str, deployed: tuple[str | None, Any] | None,
               out: dict[str, Any]) -> dict[str, Any]:
        """Apply mode with approval (drift against the last applied configuration was put
        back already): apply the plan approved for ``head`` (exactly that file, by its
        digest); otherwise, for a commit with changes, save its plan and wait (``pending``).
        The work tree is left at what was applied, never at a commit that waits."""
        back = deployed[0] if deployed is not None else None
        approved = self._approved()
        if approved is not None:
            if approved.commit != head:
                self._mark(approved.with_(applied_in=self.run_id))
                self.errors.append(
                    f"run {approved.id[:12]} was approved, but its commit "
                    f"{(approved.commit or '?')[:12]} is no longer the head of "
                    f"{self.options.branch} ({head[:12]}): its plan is not applied")
                return out
            if self.options.approvers:
                from tectum.approvals import signer

                principal = signer(approved, approved.approval_signature,
                                   self.options.approvers)
                if principal is None:
                    self._mark(approved.with_(applied_in=self.run_id))
                    self.errors.append(
                        f"run {approved.id[:12]} was approved without a signature of an "
                        f"approver in {self.options.approvers}: its plan is not applied "
                        "(approve it with tectum approve --sign-with KEY)")
                    return out
                approved = approved.with_(approved_by=principal)
            return self._apply_approved(approved)
        session = self._session_at(head)
        if self.checked_out() != head:
            return out  # (its project did not load: reported)
        try:
            stack = session.evaluate()
            with session.locked("plan"):
                state = session.read_state()
                plan = session.plan(stack, state).plan
        finally:
            if back is not None:
                self._session_at(back)
        counts = _counts(plan)
        if not counts["todo"]:
            return out  # (a commit that changes nothing needs no approval)
        for earlier in self._mine("pending"):
            if earlier.commit == head and earlier.plan_serial == state.serial \
                    and earlier.plan_path and os.path.exists(earlier.plan_path):
                # (the same commit, state unchanged since: that plan still waits)
                return {**out, "status": "pending", "commit": head, "pending": counts["todo"],
                        "plan_path": earlier.plan_path, "plan_digest": earlier.plan_digest,
                        "plan_serial": earlier.plan_serial}
        from tectum.plans.planfile import write_plan

        plans = os.path.join(str(self.options.workdir), "plans")
        os.makedirs(plans, mode=0o700, exist_ok=True)
        path = os.path.join(plans, f"{self.run_id}.tfplan")
        write_plan(path, plan, session.project.root, sealer=session.sealer,
                   encrypt_to=self.options.encrypt_to)
        for name in os.listdir(plans):  # (older plans of this agent: superseded by this one)
            if name.endswith(".tfplan") and name != os.path.basename(path):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(plans, name))
        self.log(f"commit {head[:12]}: {counts['todo']} change(s) wait for approval: "
                 f"tectum runs show {self.run_id[:12]} {self.project_dir}; "
                 f"tectum approve {self.run_id[:12]} --project {self.project_dir}")
        return {**out, "status": "pending", "commit": head, "pending": counts["todo"],
                "plan_path": path, "plan_digest": file_digest(path),
                "plan_serial": state.serial}

    def _store_of(self) -> RunStore:
        """The run store, opened once a cycle (closed by :meth:`store`, the cycle's last
        use)."""
        if self._runs is None:
            from tectum.config.project import load_project

            self._runs = open_run_store(load_project(self.project_dir))
        return self._runs

    def _mine(self, status: str) -> list[RunReport]:
        """This agent's runs with ``status``, newest first."""
        return self._store_of().recent(
            workspace=self._workspace() if self.session is None else self.session.workspace,
            host=self.options.name, status=status, limit=20)

    def _approved(self) -> RunReport | None:
        found = [r for r in self._mine("approved") if not r.applied_in]
        return found[0] if found else None

    def _apply_approved(self, approved: RunReport) -> dict[str, Any]:
        """Apply exactly the approved plan file: the bytes read are the bytes whose digest
        was approved, then the stale-plan and world checks of ``tectum apply PLANFILE``."""
        from tectum.plans.planfile import read_plan

        path = approved.plan_path or ""
        self._mark(approved.with_(applied_in=self.run_id))
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError:
            data = b""
        if hashlib.sha256(data).hexdigest() != approved.plan_digest:
            raise DiagnosticError(Diagnostic.error(
                "Approved plan changed",
                f"run {approved.id[:12]}'s plan {path} is missing or is not the file that "
                "was approved (digest mismatch): nothing was applied. The next cycle makes a "
                "new plan to approve."))
        import tempfile

        with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=".approved") as fh:
            fh.write(data)  # (the approved bytes themselves: no second read of the path)
            fh.flush()
            saved, _ = read_plan(fh.name)
        session = self._session_at(approved.commit)  # (the version records that commit)
        self.log(f"applying the plan of run {approved.id[:12]}, approved by "
                 f"{approved.approved_by}")
        with session.locked("apply"):
            state = session.read_state()
            session.check_fresh(saved, state, path)
            session.check_world(
                saved, made=f"{path} holds what tectum read when run {approved.id[:12]} "
                "planned.", retry="The next cycle makes a new plan to approve.")
            result = session.apply(saved, state, parallelism=self.options.parallelism,
                                   should_stop=self.stopping.is_set, operation="apply")
        out = self._outcome(saved, result)
        with contextlib.suppress(OSError):
            os.unlink(path)  # (applied: it is never applied again)
        return {**out, "commit": approved.commit}

    def _mark(self, report: RunReport) -> None:
        self._store_of().put(report)

    def _deployed(self, session: Session) -> tuple[str | None, Any] | None:
        """The commit and the stack the latest apply recorded (the desired state kept with
        its version; versions written by state edits hold none and are passed over); None
        when there is none, or a destroy came after it (nothing is deployed, nothing is to be
        put back)."""
        found = None
        for version in reversed(session.backend.history()):
            if version.operation == "destroy":
                return None  # (destroyed since: nothing is deployed)
            try:
                stack, _ = session.rollback_stack(version.serial)
            except DiagnosticError:
                continue  # (a state edit, an import, a settled journal: no desired state)
            found = version
            break
        if found is None:
            return None
        version = found
        commit = None
        if version.revision and not version.revision.endswith("-dirty"):
            try:
                commit = git("rev-parse", "--verify", "--quiet",
                             version.revision + "^{commit}", cwd=self.clone).strip() or None
            except AgentError:
                commit = None
        return commit, stack

    def _report(self, session: Session, head: str, *,
                pending_only: bool = False) -> dict[str, Any]:
        stack = session.evaluate()
        with session.locked("plan"):
            state = session.read_state()
            plan = session.plan(stack, state).plan
        self._hosts_down(plan)
        counts = _counts(plan)
        status = "unchanged"
        if counts["drifted"] and not pending_only:
            status = "drift-found"
        elif counts["todo"]:
            status = "pending"
        return {"status": status, "commit": head, "drifted": counts["drifted"],
                "pending": counts["todo"], "drift": counts["drift"]}

    def _remediate(self, deployed: tuple[str | None, Any]) -> dict[str, Any]:
        """Put back drift against the last applied configuration ``deployed`` (its commit and
        stack), with the work tree at that commit (the version written records it). Only
        changes that put back drift are applied; any other change the plan holds (what an
        earlier apply left undone) is reported as pending."""
        commit, stack = deployed
        session = self._session_at(commit)
        return self._apply(session, stack, corrective_only=True)

    def _apply(self, session: Session, stack: Any, *, corrective_only: bool) -> dict[str, Any]:
        with session.locked("apply"):
            state = session.read_state()
            plan = session.plan(stack, state).plan
            self._hosts_down(plan)
            counts = _counts(plan)
            extra = counts["todo"] - counts["drifted_todo"] if corrective_only else 0
            if corrective_only and extra and counts["drifted_todo"]:
                # (only the drifted resources: what they depend on is planned along)
                plan = session.plan(stack, state, targets=counts["drift"]).plan
            if not counts["todo"] or (corrective_only and not counts["drifted_todo"]):
                self._settle(session, plan, state)
                return {"status": "unchanged", "drifted": counts["drifted"],
                        "drift": counts["drift"], "pending": extra}
            result = session.apply(plan, state, parallelism=self.options.parallelism,
                                   should_stop=self.stopping.is_set,
                                   operation="remediate" if corrective_only else "apply")
        return {**self._outcome(plan, result), "drifted": counts["drifted"],
                "drift": counts["drift"], "pending": extra}

    def _settle(self, session: Session, plan: Plan, state: Any) -> None:
        """A killed run's journal whose every entry the plan found done is folded into a new
        version (as ``tectum apply`` does when it has nothing to do), with the desired state
        the plan holds — so the state read by anything else is the whole truth."""
        if plan.hosts_down or not session.backend.pending_intents():
            return
        from tectum.engine.session import desired_of, git_revision

        serial = session.backend.write(state, "apply", revision=git_revision(
            session.project.root), desired=desired_of(plan))
        self.log(f"an interrupted run's journal is settled (state version {serial})")

    def _outcome(self, plan: Plan, result: Any) -> dict[str, Any]:
        """Counts of an apply, its status, and its failures added to the run's errors."""
        applied = [c for c in plan.changes if c.address in result.applied]
        corrective = sum(1 for c in applied if c.drift)
        out: dict[str, Any] = {"changes": len(applied), "corrective": corrective}
        if result.failed or result.skipped:
            failed = [f"{a}: {m}" for a, m in list(result.failed.items())[:20]]
            why = (f"interrupted by a signal: {len(result.skipped)} change(s) not started; "
                   "the next run finishes them") if self.stopping.is_set() \
                else f"{len(result.failed)} failed, {len(result.skipped)} skipped"
            self.errors.append("apply: " + why + (": " + "; ".join(failed) if failed else ""))
        out["status"] = "drift-corrected" if applied and corrective == len(applied) \
            else ("changed" if applied else "unchanged")
        return out

    def _hosts_down(self, plan: Plan) -> None:
        """Hosts the plan could not read are errors of the run (not "unchanged")."""
        for host, (kind, reason) in sorted(plan.hosts_down.items()):
            self.errors.append(f"host {host} {kind}: {reason}")

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
        try:
            store = self._store_of()
            sent = self.spool.flush(store)
            if sent:
                self.log(f"{sent} spooled report(s) sent")
            store.put(report)
        except (DiagnosticError, OSError) as exc:
            self.spool.add(report)
            self.log(f"report {report.id[:12]} kept in {self.spool.directory}: "
                     f"{messages(exc)[0]}")
        finally:
            if self._runs is not None:
                self._runs.close()
                self._runs = None

    # -- the loop ----------------------------------------------------------------------------------
    def hold_workdir(self) -> None:
        """Take the workdir for this process (an ``flock`` held until it exits; the kernel
        lets go of it when the process dies) and clear what a killed agent left in its clone
        (git's ``*.lock`` files). Raises DiagnosticError when another agent holds it."""
        import fcntl

        workdir = str(self.options.workdir)
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(workdir, "agent.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DiagnosticError(Diagnostic.error(
                "Agent workdir in use",
                f"Another tectum agent uses {workdir}. Give this one its own --workdir (or "
                "stop the other).")) from None
        self._lock_fd = fd
        git_dir = os.path.join(self.clone, ".git")
        for root, _dirs, files in os.walk(git_dir):
            for name in files:
                if name.endswith(".lock"):  # (no git runs here but ours: a killed one's)
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(root, name))

    def run(self) -> int:
        """Cycles until ``--once``, ``--max-runs`` or a signal; returns the exit code (0, or 1
        when ``--once``'s cycle failed or its commit was refused)."""
        o = self.options
        self.hold_workdir()
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
    # (a change of state alone — a move, an adoption, a new on_destroy — is work too)
    todo = [c for c in plan.changes if c.action.value != "no-op" or c.state_only]
    drift = sorted(c.address for c in plan.changes if c.drift)
    return {"todo": len(todo), "drifted": len(drift), "drift": drift,
            "drifted_todo": sum(1 for c in todo if c.drift)}


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
        allowed_signers=args["allowed_signers"], webhooks=args["webhooks"],
        approvers=args["approvers"])
