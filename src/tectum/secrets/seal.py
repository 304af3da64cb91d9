"""Secret values at rest: sealed (age-encrypted) in state, the journal and saved plans.

Before tectum stores a document (a state version, a journal record, the desired state kept with a
version, a plan file), every string in it that holds a registered secret
(:data:`tectum.masking.REDACTOR`) is replaced by ``{"tectum-sealed": BASE64}``: the string
encrypted with age (pyrage) to the workspace's recipients — those of ``secrets/ENV.yaml``, or,
without one, the public key of the user's own identity. Reading back decrypts with the user's
identity (``TECTUM_AGE_KEY`` / ``TECTUM_AGE_KEY_FILE`` / ...; see :mod:`tectum.secrets.store`) and
registers the value for masking again. Terraform keeps such values in plaintext state; Pulumi
encrypts them per stack — this is Pulumi's model with age keys.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.masking import REDACTOR

SEALED = "tectum-sealed"


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(SEALED), str)


def has_sealed(value: Any) -> bool:
    """Whether any sealed value is inside ``value``."""
    if is_sealed(value):
        return True
    if isinstance(value, dict):
        return any(has_sealed(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_sealed(v) for v in value)
    return False


def walk(value: Any, fn: Callable[[Any], Any | None]) -> Any:
    """``value`` rebuilt with ``fn`` applied bottom-up where it returns non-None."""
    got = fn(value)
    if got is not None:
        return got
    if isinstance(value, dict):
        return {k: walk(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [walk(v, fn) for v in value]
    return value


class Sealer:
    """Seals and unseals values for one project's workspace ``env``."""

    def __init__(self, project_root: str, env: str) -> None:
        self.project_root = project_root
        self.env = env
        self._recipients: list[Any] | None = None
        self._identities: list[Any] | None = None

    def recipients(self) -> list[Any]:
        if self._recipients is None:
            from tectum.secrets.store import (
                SecretsError,
                SecretsFile,
                load_keyring,
                parse_recipient,
                secrets_path,
            )

            path = secrets_path(self.project_root, self.env)
            try:
                if os.path.exists(path):
                    texts = SecretsFile.load(path).recipients
                else:
                    texts = list(load_keyring().public_keys)
                self._recipients = [parse_recipient(t) for t in texts]
            except SecretsError as exc:
                raise DiagnosticError(exc.diagnostic()) from None
            if not self._recipients:
                raise DiagnosticError(Diagnostic.error(
                    "No key to encrypt secrets at rest",
                    "A sensitive value must be stored (state, journal or plan file), and it is "
                    f"stored encrypted, but {path} does not exist and no identity of yours was "
                    "found. Run `tectum secrets keygen` and `tectum secrets init`."))
        return self._recipients

    def identities(self) -> list[Any]:
        if self._identities is None:
            from tectum.secrets.store import SecretsError, load_identities

            try:
                self._identities = list(load_identities())
            except SecretsError as exc:
                raise DiagnosticError(exc.diagnostic()) from None
        return self._identities

    def seal_value(self, text: str) -> dict[str, str]:
        import pyrage

        data = pyrage.encrypt(text.encode("utf-8", "surrogateescape"), self.recipients())
        return {SEALED: base64.b64encode(data).decode()}

    def seal(self, value: Any) -> Any:
        """``value`` with every string that holds a registered secret sealed."""
        if not REDACTOR:
            return value

        def fn(v: Any) -> Any | None:
            if isinstance(v, str) and REDACTOR.holds_secret(v):
                return self.seal_value(v)
            return None

        return walk(value, fn)

    def unseal(self, value: Any, where: str = "state") -> Any:
        """``value`` with every sealed string decrypted (and registered for masking).
        Raises :class:`DiagnosticError` when the user holds no key that opens them."""
        if not has_sealed(value):
            return value
        import pyrage

        def fn(v: Any) -> Any | None:
            if not is_sealed(v):
                return None
            try:
                text = pyrage.decrypt(base64.b64decode(v[SEALED]),
                                      self.identities()).decode("utf-8", "surrogateescape")
            except (pyrage.DecryptError, ValueError) as exc:
                raise DiagnosticError(Diagnostic.error(
                    "Cannot decrypt a sensitive value",
                    f"The {where} holds a sensitive value encrypted to the recipients of "
                    f"workspace {self.env!r}, and none of your identities can decrypt it "
                    f"({exc}). Set TECTUM_AGE_KEY_FILE to a key that is a recipient "
                    "(`tectum secrets recipients list`).")) from None
            REDACTOR.add(text)
            REDACTOR.add(json.dumps(text)[1:-1])  # as it shows inside JSON output
            return text

        return walk(value, fn)
