"""Saved plan files (``tectum plan -out FILE``).

A plan file is JSON: ``{"tectum_plan": 1, "checksum": SHA-256 of the canonical payload,
"payload": {...}}``. The payload holds the plan (every decision, with the state lineage and serial
it was made from) and the project directory. Applying refuses a file whose bytes were altered
(checksum), whose state moved on since (serial), or that belongs to another state (lineage) —
Terraform's "Saved plan is stale" rule.

Secret values in the plan are sealed (age-encrypted to the workspace's recipients, see
:mod:`tectum.secrets.seal`); with ``--encrypt-to RECIPIENT`` the whole file is an age file that
only the holder of that key can read or apply (for CI, where plan files travel as artifacts).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.plans.plan import Plan

FORMAT = 1


def _canonical(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


AGE_HEADER = b"age-encryption.org/v1"


def write_plan(path: str, plan: Plan, project_root: str, *, sealer: Any = None,
               encrypt_to: Sequence[str] = ()) -> None:
    """Write ``plan`` to ``path`` (atomically, mode 0600). ``sealer`` seals secret values to
    the workspace's recipients; ``encrypt_to`` (age or ssh-ed25519 public keys) encrypts the
    whole file to them instead. Raises
    :class:`DiagnosticError` for a recipient that is not a public key."""
    from tectum.masking import REDACTOR

    body = plan.to_json()
    if encrypt_to:
        # a file encrypted as a whole is for its recipients: values stay as they are, and the
        # secrets are listed so that showing or applying it masks them again
        body["masked"] = REDACTOR.values()
    elif sealer is not None and REDACTOR:
        body = sealer.seal(body)
        body["masked"] = [sealer.seal_value(v) for v in REDACTOR.values()]
    payload = {"plan": body, "project": project_root}
    doc = {"tectum_plan": FORMAT, "checksum": hashlib.sha256(_canonical(payload)).hexdigest(),
           "payload": payload}
    data = json.dumps(doc, separators=(",", ":")).encode()
    if encrypt_to:
        import pyrage

        from tectum.secrets.store import SecretsError, parse_recipient

        try:
            recipients = [parse_recipient(r) for r in encrypt_to]
        except SecretsError as exc:
            raise DiagnosticError(exc.diagnostic()) from None
        data = pyrage.encrypt(data, recipients)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(data)
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
            raw = fh.read()
        if raw.startswith(AGE_HEADER):
            raw = _decrypt(path, raw, bad)
        doc = json.loads(raw)
    except OSError as exc:
        raise bad(f"cannot be read ({exc.strerror})") from None
    except (ValueError, RecursionError):
        raise bad("is not a tectum plan (not valid JSON)") from None
    if not isinstance(doc, dict) or type(doc.get("tectum_plan")) is not int \
            or doc["tectum_plan"] != FORMAT:
        raise bad("is not a tectum plan file of a format this version reads")
    payload = doc.get("payload")
    if not isinstance(payload, dict) or not isinstance(doc.get("checksum"), str):
        raise bad("is incomplete")
    if hashlib.sha256(_canonical(payload)).hexdigest() != doc["checksum"]:
        raise bad("was altered after it was written (checksum mismatch)")
    try:
        body = payload["plan"]
        project = payload["project"]
        if isinstance(body, dict) and isinstance(project, str):
            from tectum.secrets.seal import Sealer, has_sealed

            if has_sealed(body):
                body = Sealer(project, str(body.get("workspace", "default"))).unseal(
                    body, f"plan file {path}")
        if isinstance(body, dict):
            from tectum.masking import REDACTOR

            for value in body.pop("masked", None) or ():
                if isinstance(value, str):
                    REDACTOR.add(value)
        plan = Plan.from_json(body)
        if not isinstance(project, str):
            raise ValueError("project is not a string")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise bad(f"is malformed ({exc})") from None
    return plan, project


# rage's text for DecryptError::NoMatchingKeys: the header parsed, no identity opened it
_NO_MATCHING_KEYS = "No matching keys found"


def _decrypt(path: str, raw: bytes, bad: Callable[[str], DiagnosticError]) -> bytes:
    """Decrypt an age-encrypted plan file with the user's identities. A file whose age header
    does not parse (truncated, damaged) is reported through ``bad`` before any key is looked
    for: a missing key is not what is wrong with it."""
    import pyrage
    from pyrage import x25519

    from tectum.secrets.store import SecretsError, load_identities

    def damaged(exc: Exception) -> DiagnosticError:
        return bad(f"is damaged: it starts as an age-encrypted file but cannot be read ({exc})")

    try:
        identities = load_identities()
    except SecretsError as exc:
        try:  # no key of ours: a throw-away one tells a damaged header from a sound one
            pyrage.decrypt(raw, [x25519.Identity.generate()])
        except pyrage.DecryptError as probe:
            if str(probe) != _NO_MATCHING_KEYS:
                raise damaged(probe) from None
        raise DiagnosticError(exc.diagnostic()) from None
    try:
        return bytes(pyrage.decrypt(raw, identities))
    except pyrage.DecryptError as exc:
        if str(exc) != _NO_MATCHING_KEYS:
            raise damaged(exc) from None
        raise DiagnosticError(Diagnostic.error(
            "Cannot decrypt plan file",
            f"{path} is encrypted (plan -out --encrypt-to) to keys none of yours matches. Set "
            "TECTUM_AGE_KEY_FILE to the key it was encrypted to.",
            source=SourceLocation(path))) from None
