"""Saved plan files (``tectum plan -out FILE``).

A plan file is JSON: ``{"tectum_plan": 1, "checksum": SHA-256 of the canonical payload,
"payload": {...}}``. The payload holds the plan (every decision, with the state lineage and serial
it was made from) and the project directory. Applying refuses a file whose bytes were altered
(checksum), whose state moved on since (serial), or that belongs to another state (lineage) —
Terraform's "Saved plan is stale" rule.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.plans.plan import Plan

FORMAT = 1


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def write_plan(path: str, plan: Plan, project_root: str) -> None:
    payload = {"plan": plan.to_json(), "project": project_root}
    doc = {"tectum_plan": FORMAT, "checksum": hashlib.sha256(_canonical(payload)).hexdigest(),
           "payload": payload}
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, separators=(",", ":"))
    os.replace(tmp, path)


def read_plan(path: str) -> tuple[Plan, str]:
    """Read a plan file; returns the plan and the project directory it was made for.
    Raises :class:`DiagnosticError` for a file that is not a valid, unaltered plan."""
    def bad(why: str) -> DiagnosticError:
        return DiagnosticError(Diagnostic.error(
            "Invalid plan file",
            f"{path} {why}. Make a new plan with `tectum plan -out {path}`.",
            source=SourceLocation(path),
        ))

    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror})") from None
    except (ValueError, RecursionError):
        raise bad("is not a tectum plan (not valid JSON)") from None
    if not isinstance(doc, dict) or doc.get("tectum_plan") != FORMAT:
        raise bad("is not a tectum plan file of a format this version reads")
    payload = doc.get("payload")
    if not isinstance(payload, dict) or not isinstance(doc.get("checksum"), str):
        raise bad("is incomplete")
    if hashlib.sha256(_canonical(payload)).hexdigest() != doc["checksum"]:
        raise bad("was altered after it was written (checksum mismatch)")
    try:
        plan = Plan.from_json(payload["plan"])
        project = payload["project"]
        if not isinstance(project, str):
            raise ValueError("project is not a string")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise bad(f"is malformed ({exc})") from None
    return plan, project
