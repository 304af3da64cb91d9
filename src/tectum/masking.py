"""Masking: every secret value this process has seen is replaced in everything it prints.

A secret enters the process from the secrets file (``secret("NAME")``), a sensitive variable,
a provider attribute declared sensitive (a generated password) or an encrypted value read back
from state; each is registered in :data:`REDACTOR`. The views pass every line through
:meth:`Redactor.redact` — plan and apply output, ``--json``, diagnostics, error messages from
hosts, progress — so a secret cannot reach the terminal by a path nobody thought of (Ansible's
``no_log`` has to be set per task; here it is the default for every value known to be secret).

A value is masked in the forms it is likely to be printed in: as is, base64 (standard and
URL-safe), hexadecimal (either case) and URL-encoded. Values shorter than :data:`MIN_LENGTH`
characters are not masked (masking ``a`` would garble all output); do not use them as secrets.
"""

from __future__ import annotations

import base64
import re
import threading
import urllib.parse

MASK = "(sensitive value)"
#: secrets shorter than this are not masked in output (they still stay out of state)
MIN_LENGTH = 4


def encodings(value: str) -> set[str]:
    """The forms of ``value`` that are masked: plain, base64 (standard, URL-safe, with and
    without padding), hex (lower and upper case) and URL-encoded (``quote`` and
    ``quote_plus``)."""
    raw = value.encode("utf-8", "surrogateescape")
    forms = {value, raw.hex(), raw.hex().upper(), urllib.parse.quote(value, safe=""),
             urllib.parse.quote_plus(value)}
    for enc in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.add(enc)
        forms.add(enc.rstrip("="))
    return {f for f in forms if len(f) >= MIN_LENGTH}


class Redactor:
    """The set of secret values known to this process (thread-safe)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._forms)

    def add(self, value: str) -> None:
        """Register ``value`` (a secret, or a string built from one)."""
        if not isinstance(value, str) or len(value) < MIN_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            self._forms |= encodings(value)
            self._pattern = None

    def _compiled(self) -> re.Pattern[str]:
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                forms = sorted(self._forms, key=len, reverse=True)
                pattern = re.compile("|".join(re.escape(f) for f in forms))
                self._pattern = pattern
        return pattern

    def values(self) -> list[str]:
        """The registered secrets (to seal into a document that must mask them later)."""
        with self._lock:
            return sorted(self._values)

    def contains(self, text: str) -> bool:
        """Whether ``text`` holds a registered secret (in any masked form)."""
        return bool(self._forms) and self._compiled().search(text) is not None

    def holds_secret(self, text: str) -> bool:
        """Whether ``text`` holds a registered secret in plain form (what must not be stored
        or sent on a command line)."""
        return bool(self._values) and any(v in text for v in self._values)

    def redact(self, text: str) -> str:
        """``text`` with every registered secret (in every masked form) replaced by
        :data:`MASK`."""
        if not self._forms:
            return text
        return self._compiled().sub(MASK, text)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._forms.clear()
            self._pattern = None


#: the process-wide registry the views mask with
REDACTOR = Redactor()


def redact_value(value: object) -> object:
    """``value`` (a string, or lists/dicts of them) with every secret masked."""
    if isinstance(value, str):
        return REDACTOR.redact(value)
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    return value
