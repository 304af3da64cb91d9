"""Masking: every secret value this process has seen is replaced in everything it prints.

A secret enters the process from the secrets file (``secret("NAME")``), a sensitive variable,
a provider attribute declared sensitive (a generated password) or an encrypted value read back
from state; each is registered in :data:`REDACTOR`. The views pass every line through
:meth:`Redactor.redact` — plan and apply output, ``--json``, diagnostics, error messages from
hosts, progress — so a secret cannot reach the terminal by a path nobody thought of (Ansible's
``no_log`` has to be set per task; here it is the default for every value known to be secret).

A value is masked in the forms it is likely to be printed in, also where it is only part of a
longer value that was encoded as a whole (``base64("user:" + password)`` in an HTTP Basic
``Authorization`` header, a URL with the password in its query):

* as is;
* base64, standard and URL-safe, at each of the three alignments the value can have inside
  the encoded text (its first byte at offset 0, 1 or 2 mod 3): for each, the encoded characters
  that depend on the value's bytes alone (the first and last one or two characters of the
  value's stretch also depend on its neighbours, so they stay visible), and the complete
  encoding of the value by itself, with and without ``=`` padding;
* hexadecimal, lower and upper case;
* percent-encoded as :func:`urllib.parse.quote` (``/`` kept, and with nothing kept) and
  :func:`~urllib.parse.quote_plus` write it, with upper- and lower-case escapes;
* escaped as inside a JSON string (``json.dumps``, ASCII-only and not) and as inside a Python
  string literal (``repr``: a message that quotes a value with ``!r``).

Hex, percent-encoding and the escapes work character by character, so the value's own form is
part of any longer text's form. Values shorter than :data:`MIN_LENGTH` characters are not
masked at all (masking ``a`` would garble all output); do not use them as secrets. Every form of
a longer value is masked, as none is shorter than :data:`MIN_LENGTH` either (the shortest, a
4-byte value's base64 at alignment 1, has 4 stable characters). The plain value is masked
wherever it occurs, also inside a longer word (``pass`` in ``password``); an encoded form
likewise wherever it occurs, which for a 4- or 5-character secret can by chance be inside
unrelated base64 text: use long secrets.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse

MASK = "(sensitive value)"
#: secrets shorter than this are not masked in output (they still stay out of state)
MIN_LENGTH = 4


_URLSAFE = str.maketrans("+/", "-_")
_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def base64_forms(raw: bytes) -> set[str]:
    """The base64 forms of ``raw`` (standard and URL-safe): its complete encoding, with and
    without padding, and for each alignment ``k`` (0, 1, 2: the bytes before it in the encoded
    text, mod 3) the characters that only ``raw``'s bytes determine. Character ``i`` of an
    encoding holds bits ``[6i, 6i + 6)``; ``raw`` holds bits ``[8k, 8(k + n))``, so the
    characters ``ceil(8k / 6)`` up to (not including) ``floor(8(k + n) / 6)`` are its own."""
    forms: set[str] = set()
    whole = base64.b64encode(raw).decode()
    forms |= {whole, whole.rstrip("=")}
    for k in range(3):
        encoded = base64.b64encode(b"\0" * k + raw).decode()
        forms.add(encoded[-(-8 * k // 6):8 * (k + len(raw)) // 6])
    return forms | {f.translate(_URLSAFE) for f in forms}


def encodings(value: str) -> set[str]:
    """The forms of ``value`` that are masked (see the module's docstring): plain; base64
    (:func:`base64_forms`); hex (lower and upper case); percent-encoded (``quote`` with ``/``
    kept and with nothing kept, ``quote_plus``; upper- and lower-case escapes); JSON and Python
    string escapes. Forms shorter than :data:`MIN_LENGTH` are left out (none, for a value at
    least that long)."""
    raw = value.encode("utf-8", "surrogateescape")
    forms = {value, raw.hex(), raw.hex().upper()}
    for quoted in (urllib.parse.quote(raw), urllib.parse.quote(raw, safe=""),
                   urllib.parse.quote_plus(raw)):
        forms.add(quoted)
        forms.add(_ESCAPE.sub(lambda m: m[0].lower(), quoted))
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(repr(value)[1:-1])
    forms |= base64_forms(raw)
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
