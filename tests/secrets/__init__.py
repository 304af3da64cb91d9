"""Tests of the encrypted secrets files (tectum.secrets.store, `tectum secrets`).

Shared helpers: :func:`canary_forms` and :func:`assert_no_canary` look for a secret value in
plain, base64, hex and URL-encoded form.
"""

from __future__ import annotations

import base64
import binascii
import os
import urllib.parse
from pathlib import Path


def canary_forms(canary: str) -> list[bytes]:
    """The encodings a leaked ``canary`` could take: plain, base64 (standard and URL-safe, at
    each of the three alignments a value can have inside a longer text), hex (both cases) and
    URL-encoded (``quote``, with and without ``/`` kept, and ``quote_plus``)."""
    raw = canary.encode("utf-8")
    forms = {raw, binascii.hexlify(raw), binascii.hexlify(raw).upper(),
             urllib.parse.quote(canary).encode(), urllib.parse.quote(canary, safe="").encode(),
             urllib.parse.quote_plus(canary).encode()}
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * pad + raw).rstrip(b"=")
            # drop the characters that also depend on the neighbouring bytes
            start = (pad * 8 + 5) // 6 + (1 if pad else 0)
            core = text[start:-2]
            if len(core) >= 12:
                forms.add(core)
    return sorted(forms)


def find_canary(data: bytes | str, canary: str) -> list[bytes]:
    """The forms of ``canary`` found in ``data``."""
    blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return [form for form in canary_forms(canary) if form in blob]


def assert_no_canary(data: bytes | str, canary: str, where: str) -> None:
    found = find_canary(data, canary)
    assert not found, f"the canary leaked into {where}: {found!r}"


def assert_no_canary_in_tree(root: Path, canary: str) -> int:
    """Every file under ``root``: no form of ``canary``. Returns how many files were read."""
    count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            assert_no_canary(path.read_bytes(), canary, str(path))
            count += 1
    return count
