"""Encrypted secrets files: ``secrets/ENV.yaml`` in the project, one per environment.

Keys stay readable; every value is encrypted with age (https://age-encryption.org) through the
``pyrage`` bindings — tectum has no cryptography of its own. The layout follows SOPS:

* Each file has a **data key**: an age X25519 identity made for this file
  (``pyrage.x25519.Identity.generate()``). Every value is age-encrypted to the data key's
  public recipient.
* The data key itself is age-encrypted to every **recipient** listed in the file: age public
  keys (``age1...``) and SSH ed25519 public keys (``ssh-ed25519 AAAA... [comment]``). Anyone
  holding the private key of one recipient can open the data key, and with it every value.
* A **MAC** (HMAC-SHA256, keyed from the data key) covers a canonical serialization of the
  format version, the sorted recipients, the encrypted data key and every (key, ciphertext)
  pair. An edited value, a value moved to another key, a removed or added value, a removed or
  altered MAC, and a recipients list changed without re-encryption are all refused. The MAC is
  checked before any value is decrypted and before any change is made.

The file (YAML, ciphertexts base64-encoded)::

    # (a comment saying what the file is)
    secrets:
      DB_PASSWORD: YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBy...
    tectum:
      version: 1
      recipients:
      - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB... alice@laptop
      data_key: YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBh...
      mac: 5d1f0c...  (64 hex digits)

Removing a recipient **rotates** the data key: a new data key is made, every value is
re-encrypted to it and the new data key is encrypted to the remaining recipients only, so the
removed key cannot read any version written after its removal (it can still read the versions
in version control that it could read before: rotate the secrets themselves for that).

The private key (identity) never comes from the repository; :func:`load_keyring` looks for it
in the same places SOPS does for age (``SOPS_AGE_KEY``, ``SOPS_AGE_KEY_FILE``,
``~/.config/sops/age/keys.txt``), with tectum's names:

1. ``TECTUM_AGE_KEY``: the identity itself (``AGE-SECRET-KEY-1...``; several, one a line, may
   be given);
2. ``TECTUM_AGE_KEY_FILE``: the path of an age key file (``#`` lines are comments, as
   ``age-keygen`` writes them) or of an unencrypted OpenSSH ed25519 private key;
3. ``$XDG_CONFIG_HOME/tectum/age/keys.txt`` (``~/.config/tectum/age/keys.txt``);
4. ``~/.ssh/id_ed25519``.

The first of these that is set (or exists) is used. Errors are :class:`SecretsError`; its
message is a complete diagnostic (which file, what is wrong, what to do) and never contains a
secret value or a private key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# (yaml is imported where a file is parsed or written: every tectum process loads this
# module, and importing yaml costs one ~9 ms)
import pyrage  # type: ignore[import-untyped, unused-ignore]

from tectum.diagnostics import Diagnostic

__all__ = [
    "FORMAT_VERSION",
    "SECRETS_DIR",
    "Identity",
    "Keyring",
    "Recipient",
    "SecretsError",
    "SecretsFile",
    "default_key_file",
    "generate_identity",
    "load_identities",
    "load_keyring",
    "load_secrets",
    "normalize_recipient",
    "parse_plaintext_yaml",
    "parse_recipient",
    "plaintext_yaml",
    "secrets_path",
    "valid_env",
    "valid_key",
]

FORMAT_VERSION = 1
"""The version of the file format written (and the newest one read)."""

SECRETS_DIR = "secrets"
"""The directory, under the project root, that holds ``ENV.yaml`` files."""

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_ENV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_MAC_RE = re.compile(r"[0-9a-f]{64}\Z")
_AGE_IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
_SSH_PRIVATE_MARK = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_MAC_KEY_INFO = b"tectum-secrets/v1/mac-key"
_MAC_DOMAIN = b"tectum-secrets/v1/mac\n"

_HEADER = (
    "# tectum secrets file. Keys are readable; every value is encrypted with age\n"
    "# (https://age-encryption.org). Change it only with `tectum secrets` (set, edit, rm,\n"
    "# recipients, rotate): a MAC over the whole file refuses hand edits, moved and removed\n"
    "# values. See docs/secrets.md.\n"
)


class Identity(Protocol):
    """An age identity (private key) from pyrage: ``pyrage.x25519.Identity`` or
    ``pyrage.ssh.Identity``."""


class Recipient(Protocol):
    """An age recipient (public key) from pyrage: ``pyrage.x25519.Recipient`` or
    ``pyrage.ssh.Recipient``."""


class SecretsError(Exception):
    """A problem with a secrets file or a key, for the user.

    ``str(error)`` (and ``error.detail``) is the complete diagnostic: which file, what is wrong,
    what to do. ``error.summary`` is a short title for it ("The secrets file was modified").
    Neither ever contains a secret value or a private key. :meth:`diagnostic` gives the same as
    a :class:`tectum.diagnostics.Diagnostic` (severity error) for the CLI and the engine.
    """

    def __init__(self, detail: str, summary: str = "Secrets error") -> None:
        super().__init__(detail)
        self.detail = detail
        self.summary = summary

    def diagnostic(self) -> Diagnostic:
        return Diagnostic.error(self.summary, self.detail)


# -- names -----------------------------------------------------------------------------------


def valid_key(key: str) -> bool:
    """Whether ``key`` may name a secret: ``[A-Za-z_][A-Za-z0-9_.-]*`` (dotted names for
    nesting, e.g. ``db.password``)."""
    return bool(_KEY_RE.match(key))


def valid_env(env: str) -> bool:
    """Whether ``env`` may name an environment (and so the file ``secrets/ENV.yaml``): letters,
    digits, ``_``, ``.`` and ``-``, not starting with ``.`` or ``-`` (never a path)."""
    return bool(_ENV_RE.match(env))


def _check_key(key: str, where: str) -> None:
    if not valid_key(key):
        raise SecretsError(
            f"{where}: {key!r} is not a valid secret name. Use letters, digits, '_', '.' and "
            "'-', starting with a letter or '_' (e.g. DB_PASSWORD or db.password).",
            "Invalid secret name")


def secrets_path(project_root: str, env: str) -> str:
    """The secrets file of ``env`` in the project: ``PROJECT_ROOT/secrets/ENV.yaml``.

    Raises :class:`SecretsError` for an ``env`` that is not a valid name (see
    :func:`valid_env`), so that it can never point outside ``secrets/``.
    """
    if not valid_env(env):
        raise SecretsError(
            f"{env!r} is not a valid environment name for a secrets file: use letters, digits, "
            "'_', '.' and '-', starting with a letter or digit.", "Invalid environment name")
    return os.path.join(project_root, SECRETS_DIR, f"{env}.yaml")


# -- recipients ------------------------------------------------------------------------------


def normalize_recipient(text: str) -> str:
    """The canonical text of a recipient: ``age1...`` (lower case), or
    ``ssh-ed25519 BASE64`` followed by its comment if it has one (single spaces).

    Raises :class:`SecretsError` for anything else (an ``ssh-rsa`` key, a private key, a typo).
    The text is never repeated in the message: a pasted private key must not be printed.
    """
    fields = text.strip().split(None, 2)
    if not fields:
        raise SecretsError("A recipient is empty: give an age public key (age1...) or an SSH "
                           "public key (ssh-ed25519 AAAA...).", "Invalid recipient")
    kind = fields[0]
    if kind.upper().startswith("AGE-SECRET-KEY-") or "PRIVATE KEY" in text:
        raise SecretsError(
            "A recipient is a private key, not a public one. Never share or commit it; give "
            "its public key instead (`age-keygen -y KEYFILE` prints it, or "
            "`tectum secrets keygen` printed it when it made the key).", "Invalid recipient")
    if kind.lower().startswith("age1") and len(fields) == 1:
        normalized = kind.lower()
        _parse_one(normalized)
        return normalized
    if kind == "ssh-ed25519" and len(fields) >= 2:
        normalized = " ".join(fields)
        _parse_one(normalized)
        return normalized
    if kind.startswith("ssh-") or kind.startswith("ecdsa-"):
        raise SecretsError(
            f"A recipient is an SSH key of type {kind.split()[0][:40]!r}: only ssh-ed25519 SSH "
            "keys can be recipients (or age keys, age1...).", "Invalid recipient")
    raise SecretsError(
        "A recipient is neither an age public key (age1..., from `age-keygen -y`) nor an SSH "
        "ed25519 public key (ssh-ed25519 AAAA..., the line of ~/.ssh/id_ed25519.pub).",
        "Invalid recipient")


def _recipient_id(text: str) -> str:
    """What identifies a recipient: the key without an SSH key's comment."""
    return " ".join(text.split()[:2])


def _parse_one(normalized: str) -> Recipient:
    try:
        if normalized.startswith("age1"):
            rec: Recipient = pyrage.x25519.Recipient.from_str(normalized)
        else:
            rec = pyrage.ssh.Recipient.from_str(_recipient_id(normalized))
    except pyrage.RecipientError:
        raise SecretsError(
            "A recipient looks like a public key but is not a valid one (mistyped or cut "
            "short?). Copy it again from `age-keygen -y KEYFILE` or the .pub file.",
            "Invalid recipient") from None
    return rec


def parse_recipient(text: str) -> Recipient:
    """A pyrage recipient from ``age1...`` or ``ssh-ed25519 AAAA... [comment]`` (see
    :func:`normalize_recipient` for the errors)."""
    return _parse_one(normalize_recipient(text))


# -- identities ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyring:
    """The user's private keys and where they came from.

    ``identities``: pyrage identities; ``public_keys``: the recipient text of each identity
    whose public key is known (``age1...``, ``ssh-ed25519 AAAA...``); ``source``: where they
    were found, for messages (``TECTUM_AGE_KEY_FILE=/home/me/key.txt``).
    """

    identities: tuple[Identity, ...]
    public_keys: tuple[str, ...]
    source: str

    @classmethod
    def of(cls, identities: Keyring | Sequence[Identity]) -> Keyring:
        """A keyring for ``identities`` (a keyring is returned as it is)."""
        if isinstance(identities, Keyring):
            return identities
        publics = []
        for ident in identities:
            to_public = getattr(ident, "to_public", None)
            if to_public is not None:
                publics.append(str(to_public()))
        return cls(tuple(identities), tuple(publics), "the identities given")


def default_key_file(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_CONFIG_HOME/tectum/age/keys.txt``, by default ``~/.config/tectum/age/keys.txt``
    (where SOPS keeps ``sops/age/keys.txt``)."""
    env = os.environ if environ is None else environ
    config = env.get("XDG_CONFIG_HOME") or os.path.join(_home(env), ".config")
    return os.path.join(config, "tectum", "age", "keys.txt")


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def generate_identity() -> tuple[str, str]:
    """A new age X25519 key pair: ``(identity, public_key)`` as text (``AGE-SECRET-KEY-1...``,
    ``age1...``)."""
    ident = pyrage.x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def load_keyring(environ: Mapping[str, str] | None = None) -> Keyring:
    """The user's identities, looked up as SOPS looks up age keys (``SOPS_AGE_KEY``,
    ``SOPS_AGE_KEY_FILE``, then the default key file), the first that is present:

    1. ``TECTUM_AGE_KEY``: identities as text (``AGE-SECRET-KEY-1...``, one a line; ``#``
       lines are comments), or the text of an OpenSSH ed25519 private key;
    2. ``TECTUM_AGE_KEY_FILE``: the path of an age key file (as ``age-keygen`` writes it) or of
       an unencrypted OpenSSH ed25519 private key;
    3. ``$XDG_CONFIG_HOME/tectum/age/keys.txt`` (default ``~/.config/tectum/age/keys.txt``);
    4. ``~/.ssh/id_ed25519``.

    Never from the repository. ``environ`` defaults to :data:`os.environ` (``HOME`` and
    ``XDG_CONFIG_HOME`` are read from it too).

    Raises :class:`SecretsError` when none is found, when a named file cannot be read, or when
    it holds something that is not an identity (the message never quotes the key material).
    """
    env = os.environ if environ is None else environ
    text = env.get("TECTUM_AGE_KEY", "")
    if text.strip():
        return _parse_identities(text.encode(), "TECTUM_AGE_KEY", None)
    path = env.get("TECTUM_AGE_KEY_FILE", "")
    if path:
        source = f"TECTUM_AGE_KEY_FILE={path}"
        return _parse_identities(_read_key_file(path, source), source, path)
    default = default_key_file(env)
    if os.path.exists(default):
        return _parse_identities(_read_key_file(default, default), default, default)
    ssh_key = os.path.join(_home(env), ".ssh", "id_ed25519")
    if os.path.exists(ssh_key):
        return _parse_identities(_read_key_file(ssh_key, ssh_key), ssh_key, ssh_key)
    raise SecretsError(
        "No private key found to open secrets files. tectum looks, in this order, at "
        "TECTUM_AGE_KEY (the key itself), TECTUM_AGE_KEY_FILE (a key file), "
        f"{default} and {ssh_key}. Make a key with `tectum secrets keygen` (or "
        f"`age-keygen -o {default}`), then ask a recipient of the secrets file to add its "
        "public key with `tectum secrets recipients add PUBLIC_KEY`.",
        "No private key found")


def load_identities(environ: Mapping[str, str] | None = None) -> list[Identity]:
    """The user's identities (see :func:`load_keyring` for the lookup and the errors)."""
    return list(load_keyring(environ).identities)


def _read_key_file(path: str, source: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise SecretsError(
            f"Cannot read the private key file {path} (from {source}): "
            f"{exc.strerror or exc}. Point TECTUM_AGE_KEY_FILE at a readable age key file or "
            "OpenSSH ed25519 private key.", "Cannot read the private key") from None


def _parse_identities(data: bytes, source: str, path: str | None) -> Keyring:
    if _SSH_PRIVATE_MARK in data:
        return _parse_ssh_identity(data, source, path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretsError(
            f"{source} is not an age key file (it is not text) nor an OpenSSH private key.",
            "Invalid private key") from None
    identities: list[Identity] = []
    publics: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.upper().startswith(_AGE_IDENTITY_PREFIX):
            what = ("an age plugin identity, which tectum does not support"
                    if line.upper().startswith("AGE-PLUGIN-") else "not an age identity")
            raise SecretsError(
                f"Line {number} of {source} is {what}: an age key file holds lines "
                f"{_AGE_IDENTITY_PREFIX}... (and # comments), as `age-keygen` writes them.",
                "Invalid private key")
        try:
            ident = pyrage.x25519.Identity.from_str(line.upper())
        except pyrage.IdentityError:
            raise SecretsError(
                f"Line {number} of {source} looks like an age identity but is not a valid one "
                "(cut short or mistyped?).", "Invalid private key") from None
        identities.append(ident)
        publics.append(str(ident.to_public()))
    if not identities:
        raise SecretsError(
            f"{source} holds no age identity (no line {_AGE_IDENTITY_PREFIX}...).",
            "Invalid private key")
    return Keyring(tuple(identities), tuple(publics), source)


def _parse_ssh_identity(data: bytes, source: str, path: str | None) -> Keyring:
    public = _ssh_public_key(data)
    if public is not None and not public.startswith("ssh-ed25519 "):
        raise SecretsError(
            f"{source} is an SSH key of type {public.split()[0]!r}: tectum uses ssh-ed25519 "
            "SSH keys (or age keys). Make one with `ssh-keygen -t ed25519` or "
            "`tectum secrets keygen`.", "Unsupported private key")
    try:
        ident: Identity = pyrage.ssh.Identity.from_buffer(data)
    except pyrage.IdentityError as exc:
        if "decrypted" in str(exc) or "passphrase" in str(exc).lower():
            raise SecretsError(
                f"{source} is a passphrase-protected SSH key, which tectum cannot use. Use an "
                "age key (`tectum secrets keygen`) or an SSH ed25519 key without a passphrase "
                "kept only for this purpose.", "Unsupported private key") from None
        raise SecretsError(f"{source} is not a valid OpenSSH ed25519 private key.",
                           "Invalid private key") from None
    if public is None and path is not None:
        public = _read_pub_file(path + ".pub")
    return Keyring((ident,), (public,) if public else (), source)


def _ssh_public_key(data: bytes) -> str | None:
    """The public key (``ssh-ed25519 BASE64``) stored in clear in the header of an OpenSSH
    private key file (format ``openssh-key-v1``: magic, cipher, kdf, kdf options, key count,
    then the public key blobs), or None when it cannot be read."""
    try:
        text = data.decode("ascii")
        body = text.split("-----BEGIN OPENSSH PRIVATE KEY-----", 1)[1]
        body = body.split("-----END OPENSSH PRIVATE KEY-----", 1)[0]
        raw = base64.b64decode("".join(body.split()), validate=True)
        magic = b"openssh-key-v1\x00"
        if not raw.startswith(magic):
            return None
        pos = len(magic)
        for _ in range(3):  # ciphername, kdfname, kdfoptions
            (length,) = struct.unpack(">I", raw[pos:pos + 4])
            pos += 4 + length
        (count,) = struct.unpack(">I", raw[pos:pos + 4])
        pos += 4
        if count < 1:
            return None
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        blob = raw[pos + 4:pos + 4 + length]
        (tlen,) = struct.unpack(">I", blob[:4])
        kind = blob[4:4 + tlen].decode("ascii")
        return f"{kind} {base64.b64encode(blob).decode('ascii')}"
    except (ValueError, IndexError, struct.error, UnicodeDecodeError):
        return None


def _read_pub_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return " ".join(fh.read().split()[:2]) or None
    except (OSError, UnicodeDecodeError):
        return None


# -- the file --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _mac_key(data_identity: str) -> bytes:
    return hmac.new(data_identity.encode("ascii"), _MAC_KEY_INFO, hashlib.sha256).digest()


def _mac(data_identity: str, version: int, recipients: Iterable[str], data_key: str,
         values: Mapping[str, str]) -> str:
    """HMAC-SHA256 over the canonical JSON of everything in the file but the MAC itself."""
    doc = {
        "version": version,
        "recipients": sorted(recipients),
        "data_key": data_key,
        "secrets": sorted(values.items()),
    }
    payload = _MAC_DOMAIN + json.dumps(doc, sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=True).encode("ascii")
    return hmac.new(_mac_key(data_identity), payload, hashlib.sha256).hexdigest()


class SecretsFile:
    """One encrypted secrets file (``secrets/ENV.yaml``), in memory.

    Make one with :meth:`create` (a new file) or :meth:`load` (an existing one); write it with
    :meth:`save`. Everything that reads or changes values takes the user's ``identities``
    (a :class:`Keyring` from :func:`load_keyring`, or a sequence of pyrage identities), opens
    the data key with them and checks the MAC first: a file that fails the check is never
    decrypted nor changed. :meth:`keys` and :attr:`recipients` need no key (they are readable
    in the file) but are not verified.

    ``display`` is the name used in messages (``secrets/prod.yaml``); it defaults to ``path``.
    """

    def __init__(self, path: str, *, display: str, version: int, recipients: list[str],
                 data_key: str, values: dict[str, str], mac: str,
                 digest: bytes | None) -> None:
        self.path = path
        self.display = display
        self.version = version
        self._recipients = recipients
        self._data_key = data_key  # base64 of the age ciphertext of the data identity
        self._values = values  # key -> base64 of the age ciphertext of the value
        self._mac = mac
        self._digest = digest  # sha256 of the file as read (None: not on disk yet)
        self._data_identity: str | None = None  # the opened data key, after a verified MAC

    # -- making and reading ------------------------------------------------------------------
    @classmethod
    def create(cls, path: str, recipients: Iterable[str], *,
               display: str | None = None) -> SecretsFile:
        """A new, empty secrets file for ``recipients`` (``age1...`` / ``ssh-ed25519 ...``
        texts, at least one), with a fresh data key. Nothing is written until :meth:`save`.

        Raises :class:`SecretsError` if ``path`` exists already, if there is no recipient, or
        for an invalid recipient.
        """
        name = display or path
        if os.path.lexists(path):
            raise SecretsError(
                f"{name} exists already. Change it with `tectum secrets set`, `edit` or "
                "`recipients add`; delete it yourself first to start over.",
                "The secrets file exists")
        normalized = _normalize_all(recipients, name)
        if not normalized:
            raise SecretsError(f"{name}: a secrets file needs at least one recipient.",
                               "No recipients")
        data_identity = str(pyrage.x25519.Identity.generate())
        data_key = _b64(pyrage.encrypt(data_identity.encode("ascii"),
                                       [_parse_one(r) for r in normalized]))
        values: dict[str, str] = {}
        mac = _mac(data_identity, FORMAT_VERSION, normalized, data_key, values)
        new = cls(path, display=name, version=FORMAT_VERSION, recipients=normalized,
                  data_key=data_key, values=values, mac=mac, digest=None)
        new._data_identity = data_identity
        return new

    @classmethod
    def load(cls, path: str, *, display: str | None = None) -> SecretsFile:
        """Read and check the structure of the secrets file at ``path`` (nothing is
        decrypted: that needs identities, see :meth:`decrypt`).

        Raises :class:`SecretsError` if it is missing or unreadable, not YAML, truncated, not
        a tectum secrets file, of a newer format version, or structurally damaged.
        """
        name = display or path
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise SecretsError(
                f"{name} does not exist. Create it with `tectum secrets init` (with --env for "
                "another environment).", "No secrets file") from None
        except OSError as exc:
            raise SecretsError(f"Cannot read {name}: {exc.strerror or exc}.",
                               "Cannot read the secrets file") from None
        return cls._parse(path, name, raw)

    @classmethod
    def _parse(cls, path: str, name: str, raw: bytes) -> SecretsFile:
        restore = "Restore it from version control."

        def damaged(what: str) -> SecretsError:
            return SecretsError(f"{name}: {what}. {restore}", "Damaged secrets file")

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise damaged("this is not a text file, so not a tectum secrets file (damaged, "
                          "or overwritten with something else)") from None
        import yaml  # type: ignore[import-untyped, unused-ignore]

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise damaged(f"this is not valid YAML{where}: the file is damaged or truncated"
                          ) from None
        if not isinstance(doc, dict) or "tectum" not in doc:
            what = "empty" if not doc else "not a tectum secrets file"
            raise damaged(f"the file is {what} (there is no `tectum:` section with the "
                          "version, recipients, data key and MAC; it may be truncated)")
        extra = sorted(str(k) for k in doc if k not in ("tectum", "secrets"))
        if extra:
            raise damaged(f"unexpected top-level entries {', '.join(extra)}: a tectum secrets "
                          "file holds only `secrets:` and `tectum:` (the file was edited "
                          "outside `tectum secrets`)")
        meta = doc["tectum"]
        if not isinstance(meta, dict):
            raise damaged("the `tectum:` section is not a mapping")
        version = meta.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise damaged("the `tectum:` section has no valid format version")
        if version > FORMAT_VERSION:
            raise SecretsError(
                f"{name} has format version {version}, made by a newer tectum (this one reads "
                f"version {FORMAT_VERSION} and older). Upgrade tectum.",
                "Secrets file from a newer tectum")
        extra = sorted(str(k) for k in meta
                       if k not in ("version", "recipients", "data_key", "mac"))
        if extra:
            raise damaged(f"unexpected entries {', '.join(extra)} in the `tectum:` section")
        if "mac" not in meta or meta["mac"] in (None, ""):
            raise SecretsError(
                f"{name}: the MAC is missing: the file was edited outside `tectum secrets` or "
                f"is truncated, and its values cannot be trusted. {restore}",
                "The secrets file was modified")
        mac = meta["mac"]
        if not isinstance(mac, str) or not _MAC_RE.match(mac):
            raise SecretsError(
                f"{name}: the MAC is not valid (64 hex digits expected): the file was edited "
                f"outside `tectum secrets`. {restore}", "The secrets file was modified")
        recipients = meta.get("recipients")
        if (not isinstance(recipients, list) or not recipients
                or not all(isinstance(r, str) and r.strip() for r in recipients)):
            raise damaged("the `tectum:` section has no list of recipients")
        data_key = meta.get("data_key")
        if not isinstance(data_key, str) or not _is_b64(data_key):
            raise damaged("the encrypted data key is missing or not base64")
        values = doc.get("secrets")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise damaged("`secrets:` is not a mapping of names to encrypted values")
        for key, ct in values.items():
            if not isinstance(key, str) or not valid_key(key):
                raise damaged("a name under `secrets:` is not a valid secret name")
            if not isinstance(ct, str) or not _is_b64(ct):
                raise damaged(f"the value of {key} is not an encrypted value (base64)")
        return cls(path, display=name, version=version, recipients=list(recipients),
                   data_key=data_key, values=dict(values), mac=mac,
                   digest=hashlib.sha256(raw).digest())

    # -- readable without a key --------------------------------------------------------------
    @property
    def recipients(self) -> list[str]:
        """The recipients as listed in the file (not verified without :meth:`verify`)."""
        return list(self._recipients)

    def keys(self) -> list[str]:
        """The names of the secrets, sorted (not verified without :meth:`verify`)."""
        return sorted(self._values)

    # -- opening -----------------------------------------------------------------------------
    def verify(self, identities: Keyring | Sequence[Identity]) -> None:
        """Open the data key with ``identities`` and check the MAC.

        Raises :class:`SecretsError` when none of the identities is a recipient, when the
        recipients list does not match the encrypted data key, or when the MAC does not match
        (a value edited, moved, added or removed; the recipients list changed).
        """
        self._open(Keyring.of(identities))

    def _open(self, keyring: Keyring) -> str:
        if self._data_identity is not None:
            return self._data_identity
        name = self.display
        try:
            plain = pyrage.decrypt(base64.b64decode(self._data_key), list(keyring.identities))
        except pyrage.DecryptError as exc:
            raise self._cannot_open(keyring, str(exc)) from None
        try:
            data_identity = str(plain.decode("ascii")).strip()
            pyrage.x25519.Identity.from_str(data_identity)
        except (UnicodeDecodeError, pyrage.IdentityError):
            raise SecretsError(
                f"{name}: the encrypted data key does not hold a key: the file was edited "
                "outside `tectum secrets`. Restore it from version control.",
                "The secrets file was modified") from None
        expected = _mac(data_identity, self.version, self._recipients, self._data_key,
                        self._values)
        if not hmac.compare_digest(expected, self._mac):
            raise SecretsError(
                f"{name}: the MAC does not match: the file was edited outside "
                "`tectum secrets`, or a value was changed, moved or removed, or the recipients "
                "list was changed without re-encryption. Its values cannot be trusted and "
                "nothing was changed. Restore it from version control.",
                "The secrets file was modified")
        self._data_identity = data_identity
        return data_identity

    def _cannot_open(self, keyring: Keyring, reason: str) -> SecretsError:
        name = self.display
        listed = {_recipient_id(r) for r in self._recipients}
        mine = [p for p in keyring.public_keys if _recipient_id(p) in listed]
        if mine:
            return SecretsError(
                f"{name}: your key {mine[0]} is listed as a recipient but cannot open the "
                "data key: the recipients list was changed without re-encrypting the file "
                "(edited outside `tectum secrets`). Restore it from version control.",
                "The secrets file was modified")
        if "no matching keys" not in reason.lower():
            return SecretsError(
                f"{name}: the encrypted data key is damaged and cannot be opened. Restore the "
                "file from version control.", "Damaged secrets file")
        yours = (f" (public key{'s' if len(keyring.public_keys) > 1 else ''} "
                 f"{', '.join(keyring.public_keys)})" if keyring.public_keys else "")
        return SecretsError(
            f"None of your identities (from {keyring.source}){yours} is a recipient of "
            f"{name}. Its recipients are: {', '.join(self._recipients)}. Ask one of them to "
            "run `tectum secrets recipients add YOUR_PUBLIC_KEY`, or point "
            "TECTUM_AGE_KEY_FILE at the right key.", "Not a recipient")

    def _decrypt_value(self, data_identity: str, key: str) -> str:
        ident = pyrage.x25519.Identity.from_str(data_identity)
        try:
            plain = pyrage.decrypt(base64.b64decode(self._values[key]), [ident])
            return str(plain.decode("utf-8"))
        except (pyrage.DecryptError, UnicodeDecodeError):
            raise SecretsError(
                f"{self.display}: the value of {key} cannot be decrypted although the MAC "
                "matches: it was written by a recipient with a broken tool. Set it again with "
                f"`tectum secrets set {key}`.", "Damaged secret value") from None

    def decrypt(self, identities: Keyring | Sequence[Identity]) -> dict[str, str]:
        """Every secret in plaintext: ``{KEY: value}``, after the MAC is verified (see
        :meth:`verify` for the errors)."""
        data_identity = self._open(Keyring.of(identities))
        return {key: self._decrypt_value(data_identity, key) for key in sorted(self._values)}

    def get(self, key: str, identities: Keyring | Sequence[Identity]) -> str:
        """The plaintext of secret ``key``, after the MAC is verified.

        Raises :class:`SecretsError` (besides those of :meth:`verify`) when there is no such
        secret.
        """
        data_identity = self._open(Keyring.of(identities))
        if key not in self._values:
            raise SecretsError(
                f"{self.display} has no secret {key!r}. `tectum secrets list` shows the names "
                f"it has; `tectum secrets set {key}` adds it.", "No such secret")
        return self._decrypt_value(data_identity, key)

    # -- changing ----------------------------------------------------------------------------
    def set(self, key: str, value: str, identities: Keyring | Sequence[Identity]) -> bool:
        """Encrypt ``value`` as secret ``key`` (added or replaced); True if it was added.

        Only this value is re-encrypted (the others keep their ciphertext, so the change shows
        as one line in version control). Raises :class:`SecretsError` for an invalid name and
        as :meth:`verify` does.
        """
        data_identity = self._open(Keyring.of(identities))
        _check_key(key, self.display)
        added = key not in self._values
        self._values[key] = self._encrypt_value(data_identity, value)
        self._seal()
        return added

    def remove(self, key: str, identities: Keyring | Sequence[Identity]) -> None:
        """Remove secret ``key``. Raises :class:`SecretsError` when there is no such secret and
        as :meth:`verify` does."""
        self._open(Keyring.of(identities))
        if key not in self._values:
            raise SecretsError(
                f"{self.display} has no secret {key!r} to remove. `tectum secrets list` shows "
                "the names it has.", "No such secret")
        del self._values[key]
        self._seal()

    def replace(self, values: Mapping[str, str], identities: Keyring | Sequence[Identity]
                ) -> tuple[list[str], list[str], list[str]]:
        """Make the secrets exactly ``values`` (what ``tectum secrets edit`` does): unchanged
        values keep their ciphertext. Returns the names ``(added, changed, removed)``.

        Raises :class:`SecretsError` for an invalid name and as :meth:`verify` does.
        """
        data_identity = self._open(Keyring.of(identities))
        for key in values:
            _check_key(key, self.display)
        current = {k: self._decrypt_value(data_identity, k) for k in self._values}
        added = sorted(k for k in values if k not in current)
        changed = sorted(k for k in values if k in current and current[k] != values[k])
        removed = sorted(k for k in current if k not in values)
        for key in added + changed:
            self._values[key] = self._encrypt_value(data_identity, values[key])
        for key in removed:
            del self._values[key]
        if added or changed or removed:
            self._seal()
        return added, changed, removed

    def add_recipient(self, recipient: str, identities: Keyring | Sequence[Identity]) -> str:
        """Add ``recipient`` (``age1...`` / ``ssh-ed25519 ...``): the data key is encrypted
        again to all recipients (the values are unchanged, so the new recipient can also read
        the earlier versions in version control). Returns the recipient as stored.

        Raises :class:`SecretsError` for an invalid recipient or one that is listed already,
        and as :meth:`verify` does.
        """
        data_identity = self._open(Keyring.of(identities))
        normalized = normalize_recipient(recipient)
        if _recipient_id(normalized) in {_recipient_id(r) for r in self._recipients}:
            raise SecretsError(f"{normalized} is a recipient of {self.display} already.",
                               "Already a recipient")
        self._recipients = sorted([*self._recipients, normalized], key=_recipient_id)
        self._data_key = self._wrap(data_identity)
        self._seal()
        return normalized

    def remove_recipient(self, recipient: str, identities: Keyring | Sequence[Identity]
                         ) -> str:
        """Remove ``recipient`` and rotate the data key (see :meth:`rotate`), so the removed key
        cannot read this or any later version. Returns the recipient removed, as it was listed.

        Raises :class:`SecretsError` when it is not a recipient or is the last one, and as
        :meth:`verify` does.
        """
        keyring = Keyring.of(identities)
        self._open(keyring)
        wanted = _recipient_id(normalize_recipient(recipient))
        matches = [r for r in self._recipients if _recipient_id(r) == wanted]
        if not matches:
            raise SecretsError(
                f"{wanted} is not a recipient of {self.display}. `tectum secrets recipients "
                "list` shows them.", "Not a recipient")
        if len(self._recipients) == 1:
            raise SecretsError(
                f"{matches[0]} is the only recipient of {self.display}: add another one first "
                "(`tectum secrets recipients add`), or nobody could open the file.",
                "Last recipient")
        self._recipients = [r for r in self._recipients if _recipient_id(r) != wanted]
        self.rotate(keyring)
        return matches[0]

    def rotate(self, identities: Keyring | Sequence[Identity]) -> None:
        """Make a new data key: every value is decrypted and encrypted again to it, and it is
        encrypted to the current recipients. Raises :class:`SecretsError` as :meth:`verify`
        does."""
        old = self._open(Keyring.of(identities))
        plain = {k: self._decrypt_value(old, k) for k in self._values}
        new = str(pyrage.x25519.Identity.generate())
        self._values = {k: self._encrypt_value(new, v) for k, v in plain.items()}
        self._data_key = self._wrap(new)
        self._data_identity = new
        self._seal()

    def _encrypt_value(self, data_identity: str, value: str) -> str:
        recipient = pyrage.x25519.Identity.from_str(data_identity).to_public()
        return _b64(pyrage.encrypt(value.encode("utf-8"), [recipient]))

    def _wrap(self, data_identity: str) -> str:
        parsed = [_parse_one(r) for r in self._recipients]
        return _b64(pyrage.encrypt(data_identity.encode("ascii"), parsed))

    def _seal(self) -> None:
        assert self._data_identity is not None
        self._mac = _mac(self._data_identity, FORMAT_VERSION, self._recipients, self._data_key,
                         self._values)
        self.version = FORMAT_VERSION

    # -- writing -----------------------------------------------------------------------------
    def dumps(self) -> str:
        """The file's text (YAML): a header comment, ``secrets:`` sorted by name, then the
        ``tectum:`` section."""
        doc: dict[str, Any] = {
            "secrets": {k: self._values[k] for k in sorted(self._values)},
            "tectum": {
                "version": self.version,
                "recipients": list(self._recipients),
                "data_key": self._data_key,
                "mac": self._mac,
            },
        }
        import yaml  # type: ignore[import-untyped, unused-ignore]

        body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1 << 30,
                              allow_unicode=False)
        return _HEADER + str(body)

    def save(self) -> None:
        """Write the file atomically: a temporary file in the same directory (mode 0600 while
        it is written), flushed to disk, then renamed over the file (final mode 0644: it holds
        only ciphertext). The directory is created if needed.

        Raises :class:`SecretsError` when the file changed on disk since it was read (another
        `tectum secrets` ran meanwhile: nothing is overwritten), when a new file would
        overwrite one that exists, or when it cannot be written.
        """
        name = self.display
        self._check_unchanged()
        text = self.dumps().encode("ascii")
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(self.path)}.",
                                       suffix=".tmp", dir=directory)
        except OSError as exc:
            raise SecretsError(f"Cannot write {name}: {exc.strerror or exc}.",
                               "Cannot write the secrets file") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            self._check_unchanged()
            os.replace(tmp, self.path)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise SecretsError(f"Cannot write {name}: {exc.strerror or exc}.",
                                   "Cannot write the secrets file") from None
            raise
        try:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
        self._digest = hashlib.sha256(text).digest()

    def _check_unchanged(self) -> None:
        name = self.display
        if self._digest is None:
            if os.path.lexists(self.path):
                raise SecretsError(
                    f"{name} exists already (made by another run meanwhile?); nothing was "
                    "overwritten.", "The secrets file exists")
            return
        try:
            with open(self.path, "rb") as fh:
                current = hashlib.sha256(fh.read()).digest()
        except OSError:
            current = b""
        if current != self._digest:
            raise SecretsError(
                f"{name} changed on disk since it was read (another `tectum secrets` or an "
                "editor wrote it meanwhile); nothing was overwritten. Run the command again.",
                "The secrets file changed")


def _normalize_all(recipients: Iterable[str], name: str) -> list[str]:
    out: dict[str, str] = {}
    for r in recipients:
        normalized = normalize_recipient(r)
        out.setdefault(_recipient_id(normalized), normalized)
    return [out[k] for k in sorted(out)]


def _is_b64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(text)


# -- the plaintext form (what `tectum secrets edit` opens in an editor) -------------------------


def _plain_dumper() -> Any:
    import yaml  # type: ignore[import-untyped, unused-ignore]

    def present(dumper: Any, data: str) -> Any:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    dumper: Any = type("_PlainDumper", (yaml.SafeDumper,), {})
    dumper.add_representer(str, present)
    return dumper


def plaintext_yaml(values: Mapping[str, str], header: str = "") -> str:
    """``values`` as YAML, ``NAME: value`` one a line, sorted (several lines in ``|`` block
    style), after ``header`` (comment lines). :func:`parse_plaintext_yaml` reads it back
    exactly."""
    if not values:
        return header + "{}\n"
    import yaml  # type: ignore[import-untyped, unused-ignore]

    body = yaml.dump({k: values[k] for k in sorted(values)}, Dumper=_plain_dumper(),
                     sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=1 << 30)
    return header + str(body)


def parse_plaintext_yaml(text: str, source: str) -> dict[str, str]:
    """Read ``NAME: value`` YAML (as :func:`plaintext_yaml` writes it). A value is the text as
    written (``port: 5432`` is the text ``5432``; quote it to keep spaces at its ends).

    Raises :class:`SecretsError` for YAML that does not parse, a document that is not a
    mapping, an invalid or repeated name, or a value that is a list or a mapping. The messages
    give ``source`` and line numbers but never the text: it holds secret values.
    """
    def bad(line: int | None, what: str) -> SecretsError:
        where = f"{source}, line {line}" if line else source
        return SecretsError(f"{where}: {what}. Nothing was changed.", "Invalid secrets")

    import yaml  # type: ignore[import-untyped, unused-ignore]

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise bad(mark.line + 1 if mark else None,
                  "this is not valid YAML (quote a value that holds ': ', '#' or starts "
                  "with a special character; use | for several lines)") from None
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise bad(node.start_mark.line + 1,
                  "expected a mapping of secret names to values, NAME: value one a line")
    out: dict[str, str] = {}
    for key_node, value_node in node.value:
        line = int(key_node.start_mark.line) + 1
        if not isinstance(key_node, yaml.ScalarNode) or not valid_key(str(key_node.value)):
            raise bad(line, "a secret name must be letters, digits, '_', '.' and '-', "
                            "starting with a letter or '_'")
        key = str(key_node.value)
        if key in out:
            raise bad(line, f"{key} appears twice")
        if not isinstance(value_node, yaml.ScalarNode):
            raise bad(line, f"the value of {key} is a list or a mapping; it must be text")
        out[key] = str(value_node.value)
    return out


def load_secrets(project_root: str, env: str, *,
                 identities: Keyring | Sequence[Identity] | None = None) -> dict[str, str]:
    """Every secret of environment ``env`` in plaintext, ``{KEY: value}``, from
    ``PROJECT_ROOT/secrets/ENV.yaml`` (``env`` is normally the workspace name).

    ``identities`` default to :func:`load_keyring` (``TECTUM_AGE_KEY``, ``TECTUM_AGE_KEY_FILE``,
    the default key file, ``~/.ssh/id_ed25519``). The MAC is verified before anything is
    decrypted. Call it only when the stack asks for a secret: a project without secrets has no
    file, and this raises :class:`SecretsError` for a missing file, a missing key, a key that
    is not a recipient, a file that was modified, and everything :meth:`SecretsFile.load`
    refuses.
    """
    path = secrets_path(project_root, env)
    display = os.path.join(SECRETS_DIR, f"{env}.yaml")
    if not os.path.exists(path):
        raise SecretsError(
            f"{display} does not exist, so environment {env!r} has no secrets. Create it with "
            f"`tectum secrets init --env {env}` and add values with "
            f"`tectum secrets set --env {env} KEY`.", "No secrets file")
    keyring = Keyring.of(identities) if identities is not None else load_keyring()
    return SecretsFile.load(path, display=display).decrypt(keyring)
