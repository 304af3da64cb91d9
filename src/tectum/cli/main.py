"""``tectum`` commands (Terraform's conventions: ``plan``, ``apply``, ``destroy``, ``show``,
``state list|show``, ``output``, ``graph``, ``validate``).

Exit codes: 0 success; 1 error (a diagnostic was printed, or a resource or host failed); 2 a
command line that cannot be parsed; ``plan --detailed-exitcode``: 0 no changes, 1 error, 2
changes present; ``apply``/``destroy``: 4 when nothing failed but some hosts were unreachable
(Ansible's exit code for unreachable hosts).

Parsing is the standard library's :mod:`argparse` (light to import: start-up time is part of
every run). Options that Terraform spells with one dash keep it: ``-var``, ``-var-file``, ``-out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from tectum.cli.views import View
from tectum.diagnostics import Diagnostic, DiagnosticError

if TYPE_CHECKING:
    from tectum.config.declaration import Stack
    from tectum.engine.planner import PlanResult
    from tectum.engine.session import Session
    from tectum.engine.world import Drift
    from tectum.plans.plan import Plan
    from tectum.state.model import ResourceRecord, State


class Ctx:
    def __init__(self, color: bool | None, lock_timeout: float = 0.0,
                 fleet: dict[str, Any] | None = None) -> None:
        self.view = View(color)
        self.lock_timeout = lock_timeout
        #: --inventory, --limit, --forks, --serial, --max-fail-percent, --accept-new-host-keys
        self.fleet: dict[str, Any] = fleet or {}


#: options of the fleet (inventory hosts); main() moves them from the parsed args to Ctx.fleet
FLEET_OPTIONS = ("inventory", "limit", "forks", "serial", "max_fail_percent",
                 "accept_new_host_keys")


EXIT_UNREACHABLE = 4
#: failures listed one by one at the end of an apply (all were shown as they happened)
LIST_LIMIT = 20


def _fail(view: View, diag: Diagnostic) -> NoReturn:
    view.diagnostic(diag)
    sys.exit(1)


def _parse_vars(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise DiagnosticError(Diagnostic.error(
                "Invalid -var option",
                f"-var {item!r} is not of the form NAME=VALUE, e.g. -var port=8080."))
        out[name.strip()] = value
    return out


def _session(directory: str, variables: tuple[str, ...] = (), var_files: tuple[str, ...] = (),
             lock_timeout: float = 0.0, fleet: dict[str, Any] | None = None,
             limit: str | None = None) -> Session:
    from tectum.engine.session import Session

    fleet = fleet or {}
    return Session(directory, variables=_parse_vars(variables), var_files=var_files,
                   lock_timeout=lock_timeout, inventory=fleet.get("inventory"),
                   limit=limit if limit is not None else fleet.get("limit"),
                   accept_new_host_keys=bool(fleet.get("accept_new_host_keys")))


def _duration(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``500ms`` or plain seconds (Terraform's -lock-timeout)."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 5m or 500ms")


_INIT_STACK = '''"""The stack: what this project manages, declared (evaluating it changes nothing).

`tectum plan` shows what `tectum apply` would change; README.md describes every resource type.
"""

from tectum import output, var
from tectum.host import Directory, File

greeting = var("greeting", str, default="hello from tectum", description="the file's text")

place = Directory("place", path="/tmp/{name}", mode="0755")
hello = File("hello", path=f"{{place.path}}/hello.txt", content=f"{{greeting}}\\n")

output("hello", hello.path)
'''

_INIT_TOML = '''[project]
name = "{name}"

[vars]
# greeting = "hello"

# [state]                     # the default: SQLite in .tectum/state.db
# backend = "postgres"        # for a team: conn_str here or TECTUM_PG_CONN_STR
#
# [providers.host]            # settings of the host provider (docs/providers.md)
# concurrency = 10
'''

_INIT_GITIGNORE = """# tectum's working data: state (SQLite), its locks and the project's state key
.tectum/
"""


def init(obj: Ctx, directory: str) -> None:
    """Make a new project in DIR: a stack.py to start from, tectum.toml and .gitignore. Files
    already there are kept as they are."""
    from tectum.addrs import valid_name

    root = os.path.abspath(directory)
    name = os.path.basename(root.rstrip("/")) or "project"
    slug = name if valid_name(name) else "project"
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        _fail(obj.view, Diagnostic.error(
            "Cannot create the project directory", f"{root}: {exc.strerror or exc}."))
    made, kept = [], []
    for file, text in (("stack.py", _INIT_STACK.format(name=f"tectum-{slug}")),
                       ("tectum.toml", _INIT_TOML.format(name=slug)),
                       (".gitignore", _INIT_GITIGNORE)):
        path = os.path.join(root, file)
        try:
            with open(path, "x", encoding="utf-8") as fh:
                fh.write(text)
            made.append(file)
        except FileExistsError:
            kept.append(file)
        except OSError as exc:
            _fail(obj.view, Diagnostic.error(
                "Cannot write the project", f"{path}: {exc.strerror or exc}."))
    if made:
        obj.view.out(f"Initialized a tectum project in {root}: wrote {', '.join(made)}.")
    if kept:
        obj.view.out(f"Kept what was there already: {', '.join(kept)}.")
    where = "" if os.path.abspath(".") == root else f" {directory}"
    obj.view.out(f"Next: `tectum plan{where}` shows what `tectum apply{where}` would do.")


def validate(obj: Ctx, directory: str, variables: tuple[str, ...],
             var_files: tuple[str, ...]) -> None:
    """Check the stack: evaluation, attributes, references, cycles. Touches nothing."""
    session = _session(directory, variables, var_files, fleet=obj.fleet)
    stack = session.evaluate(facts=False)
    diags = session.validate(stack)
    obj.view.diagnostics(session.warnings)
    if diags.has_errors:
        obj.view.diagnostics(diags)
        sys.exit(1)
    n = len(stack.resources)
    obj.view.out(obj.view.style("Success!", fg="green", bold=True)
                 + f" The configuration is valid ({n} resource{'s' if n != 1 else ''}).")


def _make_plan(obj: Ctx, session: Session, destroy: bool, refresh: bool = True,
               targets: list[str] | None = None, replace: list[str] | None = None
               ) -> tuple[PlanResult, State]:
    stack = (session.evaluate(forks=obj.fleet.get("forks", 50)) if not destroy
             else _empty_stack(session))
    with session.locked("plan"):
        state = session.read_state()
        result = session.plan(stack, state, destroy=destroy, refresh=refresh,
                              forks=obj.fleet.get("forks", 50), targets=targets or None,
                              replace=replace or ())
    obj.view.diagnostics(session.warnings)
    return result, state


def _empty_stack(session: Session) -> Stack:
    from tectum.config.declaration import Stack

    return Stack(session.project.root)


def plan(obj: Ctx, directory: str, variables: tuple[str, ...], var_files: tuple[str, ...],
         out: str | None, as_json: bool, detailed_exitcode: bool, destroy: bool,
         parallelism: int, refresh: str = "true",
         encrypt_to: list[str] | None = None, targets: list[str] | None = None,
         replace: list[str] | None = None) -> None:
    """Show what apply would change, attribute by attribute."""
    from tectum.plans.planfile import write_plan

    if encrypt_to and not out:
        _fail(obj.view, Diagnostic.error(
            "--encrypt-to needs -out", "--encrypt-to encrypts a saved plan file: add -out FILE."))
    session = _session(directory, variables, var_files, obj.lock_timeout, obj.fleet)
    try:
        result, _ = _make_plan(obj, session, destroy, refresh == "true", targets, replace)
    finally:
        session.close()
    p = result.plan
    if as_json:
        obj.view.hosts_down(p)
        obj.view.out(json.dumps(p.to_json(), indent=2))
    else:
        obj.view.plan(p)
    if out:
        write_plan(out, p, session.project.root, sealer=session.sealer,
                   encrypt_to=encrypt_to or ())
        if not as_json:
            obj.view.out(f"\nSaved the plan to {out}. Apply exactly this plan with "
                         f"`tectum apply {out}`.")
    if detailed_exitcode and p.has_changes:
        sys.exit(2)


def _confirm(obj: Ctx, what: str) -> bool:
    obj.view.out(f"\nDo you want to {what}?\n  Only 'yes' will be accepted to approve.\n")
    obj.view.out("  Enter a value: ", err=False)
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        _fail(obj.view, Diagnostic.error(
            "No approval",
            "tectum asked for approval but standard input is closed. Run with --auto-approve "
            "to apply without asking, or apply a saved plan you reviewed."))
    return line.strip() == "yes"


def _check_after_prompt(obj: Ctx, session: Session, plan: Plan) -> None:
    """The world may have moved while the prompt waited: re-read what the plan changes."""
    session.check_world(
        plan, made="The plan above holds what tectum read before you answered.",
        retry="Run the command again to plan from what is there now.",
        forks=obj.fleet.get("forks", 50))


def _run_apply(obj: Ctx, session: Session, plan: Plan, state: State, parallelism: int,
               operation: str | None = None) -> None:
    from tectum.engine.applier import host_of

    view = obj.view
    fleet = any(host_of(c.address) != "local" for c in plan.changes) or bool(plan.hosts_down)
    if fleet:
        view.start_progress(len({host_of(c.address) for c in plan.changes}
                                | set(plan.hosts_down)),
                            sum(1 for c in plan.changes if c.action.value != "no-op"))
    try:
        with _interruptible(view) as stopping:
            result = session.apply(plan, state, parallelism=parallelism,
                                   on_event=view.apply_event, should_stop=stopping,
                                   operation=operation, forks=obj.fleet.get("forks", 50),
                                   serial=obj.fleet.get("serial"),
                                   max_fail_percent=obj.fleet.get("max_fail_percent"),
                                   on_host=view.host_event if fleet else None)
    except ValueError as exc:  # a malformed --serial
        _fail(view, Diagnostic.error("Invalid --serial", f"{exc}."))
    finally:
        view.stop_progress()
    c = result.counts
    if fleet:
        view.out("")
        view.host_recap(result)
    if stopping():
        view.out(view.style(
            f"\nInterrupted: {len(result.applied)} changes finished and are recorded in "
            f"state; {len(result.skipped)} not started. Run apply again to finish.",
            fg="yellow", bold=True), err=True)
        sys.exit(1)
    hosts = result.host_counts()
    if result.failed or result.skipped or hosts["failed"] or hosts["refused"]:
        view.out("")
        view.out(view.style(
            f"Apply failed: {len(result.failed)} failed, {len(result.skipped)} skipped; "
            f"{c['add']} added, {c['change']} changed, {c['replace']} replaced, "
            f"{c['destroy']} destroyed.", fg="red", bold=True), err=True)
        failed = list(result.failed.items())
        for address, message in failed[:LIST_LIMIT]:
            view.out(f"  failed:  {address}: {message}", err=True)
        if len(failed) > LIST_LIMIT:
            view.out(f"  failed:  ... and {len(failed) - LIST_LIMIT} more (above)", err=True)
        by_reason: dict[str, list[str]] = {}
        for address, message in result.skipped.items():
            by_reason.setdefault(message, []).append(address)
        for message, addresses in by_reason.items():
            if len(addresses) <= 3:
                for address in addresses:
                    view.out(f"  skipped: {address}: {message}", err=True)
            else:
                view.out(f"  skipped: {addresses[0]}, {addresses[1]} and "
                         f"{len(addresses) - 2} more: {message}", err=True)
        view.out("State records everything that was done; fix the failures and run apply "
                 "again.", err=True)
        sys.exit(1)
    if hosts["unreachable"] or hosts["not attempted"]:
        view.out(view.style(
            f"\nApply incomplete: {hosts['unreachable']} host(s) unreachable; "
            f"{c['add']} added, {c['change']} changed, {c['replace']} replaced, "
            f"{c['destroy']} destroyed on the others. Run apply again when they are back.",
            fg="yellow", bold=True), err=True)
        sys.exit(EXIT_UNREACHABLE)
    forgot = f", {c['forget']} forgotten (left in place)" if c.get("forget") else ""
    if plan.destroy:
        text = f"\nDestroy complete! Resources: {c['destroy']} destroyed{forgot}."
    else:
        text = (f"\nApply complete! Resources: {c['add']} added, {c['change']} changed, "
                f"{c['replace']} replaced, {c['destroy']} destroyed{forgot}.")
    view.out(view.style(text, fg="green", bold=True))
    _print_outputs(view, result.state.outputs)


@contextmanager
def _interruptible(view: View) -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C (SIGINT) stops starting new work: what runs finishes, state is saved
    and the lock released. A second one exits at once; the journal still says what was under
    way, and the next plan reconciles it (Terraform's two-stage interrupt)."""
    import signal

    stop = [False]

    def handler(signum: int, frame: Any) -> None:
        if stop[0]:
            view.out("\nSecond interrupt: exiting now. The journal keeps what was under way; "
                     "the next plan reads the world and reconciles it.", err=True)
            os._exit(130)
        stop[0] = True
        view.out("\nInterrupt received: finishing the operations under way, then saving "
                 "state. Press Ctrl-C again to exit at once.", err=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: stop[0]
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_outputs(view: View, outputs: dict[str, Any]) -> None:
    if not outputs:
        return
    view.out("\nOutputs:\n")
    for name, entry in sorted(outputs.items()):
        value = "(sensitive value)" if entry.get("sensitive") else json.dumps(entry["value"])
        view.out(f"{name} = {value}")


def apply(obj: Ctx, target: str, variables: tuple[str, ...], var_files: tuple[str, ...],
          auto_approve: bool, parallelism: int, targets: list[str] | None = None,
          replace: list[str] | None = None) -> None:
    """Apply the stack in DIRECTORY, or exactly the saved plan in PLANFILE."""
    from tectum.plans.planfile import read_plan

    view = obj.view
    if os.path.isfile(target) and (targets or replace):
        _fail(view, Diagnostic.error(
            "-target and -replace go with the plan",
            f"{target} is a saved plan: it already says what is applied. Give -target or "
            f"-replace to `tectum plan -out {target}`, or apply the directory."))
    if os.path.isfile(target):
        saved, project_dir = read_plan(target)
        session = _session(project_dir, lock_timeout=obj.lock_timeout, fleet=obj.fleet,
                           limit=",".join(saved.limit) if saved.limit is not None else None)
        try:
            with session.locked("apply"):
                state = session.read_state()
                session.check_fresh(saved, state, target)
                if not saved.has_changes:
                    view.out("No changes. The saved plan has nothing to do.")
                    return
                session.check_world(
                    saved, made=f"{target} holds what tectum read when it was made.",
                    retry=f"Make a new plan with `tectum plan -out {target}` and apply that.",
                    forks=obj.fleet.get("forks", 50))
                _run_apply(obj, session, saved, state, parallelism)
        finally:
            session.close()
        return
    _apply_dir(obj, target, variables, var_files, auto_approve, parallelism, destroy=False,
               targets=targets, replace=replace)


def _apply_dir(obj: Ctx, directory: str, variables: tuple[str, ...], var_files: tuple[str, ...],
               auto_approve: bool, parallelism: int, *, destroy: bool,
               targets: list[str] | None = None, replace: list[str] | None = None) -> None:
    view = obj.view
    session = _session(directory, variables, var_files, obj.lock_timeout, obj.fleet)
    try:
        stack = (session.evaluate(forks=obj.fleet.get("forks", 50)) if not destroy
             else _empty_stack(session))
        with session.locked("destroy" if destroy else "apply"):
            state = session.read_state()
            result = session.plan(stack, state, destroy=destroy,
                                  forks=obj.fleet.get("forks", 50), targets=targets or None,
                                  replace=replace or ())
            view.diagnostics(session.warnings)
            p = result.plan
            view.plan(p)
            if not p.has_changes:
                if session.backend.pending_intents() and not p.hosts_down:
                    # an interrupted run's leftovers were all checked and need nothing: its
                    # journal is settled into a version (later state edits need that)
                    serial = session.backend.write(state, "apply")
                    view.out(f"An interrupted run's journal is settled (state version "
                             f"{serial}).")
                if state.outputs:
                    _print_outputs(view, state.outputs)
                if p.hosts_down:
                    sys.exit(1 if any(k == "refused" for k, _ in p.hosts_down.values())
                             else EXIT_UNREACHABLE)
                return
            session.sealer.check_ready()  # (refused now, not after the prompt)
            if not auto_approve and not _confirm(
                    obj, "destroy all managed objects" if destroy else "perform these actions"):
                view.out("\nApply cancelled.")
                sys.exit(1)
            if not auto_approve:
                _check_after_prompt(obj, session, p)
            view.out("")
            _run_apply(obj, session, p, state, parallelism)
    finally:
        session.close()


def destroy(obj: Ctx, directory: str, variables: tuple[str, ...], var_files: tuple[str, ...],
            auto_approve: bool, parallelism: int, targets: list[str] | None = None) -> None:
    """Delete every object in state, in reverse dependency order (with -target: those
    resources and what depends on them)."""
    _apply_dir(obj, directory, variables, var_files, auto_approve, parallelism, destroy=True,
               targets=targets)


def show(obj: Ctx, target: str, as_json: bool) -> None:
    """Show the state of DIRECTORY, or the saved plan PLANFILE."""
    from tectum.plans.planfile import read_plan

    if os.path.isfile(target):
        saved, _ = read_plan(target)
        if as_json:
            obj.view.out(json.dumps(saved.to_json(), indent=2))
        else:
            obj.view.plan(saved)
        return
    session = _session(target)
    try:
        state = session.read_state()
    finally:
        session.close()
    if as_json:
        obj.view.out(json.dumps(state.to_json(), indent=2))
        return
    if not state.resources:
        obj.view.out("The state is empty: nothing is managed yet.")
        return
    for rec in sorted(state.resources.values(), key=lambda r: r.address):
        _show_record(obj.view, rec)
    _print_outputs(obj.view, state.outputs)


def _show_record(view: View, rec: ResourceRecord) -> None:
    how = ("created by tectum: deleted when its resource is removed" if rec.origin == "created"
           else "found already there: forgotten, not deleted, when its resource is removed")
    if rec.on_destroy == "delete":
        how = f"{rec.origin}; on_destroy = \"delete\": deleted when its resource is removed"
    elif rec.on_destroy == "forget":
        how = f"{rec.origin}; on_destroy = \"forget\": left in place when its resource is removed"
    view.out(view.style(f"# {rec.address}:", bold=True) + view.style(f"  ({how})", dim=True))
    width = max((len(k) for k in rec.attributes), default=0)
    for key in sorted(rec.attributes):
        view.out(f"  {key.ljust(width)} = {json.dumps(rec.attributes[key])}")
    for kind, cause in rec.owed:
        view.out(f"  owed: a {kind} ({cause} changed; the run stopped before it)")
    view.out()


def state_list(obj: Ctx, directory: str) -> None:
    """List the resource addresses in state."""
    session = _session(directory)
    try:
        st = session.read_state()
    finally:
        session.close()
    for address in sorted(st.resources):
        obj.view.out(address)


def state_show(obj: Ctx, address: str | None, directory: str, version: int | None,
               as_json: bool) -> None:
    """Show one resource's attributes in state, or the whole state (of version N)."""
    from tectum.addrs import AddressError, ResourceAddress

    if address is not None:
        try:
            ResourceAddress.parse(address)
        except AddressError as exc:
            _fail(obj.view, Diagnostic.error("Invalid address", str(exc)))
    session = _session(directory)
    try:
        st = session.read_state() if version is None else session.backend.read_version(version)[0]
    finally:
        session.close()
    if address is None and as_json:
        obj.view.out(json.dumps(st.to_json(), indent=2))
        return
    if address is None:
        obj.view.out(obj.view.style(f"State version {st.serial} (lineage {st.lineage})",
                                    bold=True))
        obj.view.out()
        for rec in sorted(st.resources.values(), key=lambda r: r.address):
            _show_record(obj.view, rec)
        _print_outputs(obj.view, st.outputs)
        return
    found = st.resources.get(address)
    if found is None:
        where = f"state version {version}" if version is not None else "state"
        _fail(obj.view, Diagnostic.error(
            "No such resource in state",
            f"{address} is not in {where}. `tectum state list` shows what is.",
            address=address))
    _show_record(obj.view, found)


def state_history(obj: Ctx, directory: str) -> None:
    """List the stored state versions: serial, time, author, operation, config revision."""
    import time

    session = _session(directory)
    try:
        versions = session.backend.history()
    finally:
        session.close()
    if not versions:
        obj.view.out(f"No state versions yet in workspace {session.workspace!r}.")
        return
    obj.view.out(f"{'SERIAL':>6}  {'TIME':19}  {'AUTHOR':24}  {'OPERATION':9}  REVISION")
    for v in versions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.created_at))
        obj.view.out(f"{v.serial:>6}  {when:19}  {v.author[:24]:24}  {v.operation:9}  "
                     f"{v.revision or '-'}")


def state_diff(obj: Ctx, old: int, new: int, directory: str) -> None:
    """Show what differs between state versions OLD and NEW, resource by resource."""
    session = _session(directory)
    try:
        session.register_secrets()  # masked when printed
        a, _ = session.backend.read_version(old)
        b, _ = session.backend.read_version(new)
        for st, serial in ((a, old), (b, new)):
            st.resources = {
                k: r._replace(attributes=session.sealer.unseal(r.attributes,
                                                               f"state version {serial}"))
                for k, r in st.resources.items()}
    finally:
        session.close()
    view = obj.view
    same = True
    for address in sorted(set(a.resources) | set(b.resources)):
        ra, rb = a.resources.get(address), b.resources.get(address)
        if ra is None and rb is not None:
            view.out(view.style(f"+ {address}", fg="green"))
        elif rb is None and ra is not None:
            view.out(view.style(f"- {address}", fg="red"))
        elif ra is not None and rb is not None and ra.attributes != rb.attributes:
            view.out(view.style(f"~ {address}", fg="yellow"))
            for key in sorted(set(ra.attributes) | set(rb.attributes)):
                va, vb = ra.attributes.get(key), rb.attributes.get(key)
                if va != vb:  # (a digest of secret-bearing content is sealed, and masked)
                    view.out(f"    {key}: {json.dumps(va)} → {json.dumps(vb)}")
        else:
            continue
        same = False
    if same:
        view.out(f"State versions {old} and {new} manage the same objects with the same "
                 "attributes.")


def state_pull(obj: Ctx, directory: str) -> None:
    """Print the current state document as JSON (to save or inspect)."""
    session = _session(directory)
    try:
        st = session.read_state()
    finally:
        session.close()
    obj.view.out(json.dumps(st.to_json(), indent=2))


def state_push(obj: Ctx, file: str, directory: str, force: bool) -> None:
    """Store a state document from FILE as the workspace's new version (refused for another
    lineage or an older serial unless --force)."""
    from tectum.state.model import State, StateError

    try:
        with open(file, encoding="utf-8") as fh:
            doc = json.load(fh)
        pushed = State.from_json(doc)
    except (OSError, ValueError, RecursionError, StateError) as exc:
        _fail(obj.view, Diagnostic.error(
            "Invalid state file",
            f"{file} is not a tectum state document: {exc}. `tectum state pull` writes one."))
    session = _session(directory, lock_timeout=obj.lock_timeout)
    try:
        with session.locked("push"):
            serial = session.backend.push(pushed, force=force)
    finally:
        session.close()
    obj.view.out(f"Pushed: the state is now version {serial}.")


def state_rm(obj: Ctx, addresses: list[str], directory: str) -> None:
    """Stop managing resources: remove them from state and leave their objects as they are
    (Terraform's `state rm`); a later apply of code that still declares them adopts them."""
    session = _session(directory, lock_timeout=obj.lock_timeout)
    try:
        with session.locked("state rm"):
            new = session.forget(session.read_state(), addresses)
            serial = session.backend.write(new, "state rm")
    finally:
        session.close()
    for address in addresses:
        obj.view.out(f"Removed {address} (its object is left as it is)")
    obj.view.out(f"State is now version {serial}.")


def state_mv(obj: Ctx, source: str, destination: str, directory: str) -> None:
    """Rename a resource in state (after renaming it in the code), so the next plan moves it
    instead of deleting and creating its object (Terraform's `state mv`)."""
    session = _session(directory, lock_timeout=obj.lock_timeout)
    try:
        with session.locked("state mv"):
            new = session.move(session.read_state(), source, destination)
            serial = session.backend.write(new, "state mv")
    finally:
        session.close()
    obj.view.out(f"Moved {source} to {destination}. State is now version {serial}.")


def force_unlock(obj: Ctx, lock_id: str, directory: str) -> None:
    """Release a workspace lock left behind by a run that died (give the lock's ID)."""
    session = _session(directory)
    try:
        session.backend.force_unlock(lock_id)
    finally:
        session.close()
    obj.view.out(f"Lock {lock_id} released. Workspace {session.workspace!r} is unlocked.")


def refresh(obj: Ctx, directory: str, variables: tuple[str, ...],
            var_files: tuple[str, ...]) -> None:
    """Read every managed object and update state to match it; report changes made outside
    tectum."""
    view = obj.view
    session = _session(directory, variables, var_files, obj.lock_timeout, obj.fleet)
    try:
        stack = session.evaluate()
        with session.locked("refresh"):
            state = session.read_state()
            new, drifts = session.refresh(state, stack, forks=obj.fleet.get("forks", 50))
            _show_hosts_down(view, session.hosts_down)
            _show_drift(view, drifts)
            if drifts:
                serial = session.backend.write(new, "refresh")
                view.out(f"\nState updated to version {serial}.")
    finally:
        session.close()


def _show_hosts_down(view: View, down: dict[str, tuple[str, str]]) -> None:
    for host, (kind, reason) in down.items():
        view.out(view.style(f"Host {host} is {kind}: ", fg="yellow", bold=True) + reason
                 + " Its objects were not read; state keeps them as they were.", err=True)


def _show_drift(view: View, drifts: list[Drift]) -> None:
    from tectum.providers.registry import registry

    if not drifts:
        view.out(view.style("No drift.", fg="green", bold=True)
                 + " Every managed object is as the last apply left it.")
        return
    by_hand = [d for d in drifts if not d.interrupted]
    left = [d for d in drifts if d.interrupted]
    for title, group in (("Objects changed outside of tectum:", by_hand),
                         ("Left by an interrupted run (tectum's own changes, not made by hand; "
                          "the next apply settles them):", left)):
        if not group:
            continue
        view.out(view.style(title, bold=True))
        for d in group:
            if d.status == "deleted":
                view.out(view.style(f"  - {d.address}: deleted", fg="red"))
                continue
            view.out(view.style(f"  ~ {d.address}:", fg="yellow"))
            rt = registry.get(d.type)
            for name, was, now in d.attributes:
                label = rt.label(name) if rt is not None else name
                if label != name:
                    # never a digest (an attribute shown under the name of what it stands
                    # for): for a file holding a secret, even a prefix of its SHA-256 lets
                    # anyone test guessed passwords offline
                    view.out(f"      {label}: changed")
                else:
                    view.out(f"      {name}: {json.dumps(was)} → {json.dumps(now)}")


def drift(obj: Ctx, directory: str, variables: tuple[str, ...], var_files: tuple[str, ...],
          as_json: bool, detailed_exitcode: bool) -> None:
    """Report drift: what changed outside tectum since the last apply, per resource and
    attribute, apart from changes the configuration asks for. Changes nothing."""
    session = _session(directory, variables, var_files, obj.lock_timeout, obj.fleet)
    try:
        stack = session.evaluate()
        with session.locked("drift"):
            _, drifts = session.refresh(session.read_state(), stack,
                                        forks=obj.fleet.get("forks", 50))
            _show_hosts_down(obj.view, session.hosts_down)
    finally:
        session.close()
    if as_json:
        obj.view.out(json.dumps({"drift": [
            {"address": d.address, "type": d.type, "status": d.status,
             "attributes": [{"name": n, "recorded": a, "found": b}
                            for n, a, b in d.attributes]}
            for d in drifts]}, indent=2))
    else:
        _show_drift(obj.view, drifts)
    if detailed_exitcode and drifts:
        sys.exit(2)


def import_(obj: Ctx, address: str, ident: str, directory: str, variables: tuple[str, ...],
            var_files: tuple[str, ...]) -> None:
    """Bring an existing object (a path, a package or user name...) under management as
    ADDRESS, which the stack declares. The next plan shows only differences from the code."""
    session = _session(directory, variables, var_files, obj.lock_timeout, obj.fleet)
    try:
        stack = session.evaluate()
        with session.locked("import"):
            state = session.read_state()
            new = session.import_object(stack, state, address, ident)
            session.backend.write(new, "import")
    finally:
        session.close()
    obj.view.out(obj.view.style("Import successful!", fg="green", bold=True)
                 + f" {ident} is now managed as {address}. Run `tectum plan` to see how it "
                 "differs from the configuration.")


def rollback(obj: Ctx, to: int, directory: str, out: str | None, auto_approve: bool,
             parallelism: int) -> None:
    """Plan (and apply, after approval) a return of the managed objects to what state version
    N applied — from the desired state kept with that version, not from the code."""
    from tectum.plans.planfile import write_plan

    view = obj.view
    session = _session(directory, lock_timeout=obj.lock_timeout, fleet=obj.fleet)
    try:
        stack, _ = session.rollback_stack(to)
        with session.locked("rollback"):
            state = session.read_state()
            result = session.plan(stack, state, forks=obj.fleet.get("forks", 50))
            view.diagnostics(session.warnings)
            p = result.plan
            view.out(f"Rolling back to state version {to}.\n")
            view.plan(p)
            for warning in _irreversible(p):
                view.diagnostic(Diagnostic.warning("Change cannot be fully reversed", warning))
            p.operation = "rollback"
            if out:
                write_plan(out, p, session.project.root, sealer=session.sealer)
                view.out(f"\nSaved the rollback plan to {out}. Apply it with "
                         f"`tectum apply {out}`.")
                return
            if not p.has_changes:
                return
            if not auto_approve and not _confirm(obj, f"roll back to version {to}"):
                view.out("\nRollback cancelled.")
                sys.exit(1)
            if not auto_approve:
                _check_after_prompt(obj, session, p)
            view.out("")
            _run_apply(obj, session, p, state, parallelism, operation="rollback")
    finally:
        session.close()


def _irreversible(plan: Plan) -> list[str]:
    """Sentences about changes a rollback cannot undo completely (each type's
    :meth:`~tectum.providers.base.ResourceType.warnings`)."""
    from tectum.plans.plan import Action
    from tectum.providers.registry import registry

    out: list[str] = []
    for c in plan.changes:
        rt = registry.get(c.type)
        if rt is not None and c.action is not Action.NOOP:
            out.extend(f"{c.address}: {w}" for w in rt.warnings(c))
    return out


def workspace(obj: Ctx, action: str, name: str | None, directory: str) -> None:
    """Workspaces: separate states of one project (list, new NAME, select NAME, delete NAME)."""
    from tectum.addrs import valid_name
    from tectum.engine.session import WORKSPACE_FILE

    session = _session(directory)
    try:
        existing = session.backend.workspaces()
        marker = os.path.join(session.project.data_dir, WORKSPACE_FILE)
        if action == "list":
            for ws in existing:
                obj.view.out(("* " if ws == session.workspace else "  ") + ws)
            return
        if not name:
            _fail(obj.view, Diagnostic.error(
                "Missing workspace name", f"`tectum workspace {action}` needs a NAME."))
        if not valid_name(name):
            _fail(obj.view, Diagnostic.error(
                "Invalid workspace name",
                f"{name!r}: use letters, digits, '_' and '-', starting with a letter."))
        if action == "new":
            if name in existing:
                _fail(obj.view, Diagnostic.error(
                    "Workspace exists", f"Workspace {name!r} already exists; select it with "
                    f"`tectum workspace select {name}`."))
        elif action == "select":
            if name not in existing:
                _fail(obj.view, Diagnostic.error(
                    "No such workspace", f"Workspace {name!r} does not exist. "
                    f"`tectum workspace new {name}` makes it."))
        elif action == "delete":
            if name == "default" or name == session.workspace:
                _fail(obj.view, Diagnostic.error(
                    "Cannot delete workspace",
                    f"Workspace {name!r} is {'the default' if name == 'default' else 'selected'}"
                    "; select another one first."))
            if name not in existing:
                _fail(obj.view, Diagnostic.error("No such workspace",
                                                 f"Workspace {name!r} does not exist."))
            other = session.backend_for(name)
            try:
                held, _ = other.lock("workspace delete", timeout=obj.lock_timeout)
                if other.read().resources or other.pending_intents():
                    _fail(obj.view, Diagnostic.error(
                        "Workspace is not empty",
                        f"Workspace {name!r} still manages objects. Destroy them first "
                        f"(select it, then `tectum destroy`)."))
                other.delete_workspace(name)
                other.unlock(held.id)
            finally:
                other.close()
            obj.view.out(f"Deleted workspace {name!r}.")
            return
        if action == "new":
            from tectum.state.model import State

            created = session.backend_for(name)
            try:
                created.write(State.new(), "workspace")
            finally:
                created.close()
        os.makedirs(session.project.data_dir, exist_ok=True)
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(name + "\n")
        verb = "Created and switched to" if action == "new" else "Switched to"
        obj.view.out(f"{verb} workspace {name!r}.")
    finally:
        session.close()


def output(obj: Ctx, name: str | None, as_json: bool, raw: bool, directory: str,
           reveal: bool = False) -> None:
    """Show the outputs recorded by the last apply (sensitive ones masked unless --reveal)."""
    if reveal and name is None:
        _fail(obj.view, Diagnostic.error(
            "--reveal needs an output name",
            "--reveal prints one sensitive output: give its NAME, e.g. `tectum output "
            "db_password --reveal`."))
    session = _session(directory)
    try:
        outputs = session.outputs()
    finally:
        session.close()
    if name is not None:
        if name not in outputs:
            _fail(obj.view, Diagnostic.error(
                "Output not found",
                f"No output {name!r} in state. Declare it with output({name!r}, ...) and "
                "apply; `tectum output` lists the outputs there are."))
        entry = outputs[name]
        if entry.get("sensitive") and reveal:
            obj.view.out(f"Revealing sensitive output {name!r}.", err=True)
            value = entry["value"]
            text = value if raw and isinstance(value, str) else json.dumps(value)
            sys.stdout.write(text + "\n")  # the one place a secret is printed: not masked
        elif entry.get("sensitive"):
            obj.view.out("(sensitive value)")
        elif raw and isinstance(entry["value"], str):
            obj.view.out(entry["value"])
        else:
            obj.view.out(json.dumps(entry["value"]))
        return
    if as_json:
        obj.view.out(json.dumps({k: {"value": None if v.get("sensitive") else v["value"],
                                   "sensitive": bool(v.get("sensitive"))}
                               for k, v in outputs.items()}, indent=2))
        return
    for key, entry in sorted(outputs.items()):
        value = "(sensitive value)" if entry.get("sensitive") else json.dumps(entry["value"])
        obj.view.out(f"{key} = {value}")


def graph(obj: Ctx, directory: str, variables: tuple[str, ...],
          var_files: tuple[str, ...]) -> None:
    """Print the dependency graph in DOT (Graphviz)."""
    session = _session(directory, variables, var_files, fleet=obj.fleet)
    stack = session.evaluate(facts=False)
    g, diags = session.graph(stack)
    if diags.has_errors:
        obj.view.diagnostics(diags)
        sys.exit(1)
    sys.stdout.write(g.to_dot())


def _directory(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", nargs="?", default=".", metavar="DIR",
                   help="project directory (default: the current one)")


def _var_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-var", dest="variables", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable (repeatable)")
    p.add_argument("-var-file", dest="var_files", action="append", default=[], metavar="FILE",
                   help="variables from a TOML file (repeatable)")


def _lock_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-timeout", type=_duration, default=0.0, metavar="DURATION",
                   help="wait this long for the state lock, e.g. 30s or 5m (default: 0)")


def _selection(p: argparse.ArgumentParser, *, replace: bool = True) -> None:
    p.add_argument("-target", dest="targets", action="append", metavar="ADDRESS",
                   help="plan only this resource and what it depends on (repeatable; "
                   "Terraform's -target, for exceptional cases)")
    if replace:
        p.add_argument("-replace", dest="replace", action="append", metavar="ADDRESS",
                       help="replace this resource's object even if it matches (repeatable)")


def _parallelism(p: argparse.ArgumentParser) -> None:
    p.add_argument("--parallelism", type=_bounded, default=100, metavar="N",
                   help="resource operations at most at once in the whole run, as Terraform's "
                   "-parallelism (default: 100); each provider also limits operations at once "
                   "on one target ([providers.NAME] concurrency)")


def _fleet(p: argparse.ArgumentParser, *, apply: bool = False, hosts: bool = True) -> None:
    g = p.add_argument_group("fleet (inventory hosts)")
    g.add_argument("-i", "--inventory", metavar="FILE",
                   help="inventory file (default: DIR/inventory.toml)")
    if not hosts:
        return
    g.add_argument("--limit", metavar="PATTERN",
                   help="only these hosts: host or group names, comma-separated; 'local' is "
                   "this machine, 'all' every inventory host")
    g.add_argument("--forks", type=_bounded, default=50, metavar="N",
                   help="hosts worked on at once, as Ansible's --forks: reads, and hosts with "
                   "an operation running (default: 50)")
    g.add_argument("--accept-new-host-keys", action="store_true",
                   help="trust an unknown host key for this run (trust on first use; never a "
                   "changed one)")
    if apply:
        g.add_argument("--serial", metavar="N|N%[,...]",
                       help="apply to hosts in batches of N hosts or N%% of them (a list: "
                       "1,25%%,100%%); batches run one after another")
        g.add_argument("--max-fail-percent", type=_percent, metavar="P",
                       help="with --serial: stop when more than P%% of a batch's hosts fail "
                       "or are unreachable (strictly more, as Ansible's max_fail_percentage)")


def _percent(text: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value:g} is not between 0 and 100")
    return value


def _bounded(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 1000")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, with a "did you mean" for an unknown command or flag (the closest known
    ones, by :func:`difflib.get_close_matches`)."""

    def error(self, message: str) -> NoReturn:
        super().error(message + _did_you_mean(self, message))


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    import difflib
    import re

    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        known = re.findall(r"'([^']*)'", choice[2])
        close = difflib.get_close_matches(choice[1], known, n=3)
    else:
        given = re.search(r"unrecognized arguments: (.*)", message)
        if not given:
            return ""
        root = parser
        while getattr(root, "_tectum_parent", None) is not None:
            root = getattr(root, "_tectum_parent")  # noqa: B009 - set by _link_parents
        known = sorted(_option_strings(root))
        close = []
        elsewhere = []
        for word in given[1].split():
            flag = word.split("=")[0]
            if flag in known:
                elsewhere.append(flag)  # (an option of another command, e.g. show -var)
            elif word.startswith("-"):
                close += difflib.get_close_matches(flag, known, n=2)
        if elsewhere:
            prog = _command_prog(root)
            return (f"\n\n{prog} does not take {', '.join(dict.fromkeys(elsewhere))}: "
                    f"`{prog} -h` lists its options.")
    close = list(dict.fromkeys(close))
    return f"\n\nDid you mean {' or '.join(close)}?" if close else ""


def _command_prog(root: argparse.ArgumentParser) -> str:
    """``tectum COMMAND`` for the command on this process's command line (else ``tectum``)."""
    import sys

    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in sys.argv[1:]:
                if word in action.choices:
                    return str(action.choices[word].prog)
    return str(root.prog)


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    out: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                out |= _option_strings(sub)
        else:
            out.update(action.option_strings)
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per operation, Terraform's names and flags."""
    from tectum import __version__

    parser = Parser(
        prog="tectum", allow_abbrev=False,
        description="tectum: infrastructure as code in Python — plan, apply, state, drift.")
    parser.add_argument("--no-color", action="store_true", help="plain output without colour")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="afterwards, list every command and change made on each host "
                        "(the command log; TECTUM_COMMAND_LOG=FILE keeps it as JSON lines)")
    parser.add_argument("-chdir", dest="chdir", metavar="DIR",
                        help="run as if started in DIR (Terraform's -chdir), before the command")
    parser.add_argument("--version", action="version", version=f"tectum, version {__version__}")
    commands = parser.add_subparsers(dest="subcommand", metavar="COMMAND")

    def command(name: str, func: Callable[..., None],
                sub: Any = commands) -> argparse.ArgumentParser:
        doc = (func.__doc__ or "").strip()
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=doc.splitlines()[0] if doc else None, description=doc,
            allow_abbrev=False)
        p.set_defaults(func=func)
        # Terraform takes -no-color after the command too (`terraform plan -no-color`)
        p.add_argument("--no-color", action="store_true", default=argparse.SUPPRESS,
                       help="plain output without colour")
        return p

    p = command("init", init)
    _directory(p)

    p = command("validate", validate)
    _directory(p)
    _var_options(p)
    _fleet(p, hosts=False)

    p = command("plan", plan)
    _directory(p)
    _var_options(p)
    p.add_argument("-out", dest="out", metavar="FILE", help="save the plan to FILE")
    p.add_argument("--encrypt-to", action="append", metavar="RECIPIENT",
                   help="with -out: encrypt the plan file to this age or ssh-ed25519 public key "
                   "(repeatable); only its holder can read or apply it")
    p.add_argument("--json", dest="as_json", action="store_true", help="print the plan as JSON")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 0 with no changes, 2 with changes, 1 on error")
    p.add_argument("--destroy", action="store_true", help="plan to destroy everything in state")
    _selection(p)
    p.add_argument("-refresh", choices=("true", "false"), default="true",
                   help="-refresh=false plans from state alone, reading nothing")
    _parallelism(p)
    _lock_timeout(p)
    _fleet(p)

    p = command("apply", apply)
    p.add_argument("target", nargs="?", default=".", metavar="DIR|PLANFILE",
                   help="project directory, or a saved plan (default: the current directory)")
    _var_options(p)
    p.add_argument("--auto-approve", action="store_true", help="apply without asking")
    _selection(p)
    _parallelism(p)
    _lock_timeout(p)
    _fleet(p, apply=True)

    p = command("destroy", destroy)
    _directory(p)
    _var_options(p)
    p.add_argument("--auto-approve", action="store_true", help="destroy without asking")
    _selection(p, replace=False)
    _parallelism(p)
    _lock_timeout(p)
    _fleet(p, apply=True)

    p = command("show", show)
    p.add_argument("target", nargs="?", default=".", metavar="DIR|PLANFILE",
                   help="project directory, or a saved plan (default: the current directory)")
    p.add_argument("--json", dest="as_json", action="store_true", help="print as JSON")

    state_parser = commands.add_parser("state", help="Inspect the state.",
                                       description="Inspect the state.")
    state_commands = state_parser.add_subparsers(dest="state_command", metavar="COMMAND",
                                                 required=True)
    p = command("list", state_list, state_commands)
    _directory(p)
    p = command("show", state_show, state_commands)
    p.add_argument("address", nargs="?", help="a resource address, e.g. file.site "
                   "(default: the whole state)")
    _directory(p)
    p.add_argument("--version", type=int, metavar="N", help="show state version N")
    p.add_argument("--json", dest="as_json", action="store_true",
                   help="the whole state document as JSON (to `state push` an earlier version)")
    p = command("history", state_history, state_commands)
    _directory(p)
    p = command("diff", state_diff, state_commands)
    p.add_argument("old", type=int, metavar="N", help="a state version")
    p.add_argument("new", type=int, metavar="M", help="a later state version")
    _directory(p)
    p = command("pull", state_pull, state_commands)
    _directory(p)
    p = command("push", state_push, state_commands)
    p.add_argument("file", metavar="FILE", help="a state document (from `state pull`)")
    _directory(p)
    p.add_argument("--force", action="store_true",
                   help="push even for another lineage or an older serial")
    _lock_timeout(p)
    p = command("rm", state_rm, state_commands)
    p.add_argument("addresses", nargs="+", metavar="ADDRESS",
                   help="a resource address in state, e.g. file.site (repeatable)")
    p.add_argument("--dir", dest="directory", default=".", metavar="DIR",
                   help="project directory (default: the current one)")
    _lock_timeout(p)
    p = command("mv", state_mv, state_commands)
    p.add_argument("source", metavar="SOURCE", help="the address in state, e.g. file.site")
    p.add_argument("destination", metavar="DESTINATION", help="its new address, e.g. file.home")
    p.add_argument("--dir", dest="directory", default=".", metavar="DIR",
                   help="project directory (default: the current one)")
    _lock_timeout(p)

    p = command("refresh", refresh)
    _directory(p)
    _var_options(p)
    _lock_timeout(p)
    _fleet(p)

    p = command("drift", drift)
    _directory(p)
    _var_options(p)
    p.add_argument("--json", dest="as_json", action="store_true", help="print as JSON")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 0 without drift, 2 with drift, 1 on error")
    _lock_timeout(p)
    _fleet(p)

    p = command("import", import_)
    p.add_argument("address", help="the declared resource to import into, e.g. file.site")
    p.add_argument("ident", metavar="ID", help="the object: a path, a package or user name")
    _directory(p)
    _var_options(p)
    _lock_timeout(p)
    _fleet(p)

    p = command("rollback", rollback)
    p.add_argument("--to", type=int, required=True, metavar="N",
                   help="the state version to return to")
    _directory(p)
    p.add_argument("-out", dest="out", metavar="FILE", help="save the plan instead of applying")
    p.add_argument("--auto-approve", action="store_true", help="apply without asking")
    _parallelism(p)
    _lock_timeout(p)
    _fleet(p, apply=True)

    p = command("force-unlock", force_unlock)
    p.add_argument("lock_id", metavar="ID", help="the lock's ID (from the error naming it)")
    _directory(p)

    p = command("workspace", workspace)
    p.add_argument("action", choices=("list", "new", "select", "delete"))
    p.add_argument("name", nargs="?", help="workspace name")
    p.add_argument("--dir", dest="directory", default=".", metavar="DIR",
                   help="project directory (default: the current one)")

    p = command("output", output)
    p.add_argument("name", nargs="?", help="one output (default: all)")
    p.add_argument("--json", dest="as_json", action="store_true", help="print as JSON")
    p.add_argument("--raw", action="store_true", help="print a string value without quotes")
    p.add_argument("--reveal", action="store_true",
                   help="with NAME: print a sensitive output's value (the only way to)")
    p.add_argument("--dir", dest="directory", default=".", metavar="DIR",
                   help="project directory (default: the current one)")

    p = command("graph", graph)
    _directory(p)
    _var_options(p)
    _fleet(p, hosts=False)

    from tectum.cli import agent_cmd, secrets_cmd

    p = command("agent", agent_cmd.agent)
    agent_cmd.add_agent_options(p)
    p = command("approve", agent_cmd.approve)
    agent_cmd.add_approve_options(p)

    from tectum.cli import serve_cmd

    p = command("serve", serve_cmd.serve)
    serve_cmd.add_serve_options(p)

    from tectum.cli import bootstrap_cmd

    p = command("bootstrap", bootstrap_cmd.bootstrap)
    bootstrap_cmd.add_bootstrap_options(p)
    _fleet(p)

    runs_parser = commands.add_parser("runs", help="Show the reports of agent runs.",
                                      description="Show the reports of agent runs.")
    runs_commands = runs_parser.add_subparsers(dest="runs_command", metavar="COMMAND",
                                               required=True)
    p = command("list", agent_cmd.runs_list, runs_commands)
    _directory(p)
    p.add_argument("--workspace", metavar="NAME", help="only this workspace's runs")
    p.add_argument("--host", metavar="HOST", help="only this host's runs")
    p.add_argument("--status", metavar="STATUS", help="only runs with this status")
    p.add_argument("--last", type=int, default=50, metavar="N",
                   help="the last N runs (default 50)")
    p.add_argument("--json", dest="as_json", action="store_true", help="print as JSON")
    p = command("show", agent_cmd.runs_show, runs_commands)
    p.add_argument("run_id", metavar="RUN_ID", help="a run's id, or the start of it")
    _directory(p)
    p.add_argument("--json", dest="as_json", action="store_true", help="print as JSON")

    secrets_cmd.add_parser(commands)
    both_dash_forms(parser)
    _link_parents(parser)
    return parser


def _link_parents(parser: argparse.ArgumentParser) -> None:
    """Each sub-command's parser knows the top one (its "did you mean" looks at every flag)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                setattr(sub, "_tectum_parent", parser)  # noqa: B010 - not an argparse field
                _link_parents(sub)


def both_dash_forms(parser: argparse.ArgumentParser) -> None:
    """Every long option of ``parser`` and its sub-commands in both forms: Terraform's single
    dash (``-auto-approve``, ``-json``, ``-lock-timeout=5s``) and the double dash
    (``--auto-approve``, ``--var``). One-letter options (``-i``) stay as they are."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                both_dash_forms(sub)
            continue
        for option in list(action.option_strings):
            if option.startswith("--") and len(option) > 3:
                alias = option[1:]
            elif option.startswith("-") and not option.startswith("--") and len(option) > 2:
                alias = "-" + option
            else:
                continue
            if alias not in parser._option_string_actions:
                action.option_strings = [*action.option_strings, alias]
                parser._option_string_actions[alias] = action


def _command_log() -> tuple[str, int, bool] | None:
    """The command log ``-v`` shows: ``TECTUM_COMMAND_LOG`` (from its current end) when set,
    else a temporary file set as it for this process: (path, offset, temporary)."""
    import tempfile

    path = os.environ.get("TECTUM_COMMAND_LOG")
    if path:
        try:
            return path, os.path.getsize(path), False
        except OSError:
            return path, 0, False
    fd, path = tempfile.mkstemp(prefix="tectum-commands-", suffix=".jsonl")
    os.close(fd)
    os.environ["TECTUM_COMMAND_LOG"] = path
    return path, 0, True


def _show_command_log(view: View, path: str, offset: int, temporary: bool) -> None:
    """Print what the connectors recorded (every command run and every change made, per host,
    secrets masked when recorded) to standard error, then drop a temporary log."""
    try:
        with open(path, encoding="utf-8") as fh:
            fh.seek(offset)
            entries = [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError):
        entries = []
    finally:
        if temporary:
            with contextlib.suppress(OSError):
                os.unlink(path)
    if not entries:
        view.out("\nCommand log: nothing was run on a host.", err=True)
        return
    view.out(f"\nCommand log ({len(entries)} operations; * changes something):", err=True)
    for e in entries:
        op = str(e.get("op"))
        if op == "run":
            what = "$ " + " ".join(str(a) for a in e.get("argv") or ())
        else:
            detail = {k: v for k, v in e.items()
                      if k not in ("op", "mutating", "host") and v is not None}
            what = op + " " + " ".join(f"{k}={v}" for k, v in detail.items())
        view.out(f"  {'*' if e.get('mutating') else ' '} [{e.get('host')}] {what}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI; diagnostics → exit 1, never a traceback."""
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    # a library's deprecation notices (asyncssh importing DSA from cryptography) are not the
    # user's business: only tectum's own output reaches the terminal
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    view = View(False if os.environ.get("NO_COLOR") else None)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.chdir:
            try:
                os.chdir(args.chdir)
            except OSError as exc:
                raise DiagnosticError(Diagnostic.error(
                    "Cannot change directory",
                    f"-chdir={args.chdir}: {exc.strerror or exc}. Give the project "
                    "directory.")) from None
        if getattr(args, "func", None) is None:
            parser.print_help()
            sys.exit(0)
        if args.verbose:
            log = _command_log()
            if log is not None:
                import atexit

                atexit.register(_show_command_log, View(
                    False if args.no_color or os.environ.get("NO_COLOR") else None), *log)
        obj = Ctx(False if args.no_color or os.environ.get("NO_COLOR") else None,
                  getattr(args, "lock_timeout", 0.0),
                  {k: getattr(args, k) for k in FLEET_OPTIONS if hasattr(args, k)})
        view = obj.view
        params = {k: v for k, v in vars(args).items()
                  if k not in ("func", "subcommand", "state_command", "runs_command",
                               "no_color", "chdir",
                               "verbose", "lock_timeout",
                               *FLEET_OPTIONS)}
        for key in ("variables", "var_files"):
            if key in params:
                params[key] = tuple(params[key])
        args.func(obj, **params)
    except DiagnosticError as exc:
        view.diagnostics(exc.diagnostics)
        sys.exit(1)
    except KeyboardInterrupt:
        view.out("\nInterrupted. State keeps everything that finished.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        # the reader went away (e.g. `tectum plan | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: say so without a traceback
        import tempfile
        import traceback

        from tectum.masking import REDACTOR

        fd, path = tempfile.mkstemp(prefix="tectum-crash-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(REDACTOR.redact(traceback.format_exc()))
        view.diagnostic(Diagnostic.error(
            "Internal error",
            f"tectum hit an unexpected error: {type(exc).__name__}: {exc}. This is a bug in "
            f"tectum; the details are in {path}. Everything already applied is recorded in "
            "state."))
        sys.exit(1)
