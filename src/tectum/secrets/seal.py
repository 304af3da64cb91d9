"""Secret values at rest: sealed (age-encrypted) in state, the journal and saved plans.

Before tectum stores a document (a state version, a journal record, the desired state kept with a
version, a plan file), every string in it that holds a registered secret
(:data:`tectum.masking.REDACTOR`) is replaced by ``{"tectum-sealed": BASE64}``: the string
encrypted with age (pyrage) to the workspace's recipients. Terraform keeps such values in
plaintext state; Pulumi encrypts them per stack — this is Pulumi's model with age keys.

Who the recipients are:

* With a secrets file (``secrets/ENV.yaml``): its recipients, once the file's MAC has been
  checked with the user's key (``TECTUM_AGE_KEY`` / ``TECTUM_AGE_KEY_FILE`` / ...; see
  :mod:`tectum.secrets.store`) — a recipient added to the file by hand would otherwise receive
  every sensitive value of the state. Sealing then needs a key that is a recipient.
* Without one: the project's **state key**, an age identity that tectum makes on first use in
  ``.tectum/state-key.txt`` (mode 0600, in the project's data directory beside the SQLite state),
  so that a sensitive variable or a generated password needs no key of the user's (issue 10
  item 6). Whoever can read ``.tectum/`` can read the sealed values: the seal keeps them out of
  state dumps, backups of the database alone, a PostgreSQL server and plan files copied
  elsewhere, not away from the project's owner. A team that shares a backend makes a secrets
  file, so that the values are sealed to the team's keys.

Reading back decrypts with every identity at hand — the user's keys and the state key, when
each exists, so that state sealed before a secrets file was made (or by an older tectum, to the
user's own key) stays readable — and registers each value for masking again.
:meth:`Sealer.check_ready` checks all of this before an apply changes anything.
"""

from __future__ import annotations

import base64
import contextlib
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


#: the project's state key, in its data directory (``.tectum/``)
STATE_KEY = "state-key.txt"


class Sealer:
    """Seals and unseals values for one project's workspace ``env`` (``project_root``: the
    project directory). Errors are :class:`~tectum.diagnostics.DiagnosticError` whose
    diagnostic says what to do."""

    def __init__(self, project_root: str, env: str) -> None:
        self.project_root = project_root
        self.env = env
        self._recipients: list[Any] | None = None
        self._identities: list[Any] | None = None
        self._keyring_error: str | None = None

    @property
    def state_key_path(self) -> str:
        """``PROJECT/.tectum/state-key.txt``: the key values are sealed to without a secrets
        file."""
        return os.path.join(self.project_root, ".tectum", STATE_KEY)

    def _secrets_file(self) -> str | None:
        """The workspace's secrets file, when there is one."""
        from tectum.secrets.store import SecretsError, secrets_path

        try:
            path = secrets_path(self.project_root, self.env)
        except SecretsError as exc:
            raise DiagnosticError(exc.diagnostic()) from None
        return path if os.path.exists(path) else None

    def check_ready(self) -> None:
        """Check, before an apply changes anything, that whatever it may have to seal can be
        sealed — and read back afterwards. With a secrets file: the file loads, a key of the
        user's is found, is one of its recipients and verifies its MAC. Without one: the state
        key (:attr:`state_key_path`) is a valid key when it exists, else it can be made (its
        directory is writable; it is made when the first value is sealed). Keys are looked up
        as :func:`tectum.secrets.store.load_keyring` does.

        Raises :class:`DiagnosticError` naming the file or key and what to do. Nothing is
        written."""
        if self._secrets_file() is not None:
            self.recipients()
            return
        key = self._read_state_key()
        if key is not None:
            return
        directory = os.path.dirname(self.state_key_path)
        existing = directory
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise DiagnosticError(Diagnostic.error(
                "Cannot make the state key",
                f"Sensitive values are stored in state sealed to the project's state key "
                f"{self.state_key_path}, which does not exist yet and cannot be made: "
                f"{existing} is not writable. Make it writable, or create a secrets file "
                f"(`tectum secrets init --env {self.env}`) to seal to your own key. Nothing "
                "was changed."))

    def recipients(self) -> list[Any]:
        """The recipients values are sealed to (see the module's docstring); the state key is
        made when there is no secrets file and no state key yet."""
        if self._recipients is None:
            path = self._secrets_file()
            if path is not None:
                self._recipients = self._file_recipients(path)
            else:
                key = self._read_state_key() or self._make_state_key()
                self._recipients = [key.to_public()]
        return self._recipients

    def _file_recipients(self, path: str) -> list[Any]:
        """The recipients of the secrets file at ``path``, after its MAC is checked with the
        user's key."""
        from tectum.secrets.store import (
            SecretsError,
            SecretsFile,
            load_keyring,
            parse_recipient,
        )

        try:
            sf = SecretsFile.load(path)
        except SecretsError as exc:
            raise DiagnosticError(exc.diagnostic()) from None
        try:
            keyring = load_keyring()
        except SecretsError as exc:
            raise DiagnosticError(Diagnostic.error(
                "No key to seal sensitive values",
                f"Workspace {self.env!r} has a secrets file ({path}): sensitive values are "
                "stored in state, the journal and plan files sealed to its recipients, once "
                "its recipients list has been checked (MAC) with your key, so that nobody can "
                f"add a recipient by editing the file. {exc.detail} Nothing was changed."
            )) from None
        try:
            sf.verify(keyring)
            recipients = [parse_recipient(t) for t in sf.recipients]
        except SecretsError as exc:
            raise DiagnosticError(exc.diagnostic()) from None
        if not recipients:  # pragma: no cover - a verified file always lists one
            raise DiagnosticError(Diagnostic.error(
                "No key to encrypt secrets at rest", f"{path} lists no recipient."))
        return recipients

    def _read_state_key(self) -> Any | None:
        """The state key, or None when its file does not exist. Raises
        :class:`DiagnosticError` for a file that is not a single age identity."""
        import pyrage

        path = self.state_key_path
        try:
            with open(path, encoding="utf-8") as fh:
                lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise DiagnosticError(self._bad_state_key(f"it cannot be read ({exc})")) from None
        if len(lines) != 1 or not lines[0].startswith("AGE-SECRET-KEY-1"):
            raise DiagnosticError(self._bad_state_key(
                "it does not hold one age identity (a line AGE-SECRET-KEY-1...)"))
        try:
            return pyrage.x25519.Identity.from_str(lines[0])
        except pyrage.IdentityError:
            raise DiagnosticError(self._bad_state_key(
                "its age identity is not valid (cut short or mistyped?)")) from None

    def _bad_state_key(self, why: str) -> Diagnostic:
        return Diagnostic.error(
            "Invalid state key",
            f"{self.state_key_path} is the key that sensitive values in this project's state "
            f"are sealed to, and {why}. Restore it from a backup; without it, the sealed "
            "values cannot be read (state, journal and plan files hold them only encrypted). "
            "Nothing was changed.")

    def _make_state_key(self) -> Any:
        """Make the state key file (mode 0600; ``.tectum/`` 0700 when it is made too),
        atomically: a concurrent run that made it first wins, and its key is used."""
        import pyrage

        path = self.state_key_path
        directory = os.path.dirname(path)
        ident = pyrage.x25519.Identity.generate()
        text = (f"# tectum state key: sensitive values in this project's state, journal and "
                f"plan files are\n# sealed to it (docs/secrets.md). Keep it; never commit "
                f"it.\n# public key: {ident.to_public()}\n{ident}\n")
        tmp = os.path.join(directory, f".{STATE_KEY}.tmp-{os.getpid()}-{id(self)}")
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)  # never replaces a key another run made meanwhile
            except FileExistsError:
                pass
        except OSError as exc:
            raise DiagnosticError(Diagnostic.error(
                "Cannot make the state key",
                f"Sensitive values are stored in state sealed to the project's state key, and "
                f"{path} cannot be made: {exc.strerror or exc}.")) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        key = self._read_state_key()
        assert key is not None
        return key

    def identities(self) -> list[Any]:
        """Every identity that may open a sealed value: the user's keys (when found) and the
        state key (when it exists). Raises :class:`DiagnosticError` when there is neither."""
        if self._identities is None:
            from tectum.secrets.store import SecretsError, load_identities

            found: list[Any] = []
            failure: SecretsError | None = None
            try:
                found += load_identities()
            except SecretsError as exc:
                self._keyring_error = exc.detail
                failure = exc
            key = self._read_state_key()
            if key is not None:
                found.append(key)
            if failure is not None and not found:
                raise DiagnosticError(failure.diagnostic()) from None
            self._identities = found
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
                    f"The {where} holds a sensitive value sealed for workspace {self.env!r}, "
                    f"and no key at hand opens it ({exc}). It was sealed to the recipients of "
                    "the workspace's secrets file (`tectum secrets recipients list`) or, "
                    f"without one, to the project's state key {self.state_key_path}: set "
                    "TECTUM_AGE_KEY_FILE to a key that is a recipient, or restore the state "
                    "key." + (f" Your own key was not used: {self._keyring_error}"
                              if self._keyring_error else ""))) from None
            REDACTOR.add(text)
            REDACTOR.add(json.dumps(text)[1:-1])  # as it shows inside JSON output
            return text

        return walk(value, fn)
