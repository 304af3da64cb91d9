"""Human-readable views. The engine never prints; these functions render its results.

Plan symbols follow Terraform: ``+`` create, ``~`` update, ``-/+`` replace, ``-`` delete,
``.`` forget (Terraform 1.7's "will no longer be managed"), and ``=`` adopt (tectum's own).
Colour (ANSI) is used only on a terminal, and never with ``--no-color`` or ``NO_COLOR``
(https://no-color.org).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

from tectum.diagnostics import Diagnostic, Severity
from tectum.masking import REDACTOR
from tectum.plans.plan import Action, AttrChange, Plan, ResourceChange
from tectum.values import is_known

if TYPE_CHECKING:
    from tectum.engine.applier import ApplyResult, HostReport

_COLOURS = {Action.CREATE: "green", Action.UPDATE: "yellow", Action.REPLACE: "magenta",
            Action.DELETE: "red", Action.FORGET: None, Action.NOOP: None}
UNKNOWN_TEXT = "(known after apply)"
MAX_DIFF_LINES = 200


_ANSI_FG = {"red": 31, "green": 32, "yellow": 33, "magenta": 35}
_ANSI_RE = re.compile(r"\033\[[0-9;]*m")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


#: lines of a new text attribute (a new file's content) the plan shows
NEW_TEXT_LINES = 20


class View:
    """Writes to stdout/stderr. ``color``: None = on a terminal only, False = never."""

    def __init__(self, color: bool | None = None) -> None:
        self.color = color
        self._buffer: list[str] | None = None
        self._tty: dict[int, bool] = {}
        #: the live status line of a fleet apply (on a terminal only), redrawn under the output
        self._status: str | None = None
        self._progress: dict[str, int] = {}

    def _plain(self, stream: TextIO) -> bool:
        if self.color is False:
            return True
        key = id(stream)
        if key not in self._tty:
            self._tty[key] = _isatty(stream)
        return not self._tty[key]

    def out(self, text: str = "", *, err: bool = False) -> None:
        """Write a line; every secret value known to this process is masked in it
        (:mod:`tectum.masking`)."""
        text = REDACTOR.redact(text)
        if self._buffer is not None and not err:
            self._buffer.append(text)
            return
        stream = sys.stderr if err else sys.stdout
        plain = self._plain(stream)
        if "\033" in text and plain:
            text = _ANSI_RE.sub("", text)
        if self._status is not None:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        stream.write(text + "\n")
        if err or not plain:  # progress shows at once on a terminal; a pipe gets blocks
            stream.flush()
        if self._status is not None:
            sys.stderr.write(self._status)
            sys.stderr.flush()

    def start_progress(self, hosts: int, changes: int) -> None:
        """A status line for a fleet apply, kept at the bottom of a terminal (stderr)."""
        if not _isatty(sys.stderr) or self.color is False:
            return
        self._progress = {"hosts": hosts, "hosts_done": 0, "changes": changes, "done": 0}
        self._draw()

    def stop_progress(self) -> None:
        if self._status is not None:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._status = None

    def _draw(self) -> None:
        p = self._progress
        self._status = self.style(
            f"[{p['hosts_done']}/{p['hosts']} hosts done, {p['done']}/{p['changes']} changes]",
            dim=True)
        sys.stderr.write("\r\033[K" + self._status)
        sys.stderr.flush()

    def style(self, text: str, *, fg: str | None = None, bold: bool = False,
              dim: bool = False) -> str:
        """``text`` with ANSI colour/weight (removed on output that is not a terminal)."""
        if self.color is False:
            return text
        codes = [str(_ANSI_FG[fg])] if fg else []
        if bold:
            codes.append("1")
        if dim:
            codes.append("2")
        return f"\033[{';'.join(codes)}m{text}\033[0m" if codes else text

    # -- diagnostics -------------------------------------------------------------------------
    def diagnostic(self, d: Diagnostic) -> None:
        is_err = d.severity is Severity.ERROR
        head = self.style("Error: " if is_err else "Warning: ", fg="red" if is_err else "yellow",
                          bold=True) + self.style(d.summary, bold=True)
        lines = ["", head]
        where = []
        if d.source is not None:
            where.append(f"at {d.source}")
        if d.address:
            where.append(f"in {d.address}")
        if where:
            lines.append("  " + ", ".join(where))
        if d.detail:
            lines.extend("  " + line for line in d.detail.splitlines())
        self.out("\n".join(lines), err=True)

    def diagnostics(self, diags: Iterable[Diagnostic]) -> None:
        for d in diags:
            self.diagnostic(d)

    # -- plan ----------------------------------------------------------------------------------
    def plan(self, plan: Plan) -> None:
        """Render the plan (written in one piece: thousands of lines are one write)."""
        self._buffer = []
        try:
            self._plan(plan)
        finally:
            text, self._buffer = "\n".join(self._buffer), None
            self.out(text)

    def hosts_down(self, plan: Plan) -> None:
        """Hosts left out of the plan because they could not be read (to stderr)."""
        for host, (kind, reason) in plan.hosts_down.items():
            self.out(self.style(f"Host {host} is {kind}: ", fg="red" if kind == "refused"
                                else "yellow", bold=True) + reason, err=True)
        if plan.hosts_down:
            n = len(plan.hosts_down)
            self.out(f"{'That host is' if n == 1 else f'Those {n} hosts are'} not in this plan: "
                     "state keeps their resources as they were. Run again when "
                     f"{'it is' if n == 1 else 'they are'} reachable.\n", err=True)

    def _plan(self, plan: Plan) -> None:
        self.hosts_down(plan)
        shown = [c for c in plan.changes if c.action is not Action.NOOP or c.state_only]
        drifted = [c for c in plan.changes if c.drift
                   and c.action not in (Action.DELETE, Action.FORGET)]
        if drifted:
            self.out(self.style("Objects changed outside of tectum:", bold=True))
            for c in drifted:
                self.out(f"  {c.address}: {', '.join(c.drift)}")
            self.out()
        left = [c for c in plan.changes if c.interrupted]
        if left:
            self.out(self.style("Left by an interrupted run (tectum's own changes, not made "
                                "by hand):", bold=True))
            for c in left:
                self.out(f"  {c.address}: {', '.join(c.interrupted)}")
            self.out()
        if not shown:
            self.out(self.style("No changes.", fg="green", bold=True)
                     + " The infrastructure matches the configuration.")
            return
        self.out("tectum will perform the following actions:\n")
        for change in shown:
            self.change(change)
        self.out(self.summary_line(plan))

    def summary_line(self, plan: Plan) -> str:
        c = plan.counts()
        text = (f"Plan: {c['add']} to add, {c['change']} to change, {c['replace']} to replace, "
                f"{c['destroy']} to destroy")
        if c["forget"]:
            text += f", {c['forget']} to forget"
        if c["adopt"]:
            text += f", {c['adopt']} to adopt"
        if c["move"]:
            text += f", {c['move']} to move"
        return self.style(text + ".", bold=True)

    def change(self, change: ResourceChange) -> None:
        from tectum.providers.registry import registry

        rt = registry.get(change.type)
        label = ""
        attrs = change.after or change.before or change.prior or {}
        if rt is not None:
            label = rt.describe(attrs) if is_known(rt.identity(attrs)) else ""
        symbol = change.action.symbol if not change.state_only else "="
        if change.state_only and change.prior is not None and change.moved_from is None:
            symbol = "~"  # only the state record changes
        head = f"  {symbol} {change.address}"
        colour = _COLOURS[change.action]
        head = self.style(head, fg=colour, bold=True) if colour else self.style(head, bold=True)
        notes = []
        if change.state_only and change.restate is not None:
            notes.append(change.restate)
        elif change.state_only and change.moved_from is not None:
            notes.append(f"moved from {change.moved_from}")
        elif change.state_only:
            notes.append(change.note or "adopted: the object already matches; recorded in "
                         "state as found, so removing the resource later leaves it in place")
        elif change.note:
            notes.append(change.note)
        elif change.moved_from is not None:
            notes.append(f"moved from {change.moved_from}")
        elif change.prior is None and change.origin == "found" \
                and change.action is Action.UPDATE:
            notes.append("found already there: taken over; removing the resource later leaves "
                         "it in place")
        if change.action is Action.FORGET:
            notes.insert(0, "will no longer be managed by tectum")
        if change.triggered:
            owed = {c for _, c in change.owed}
            now = [t for t in change.triggers if t not in owed]
            why = f"{', '.join(now)} changed" if now else ""
            if owed:
                why += ("; " if why else "") + (f"owed since an earlier run that stopped "
                                                 f"before it: {', '.join(sorted(owed))} changed")
            notes.append(f"{change.triggered} ({why})")
        if change.action is Action.REPLACE:
            forced = [c.name for c in change.changes if c.force_new]
            if forced and not (change.note or "").startswith(f"{', '.join(forced)} changed"):
                notes.append(f"{', '.join(forced)} forces replacement")
        if change.drift:
            notes.append(f"changed outside tectum: {', '.join(change.drift)}")
        line = head + (f"  {label}" if label else "")
        if notes:
            line += self.style(f"  ({'; '.join(notes)})", dim=True)
        self.out(line)
        text = rt.text_attrs if rt is not None else frozenset()
        for attr in change.changes:
            self.attr_change(change, attr, attr.name in text)
        self.out()

    def attr_change(self, change: ResourceChange, c: AttrChange, text: bool = False) -> None:
        """One attribute's change; ``text``: a multi-line text attribute, shown as a line
        diff (with every secret masked)."""
        if text and (isinstance(c.after, str) or isinstance(c.before, str)):
            self.content_diff(change, c)
            return
        if c.sensitive:
            self.out(f"      {c.name}: (sensitive value)")
            return
        before = _fmt(c.before)
        after = _fmt(c.after)
        suffix = self.style("  # forces replacement", fg="magenta") if c.force_new else ""
        if c.before is None:
            self.out(f"      {c.name}: {after}{suffix}")
        else:
            self.out(f"      {c.name}: {before} → {after}{suffix}")

    def content_diff(self, change: ResourceChange, c: AttrChange) -> None:
        after = c.after if isinstance(c.after, str) else None
        before = c.before if isinstance(c.before, str) else None
        if after is not None and not is_known(after):
            self.out(f"      {c.name}: {UNKNOWN_TEXT}")
            return
        if before is None and c.sensitive:
            self.out(f"      {c.name}: (sensitive value)")  # (not even its length)
            return
        if before is None:
            # a new text: its first lines, as Terraform shows a new file's content (every
            # secret masked — in the whole text, before it is cut into lines, so a secret of
            # several lines is masked too; one write for the block, as plans list many files)
            lines = REDACTOR.redact(after or "").splitlines()
            n = len(lines)
            block = [f"      {c.name}: ({n} line{'s' if n != 1 else ''}, "
                     f"{len((after or '').encode())} bytes)"]
            block += [f"        | {line}" for line in lines[:NEW_TEXT_LINES]]
            if n > NEW_TEXT_LINES:
                block.append(f"        ... and {n - NEW_TEXT_LINES} more lines")
            self.out("\n".join(block))
            return
        if after is None:
            return
        import difflib

        from tectum.providers.registry import registry

        rt = registry.get(change.type)
        path = (rt.describe(change.after) if rt is not None and change.after else "") \
            or change.address
        # (masked as whole texts first: a secret of several lines is masked in every line)
        old_lines = REDACTOR.redact(before).splitlines()
        new_lines = REDACTOR.redact(after).splitlines()
        # lines both ends share are not handed to difflib (its matcher is slow on large files
        # of repeated lines); the hunk headers still count from the real first line
        head = 0
        while head < min(len(old_lines), len(new_lines)) - 2 \
                and old_lines[head] == new_lines[head]:
            head += 1
        head = max(0, head - 2)
        tail = 0
        while tail < min(len(old_lines), len(new_lines)) - head - 2 \
                and old_lines[-1 - tail] == new_lines[-1 - tail]:
            tail += 1
        tail = max(0, tail - 2)
        diff = list(difflib.unified_diff(
            old_lines[head:len(old_lines) - tail], new_lines[head:len(new_lines) - tail],
            f"{path} (now)", f"{path} (planned)", lineterm="", n=2))
        if head:
            diff = [_shift_hunk(line, head) for line in diff]
        self.out("      content:" + (" (secrets masked)" if c.sensitive else ""))
        for line in diff[:MAX_DIFF_LINES]:
            colour = "green" if line.startswith("+") else "red" if line.startswith("-") else None
            if line.startswith(("+++", "---")):
                colour = None
            self.out("        " + (self.style(line, fg=colour) if colour else line))
        if len(diff) > MAX_DIFF_LINES:
            self.out(f"        ... {len(diff) - MAX_DIFF_LINES} more diff lines")

    # -- apply -----------------------------------------------------------------------------------
    def apply_event(self, kind: str, change: ResourceChange, message: str | None) -> None:
        if self._progress and kind in ("done", "failed"):
            self._progress["done"] += 1
            if self._status is not None:
                self._draw()
        self._apply_event(kind, change, message)

    def _apply_event(self, kind: str, change: ResourceChange, message: str | None) -> None:
        verbs = {Action.CREATE: "created", Action.UPDATE: "updated", Action.REPLACE: "replaced",
                 Action.DELETE: "destroyed", Action.FORGET: "forgotten (left in place)"}
        if kind == "done":
            verb = verbs.get(change.action, "done")
            if change.triggered and not change.changes:
                verb = {"restart": "restarted", "reload": "reloaded"}.get(change.triggered,
                                                                          verb)
            self.out(f"{change.address}: {verb}")
        elif kind == "failed":
            self.out(self.style(f"{change.address}: failed: {message}", fg="red"), err=True)
        # skipped changes are listed, grouped by cause, in the summary at the end

    _HOST_COLOURS = {"changed": "yellow", "ok": "green", "failed": "red", "refused": "red",
                     "unreachable": "magenta", "not attempted": "magenta"}

    def host_event(self, report: HostReport) -> None:
        """One line when a host is finished (Ansible's per-host recap, as it happens)."""
        if self._progress:
            self._progress["hosts_done"] += 1
            if self._status is not None:
                self._draw()
        counts = f"{report.changed} changed, {report.unchanged} unchanged"
        if report.failed:
            counts += f", {report.failed} failed"
        if report.unreachable:
            counts += f", {report.unreachable} unreachable"
        if report.skipped:
            counts += f", {report.skipped} skipped"
        colour = self._HOST_COLOURS.get(report.status)
        line = self.style(f"host {report.host}: {report.status}", fg=colour, bold=True) \
            + f" ({counts})"
        if report.status in ("unreachable", "refused", "not attempted") and report.reason:
            line += f": {report.reason}"
        self.out(line, err=report.status not in ("ok", "changed"))

    def host_recap(self, result: ApplyResult) -> None:
        """The summary over hosts: how many changed, ok, failed, unreachable..."""
        counts = result.host_counts()
        parts = [f"{counts[k]} {k}" for k in ("changed", "ok", "failed", "unreachable",
                                               "refused", "not attempted") if counts[k]
                 or k in ("changed", "ok", "failed", "unreachable")]
        self.out(self.style(f"Hosts: {', '.join(parts)}.", bold=True))
        if result.stopped:
            self.out(self.style(f"Stopped after {result.stopped}.", fg="red", bold=True),
                     err=True)


def _shift_hunk(line: str, by: int) -> str:
    """A unified-diff hunk header ``@@ -a,b +c,d @@`` with both starts moved by ``by`` lines
    (other lines unchanged)."""
    m = re.match(r"@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@", line)
    if m is None:
        return line
    return (f"@@ -{int(m[1]) + by}{m[2] or ''} +{int(m[3]) + by}{m[4] or ''} @@"
            + line[m.end():])


#: stands for an unknown value inside a list or table while it is turned into JSON
_UNKNOWN_MARK = "\x00unknown\x00"


def _unknown_marked(value: Any) -> Any:
    """``value`` with every string that is not known yet (holds a reference) replaced by
    :data:`_UNKNOWN_MARK`, at any depth."""
    if isinstance(value, str):
        return value if is_known(value) else _UNKNOWN_MARK
    if isinstance(value, list | tuple):
        return [_unknown_marked(v) for v in value]
    if isinstance(value, dict):
        return {k: _unknown_marked(v) for k, v in value.items()}
    return value


def _fmt(value: Any) -> str:
    """A value as the plan shows it: JSON, with "(known after apply)" for what holds a
    reference (also inside lists and tables, as Terraform shows them), cut at 120 characters."""
    if isinstance(value, str) and not is_known(value):
        return UNKNOWN_TEXT
    text = json.dumps(_unknown_marked(value), ensure_ascii=False)
    text = text.replace(json.dumps(_UNKNOWN_MARK), UNKNOWN_TEXT)
    return text if len(text) <= 120 else text[:117] + "..."
