"""The redactor (tectum.masking): every form it documents is masked wherever a secret sits in a
longer value, and nothing else is.

Each encoding is checked on a secret *embedded* in a longer text (``"user:" + secret + ...``,
the HTTP Basic auth shape of issue 10 item 17), at every alignment the secret can have inside
the encoded text: for base64, the secret's first byte at offset 0, 1 or 2 mod 3 (the encoded
characters that depend only on the secret differ between the three); for the byte- or
character-wise encodings (hex, percent-encoding, JSON and Python string escapes) any offset.
What "masked" means is checked independently of the redactor's own code: the encoded
characters that are determined by the secret's bytes alone are computed here from the bit
positions and must be gone from the output, with :data:`MASK` in their place.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import urllib.parse
from collections.abc import Callable

import pytest

from tectum.masking import MASK, MIN_LENGTH, REDACTOR, Redactor, encodings, redact_value

# secrets of every length mod 3 (base64 works on 3-byte groups), short and long, and with the
# characters that the escaping encodings change (space, + / = & ?, quotes, backslash,
# newline, non-ASCII)
SECRETS = [
    "k3y!",                          # 4: the shortest value that is masked
    "pa55w",                         # 5
    "hunter",                        # 6
    "s3cr3t-v",                      # 8
    "canary-0123456789abcdef0123",   # 27 (the e2e canaries' shape)
    "Zm9vYmFyYmF6cXV4",              # a secret that is itself base64 text
    "a+b/c=d?e&f g~",                # what percent-encoding and base64 alphabets differ on
    'quo"te\\back\nline\ttab',       # what JSON and repr escape
    "pässwörd-ünï€😀",               # multi-byte UTF-8
]
# text before the secret: 0..5 bytes covers each base64 alignment twice
PREFIXES = ["", "u", "us", "usr", "user", "user:"]
# text after it: the last encoded characters of the secret depend on it
SUFFIXES = ["", "@", "@h", "@host.example:8443/path"]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def stable_part(encoded: str, offset: int, length: int) -> str:
    """The characters of base64 text ``encoded`` that are determined by the ``length`` bytes
    at byte ``offset`` of the encoded data alone: character ``i`` holds bits
    ``[6i, 6i + 6)``, the secret bits ``[8 offset, 8 (offset + length))``."""
    first = -(-8 * offset // 6)
    end = 8 * (offset + length) // 6
    return encoded[first:end]


# (name, encode the whole text) for the byte- and character-wise encodings: the secret's own
# encoding is a substring of the encoded text, whatever surrounds it
CHARWISE: list[tuple[str, Callable[[str], str]]] = [
    ("hex", lambda t: t.encode().hex()),
    ("HEX", lambda t: t.encode().hex().upper()),
    ("url quote", lambda t: urllib.parse.quote(t)),
    ("url quote safe=''", lambda t: urllib.parse.quote(t, safe="")),
    ("url quote_plus", lambda t: urllib.parse.quote_plus(t)),
    ("json", lambda t: json.dumps(t)[1:-1]),
    ("json ensure_ascii=False", lambda t: json.dumps(t, ensure_ascii=False)[1:-1]),
    ("python repr", lambda t: repr(t)[1:-1]),
]
CHARWISE_SELF: dict[str, Callable[[str], str]] = dict(CHARWISE)

B64: list[tuple[str, Callable[[bytes], str]]] = [
    ("base64", _b64),
    ("base64 unpadded", lambda r: _b64(r).rstrip("=")),
    ("urlsafe base64", _b64url),
    ("urlsafe base64 unpadded", lambda r: _b64url(r).rstrip("=")),
]


def redactor_of(*values: str) -> Redactor:
    r = Redactor()
    for v in values:
        r.add(v)
    return r


# -------------------------------------------------------------------------------- base64

@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("name,encode", B64, ids=[n for n, _ in B64])
def test_base64_of_a_longer_text_is_masked_at_every_alignment(
        secret: str, name: str, encode: Callable[[bytes], str]) -> None:
    r = redactor_of(secret)
    raw = secret.encode()
    seen_alignments = set()
    for prefix in PREFIXES:
        for suffix in SUFFIXES:
            text = prefix + secret + suffix
            encoded = encode(text.encode())
            offset = len(prefix.encode())
            seen_alignments.add(offset % 3)
            stable = stable_part(encode(text.encode()).rstrip("="), offset, len(raw))
            assert len(stable) >= MIN_LENGTH, (secret, prefix)
            line = f"Authorization: Basic {encoded}\n"
            shown = r.redact(line)
            assert MASK in shown, (name, prefix, suffix, secret)
            assert stable not in shown, \
                f"{name} of {prefix!r} + secret + {suffix!r}: {shown!r} shows the secret"
            assert shown.startswith("Authorization: Basic ") and shown.endswith("\n")
            # only the secret's part went: what the prefix alone determines is still there
            head = encoded[:(8 * offset) // 6]
            assert shown.startswith(f"Authorization: Basic {head}")
    assert seen_alignments == {0, 1, 2}


@pytest.mark.parametrize("alignment", [0, 1, 2])
def test_http_basic_auth_header(alignment: int) -> None:
    """Issue 10 item 17: ``base64("user:" + secret)``, with user names of each length mod 3."""
    secret = "canary-5f1e0c9a7b3d2e4f6a8c"
    user = {0: "ad:", 1: "adm:", 2: "user:"}[alignment]
    assert len(user) % 3 == alignment
    header = f"Authorization: Basic {_b64((user + secret).encode())}"
    shown = redactor_of(secret).redact(header)
    assert MASK in shown
    assert stable_part(_b64((user + secret).encode()), len(user), len(secret)) not in shown


def test_every_base64_alignment_is_a_registered_form() -> None:
    """The forms themselves: for each alignment, the stable characters (standard and URL-safe)
    are among :func:`encodings` — a redactor that knows only the value's own encoding (the
    secret at the start of the encoded text) fails here."""
    secret = "s3cr3t-with-some+length/?"
    raw = secret.encode()
    forms = encodings(secret)
    for k in range(3):
        for encode in (_b64, _b64url):
            stable = stable_part(encode(b"\0" * k + raw), k, len(raw))
            assert stable in forms or any(stable in f for f in forms), (k, stable)


# --------------------------------------------------------------- byte- and character-wise

@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("name,encode", CHARWISE, ids=[n for n, _ in CHARWISE])
def test_charwise_encodings_of_a_longer_text_are_masked(
        secret: str, name: str, encode: Callable[[str], str]) -> None:
    r = redactor_of(secret)
    own = encode(secret)
    for prefix in PREFIXES:
        for suffix in SUFFIXES:
            encoded = encode(prefix + secret + suffix)
            assert own in encoded  # what makes these encodings embeddable
            shown = r.redact(f"value={encoded};")
            assert MASK in shown, (name, prefix, suffix)
            assert own not in shown, f"{name}: {shown!r} shows the secret"
            assert shown.startswith("value=" + encode(prefix)) and shown.endswith(";")


@pytest.mark.parametrize("secret", SECRETS)
def test_plain_value_inside_text(secret: str) -> None:
    r = redactor_of(secret)
    shown = r.redact(f"before {secret} between {secret}after")
    assert shown == f"before {MASK} between {MASK}after"


def test_every_documented_form_is_registered() -> None:
    """Each encoding named in the module's docstring is in :func:`encodings` (a redactor that
    masks only the plain value fails here)."""
    secret = 'a+b/c=d?e&f g "x"\n'
    raw = secret.encode()
    forms = encodings(secret)
    for name, encode in CHARWISE:
        assert encode(secret) in forms, name
    for name, b64 in B64:
        assert b64(raw) in forms, name
    assert secret in forms


def test_secret_in_json_output_and_nested_values() -> None:
    secret = 'multi\nline "secret"'
    REDACTOR.add(secret)
    try:
        doc = json.dumps({"outputs": {"x": {"value": f"pre-{secret}"}}, "n": [1, secret]})
        assert secret not in redact_value(doc)  # type: ignore[operator]
        assert json.dumps(secret)[1:-1] not in str(redact_value(doc))
        assert MASK in str(redact_value(doc))
        nested = redact_value({"a": [f"x{secret}y", 3, {"b": secret}], "c": None})
        assert nested == {"a": [f"x{MASK}y", 3, {"b": MASK}], "c": None}
    finally:
        REDACTOR.clear()


def test_contains_sees_encoded_forms_and_holds_secret_only_plain() -> None:
    secret = "tok-9f8e7d6c5b"
    r = redactor_of(secret)
    embedded = _b64(("bearer:" + secret).encode())
    assert r.contains(embedded) and r.contains(secret.encode().hex())
    assert not r.holds_secret(embedded)  # sealing is about the plain value
    assert r.holds_secret(f"x{secret}y")
    assert not r.contains("nothing here")


# ------------------------------------------------------------------------- not too much

ORDINARY = """\
tectum will perform the following actions:

  + file.site  /etc/nginx/sites-enabled/tectum
      path: "/etc/nginx/sites-enabled/tectum"
      mode: "0644" → "0600"
  ~ service.nginx  (restart: file.site changed)

Plan: 1 to add, 1 to change, 0 to replace, 0 to destroy.
The quick brown fox jumps over the lazy dog; Sphinx of black quartz, judge my vow.
{"address": "file.site", "type": "file", "action": "update", "serial": 42}
Error: Host 'web-1' refused the key: ssh-ed25519 fingerprint SHA256:n4bQgYhMfWWaL+qgxVrQFaO
"""


def _ordinary_corpus() -> str:
    """Text tectum prints that holds no secret: plan lines, prose, JSON, digests in hex and
    base64, random base64 and hex blobs (seeded), paths."""
    rng = random.Random(10)
    parts = [ORDINARY]
    for i in range(200):
        blob = rng.randbytes(rng.randint(1, 96))
        parts.append(hashlib.sha256(blob).hexdigest())
        parts.append(_b64(hashlib.sha512(blob).digest()))
        parts.append(_b64(blob) + " " + _b64url(blob) + " " + blob.hex())
        parts.append(f"/srv/www/site-{i}/index.html")
    return "\n".join(parts)


@pytest.mark.parametrize("secret", ["k3y!", "pa55", "Ab9z", "pa55w", "xq7!k"])
def test_short_secrets_mask_nothing_in_ordinary_output(secret: str) -> None:
    """A 4- or 5-character secret (the shortest masked) leaves text that does not hold it
    unchanged: its encoded forms are specific enough not to match prose, plan lines, digests
    or unrelated base64 and hex (what is documented: the plain value is masked wherever it
    occurs, also inside a longer word)."""
    corpus = _ordinary_corpus()
    assert all(f not in corpus for f in encodings(secret)), "pick another sample secret"
    assert redactor_of(secret).redact(corpus) == corpus


def test_values_shorter_than_min_length_are_not_masked() -> None:
    """Documented: values shorter than MIN_LENGTH are not registered at all, in any form."""
    r = redactor_of("abc", "x", "")
    assert not r
    text = f"abc {_b64(b'user:abc')} {b'abc'.hex()} abcdef"
    assert r.redact(text) == text
    assert MIN_LENGTH == 4


def test_plain_value_inside_a_word_is_masked_as_documented() -> None:
    """The one documented over-mask: the plain value inside a longer word."""
    assert redactor_of("pass").redact("password: hunter") == f"{MASK}word: hunter"


def test_longest_form_wins_and_overlapping_secrets() -> None:
    r = redactor_of("abcdefgh", "abcdefghijkl")
    assert r.redact("xabcdefghijklx") == f"x{MASK}x"
    assert r.redact(_b64(b"u:abcdefghijkl")).count(MASK) == 1


def test_a_value_with_undecodable_bytes() -> None:
    """A value read with ``surrogateescape`` (bytes that are not UTF-8) is registered and
    masked in every form, without an error."""
    secret = "pw-\udcff\udcfe-tail"
    raw = secret.encode("utf-8", "surrogateescape")
    r = redactor_of(secret)
    assert r.redact(f"x{secret}x") == f"x{MASK}x"
    assert MASK in r.redact(raw.hex()) and MASK in r.redact(_b64(b"u:" + raw))
