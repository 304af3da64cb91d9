"""The "server" of the jsonkeys provider: keys kept in one JSON file, and its client.

It stands for any remote API with server-assigned ids: the file is the server's storage,
:class:`JsonKeysClient` its client library. Creating a key assigns it a random ``id`` (as a
cloud API assigns an instance id); names are unique. File format::

    {"keys": {"<id>": {"name": "api", "value": "..."}, ...}}

Every call takes an exclusive lock (``flock`` on ``PATH.lock``) and every change replaces the
file atomically (a temporary file in the same directory, ``fsync``, ``rename``), so
concurrent clients and a killed process never leave half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class JsonKeysError(Exception):
    """A call failed: the file is not valid, or the key named does not exist."""


class JsonKeysClient:
    """``JsonKeysClient(path)``: the keys in the JSON file ``path`` (made on the first
    create; a missing file holds no keys). Read-only: :meth:`list_keys`. Mutating:
    :meth:`create_key`, :meth:`update_key`, :meth:`delete_key`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"JsonKeysClient({self.path!r})"

    # -- storage -------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise JsonKeysError(f"cannot read {self.path}: {exc}") from None
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("name"), str) for v in keys.values()):
            raise JsonKeysError(f"{self.path} is not a keys file: expected "
                                '{"keys": {ID: {"name": ..., "value": ...}}}')
        return keys

    def _save(self, keys: dict[str, dict[str, Any]]) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"keys": keys}, fh, indent=2, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise JsonKeysError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    # -- the API -------------------------------------------------------------------------
    def list_keys(self) -> dict[str, dict[str, Any]]:
        """Every key: ``{id: {"id", "name", "value"}}`` (one read of the file)."""
        with self._locked():
            return {k: {"id": k, **v} for k, v in self._load().items()}

    def create_key(self, name: str, value: str) -> dict[str, Any]:
        """Make a key; the server assigns its ``id``. Raises :class:`JsonKeysError` when a
        key of that name exists."""
        with self._locked():
            keys = self._load()
            if any(v["name"] == name for v in keys.values()):
                raise JsonKeysError(f"a key named {name!r} exists already in {self.path}")
            key_id = secrets.token_hex(8)
            keys[key_id] = {"name": name, "value": value}
            self._save(keys)
            return {"id": key_id, "name": name, "value": value}

    def update_key(self, key_id: str, value: str) -> dict[str, Any]:
        """Set the value of key ``key_id``. Raises :class:`JsonKeysError` when it is gone."""
        with self._locked():
            keys = self._load()
            if key_id not in keys:
                raise JsonKeysError(f"no key has id {key_id!r} in {self.path}")
            keys[key_id]["value"] = value
            self._save(keys)
            return {"id": key_id, **keys[key_id]}

    def delete_key(self, key_id: str) -> None:
        """Delete key ``key_id``; one that is gone already is no error."""
        with self._locked():
            keys = self._load()
            if keys.pop(key_id, None) is not None:
                self._save(keys)
