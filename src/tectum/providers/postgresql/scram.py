"""SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677), as PostgreSQL stores them in
``pg_authid.rolpassword``: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``
(base64). A verifier is *made* by libpq (``PQencryptPasswordConn``, psycopg's
``PGconn.encrypt_password``) on the client, so the password itself never reaches the server;
this module only *checks* one (or an MD5 verifier left from before) against a password, to
see whether a role's password was changed outside tectum. The password is normalised with
SASLprep (RFC 4013) as PostgreSQL does (``src/common/saslprep.c``), falling back to the raw
bytes when SASLprep refuses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import stringprep
import unicodedata

PREFIX = "SCRAM-SHA-256$"


def saslprep(password: str) -> bytes:
    """``password`` prepared as PostgreSQL prepares it before hashing: SASLprep, or the raw
    UTF-8 bytes when the password is not valid for SASLprep (PostgreSQL's fallback)."""
    if password.isascii() and password.isprintable():
        return password.encode()
    # (PostgreSQL's order: a non-ASCII space (C.1.2) becomes a space first; only what is
    # no such space is then dropped when it maps to nothing (B.1) — U+200B is in both)
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password
                     if stringprep.in_table_c12(c) or not stringprep.in_table_b1(c))
    text = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
                  stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
                  stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
                  stringprep.in_table_a1)
    if any(check(c) for c in text for check in prohibited):
        return password.encode()
    bidi = any(stringprep.in_table_d1(c) for c in text)
    if bidi and (not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1]))
                 or any(stringprep.in_table_d2(c) for c in text)):
        return password.encode()
    return text.encode()


def verifies(verifier: str | None, password: str, role: str | None = None) -> bool:
    """Whether the stored ``verifier`` (a ``pg_authid.rolpassword`` value) was made from
    ``password``: a SCRAM-SHA-256 one, or an MD5 one (``"md5" + md5(password + role)``,
    PostgreSQL's older form; needs ``role``, the role's name). False for no verifier or one
    that cannot be parsed."""
    if verifier and role is not None and len(verifier) == 35 and verifier.startswith("md5"):
        made = "md5" + hashlib.md5((password + role).encode(),
                                   usedforsecurity=False).hexdigest()
        return hmac.compare_digest(made, verifier)
    if not verifier or not verifier.startswith(PREFIX):
        return False
    try:
        head, keys = verifier[len(PREFIX):].split("$", 1)
        iterations_text, salt_b64 = head.split(":", 1)
        stored_b64, server_b64 = keys.split(":", 1)
        iterations = int(iterations_text)
        salt = base64.b64decode(salt_b64, validate=True)
        stored_key = base64.b64decode(stored_b64, validate=True)
        server_key = base64.b64decode(server_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    if not 1 <= iterations <= 10_000_000:
        return False
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return (hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)
            and hmac.compare_digest(server, server_key))
