"""Signed approvals of pending runs: ``tectum approve RUN_ID --sign-with KEY`` signs what it
approves with an SSH key, and an agent given ``--approvers FILE`` applies only approvals whose
signature one of those keys made.

The signature is OpenSSH's ``ssh-keygen -Y sign`` (the SSHSIG format git uses for signed
commits) in the namespace ``tectum-approval``, over :func:`message`: the run's id, its plan's
SHA-256, its commit, workspace and host — so a signature approves exactly one plan of one
agent, and cannot be moved to another run. ``FILE`` is in OpenSSH's *allowed signers* format
(``ssh-keygen(1)``, ``ALLOWED SIGNERS``: ``PRINCIPAL KEYTYPE KEY`` per line), like git's
``gpg.ssh.allowedSignersFile``; the principal that signed is recorded as the approver.

Without ``--approvers`` an agent takes any approval written to the run store (whoever can write
the store can approve); with it, an unsigned or foreign approval is reported and not applied.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import TYPE_CHECKING

from tectum.diagnostics import Diagnostic, DiagnosticError

if TYPE_CHECKING:
    from tectum.runs import RunReport

NAMESPACE = "tectum-approval"


def message(run: RunReport) -> bytes:
    """What an approval of ``run`` signs."""
    return (f"tectum approval\nrun {run.id}\nplan sha256 {run.plan_digest}\n"
            f"commit {run.commit}\nworkspace {run.workspace}\nhost {run.host}\n").encode()


def _keygen(*args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["ssh-keygen", *args], input=data, capture_output=True,
                              timeout=60, check=False)
    except FileNotFoundError:
        raise DiagnosticError(Diagnostic.error(
            "ssh-keygen not found", "Signed approvals need OpenSSH's ssh-keygen "
            "(apt-get install openssh-client).")) from None


def sign(run: RunReport, key: str) -> str:
    """The signature (armored SSHSIG text) of an approval of ``run`` with the private key
    ``key`` (or its public key, when ssh-agent holds the private one). Raises
    DiagnosticError when ssh-keygen cannot sign."""
    if not os.path.exists(key):
        raise DiagnosticError(Diagnostic.error(
            "No such key", f"--sign-with {key}: no such file. Give an SSH private key (or the "
            "public key of one ssh-agent holds)."))
    done = _keygen("-Y", "sign", "-f", key, "-n", NAMESPACE, data=message(run))
    if done.returncode != 0 or b"BEGIN SSH SIGNATURE" not in done.stdout:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise DiagnosticError(Diagnostic.error(
            "Cannot sign the approval",
            f"ssh-keygen -Y sign with {key}: {why[-1] if why else 'failed'}."))
    return done.stdout.decode()


def signer(run: RunReport, signature: str | None, allowed: str) -> str | None:
    """The principal of ``allowed`` (an allowed signers file) whose key made ``signature``
    over the approval of ``run``, or None: no signature, not valid for this run, or by a key
    not listed."""
    if not signature:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".sig", delete=False) as fh:
        fh.write(signature)
        path = fh.name
    try:
        found = _keygen("-Y", "find-principals", "-s", path, "-f", allowed, data=b"")
        for principal in found.stdout.decode(errors="replace").split():
            checked = _keygen("-Y", "verify", "-f", allowed, "-I", principal, "-n", NAMESPACE,
                              "-s", path, data=message(run))
            if checked.returncode == 0:
                return principal
        return None
    finally:
        os.unlink(path)
