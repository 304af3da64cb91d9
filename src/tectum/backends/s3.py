"""The S3 backend: state versions and the journal of the current run as objects in an S3 bucket,
the workspace lock as an item in a DynamoDB table — the shape of Terraform's ``s3`` backend
(bucket + ``key`` + ``dynamodb_table`` with partition key ``LockID``), with tectum's model on top
(every version kept, a journal, lock holder details). boto3 (``pip install 'tectum[aws]'``),
imported only when the backend is used.

``tectum.toml``::

    [state]
    backend = "s3"
    bucket = "acme-tectum-state"       # must exist (versioning on is advised)
    key = "network"                    # the prefix of this project's state
    dynamodb_table = "tectum-locks"    # must exist: partition key LockID (string)
    region = "eu-west-1"               # else boto3's: AWS_REGION, AWS_DEFAULT_REGION, profile
    profile = "ops"                    # optional: a profile of ~/.aws/config
    endpoint_url = "http://127.0.0.1:5000"  # optional; else AWS_ENDPOINT_URL[_S3|_DYNAMODB]
    use_path_style = false             # optional: bucket in the path, not the host name

Credentials come only from boto3's standard chain (environment, ``profile``, ``~/.aws``, SSO,
container or instance role), never from ``tectum.toml``.

Layout — every workspace (``default`` too) under ``KEY/env:/WORKSPACE/`` (Terraform's
``workspace_key_prefix`` is ``env:``; Terraform keeps ``default`` at ``KEY`` itself, tectum keeps
every workspace alike so that one listing finds them all):

* ``versions/SERIAL.json`` (serial zero-padded to 20 digits, so that keys sort by serial) — the
  state document of version SERIAL, exactly as ``tectum state pull`` prints it; its lineage,
  time, author, operation and revision are the object's user metadata (``x-amz-meta-tectum-*``,
  percent-encoded). Written with ``If-None-Match: *``: the conditional write *is* the commit, so
  of two writers that both computed the same next serial exactly one stores it and the other
  reads the new latest version and tries again (the push rules are checked again then).
* ``desired/SERIAL-TOKEN.json`` — the desired state a version applied, written before the version
  (whose ``tectum-desired`` metadata names the TOKEN), so that a version never points at a
  desired state that is not there.
* ``journal/BASE/TIME-PID-RANDOM.json`` — one object per ``intend``/``record`` call: a JSON array
  of ``[address, action, record]`` rows, on version BASE; replayed by ``read`` (in key order, that
  is by time) when BASE is still the latest version; deleted by the next ``write``.
* ``head.json`` — ``{"serial": N}``, a hint where to start listing ``versions/`` (the latest
  version is the last key listed after it), so that a read costs a few requests however long the
  history is. It may lag behind (a writer killed before updating it); it is never trusted alone.

S3 reads and lists are strongly consistent (since December 2020), which the snapshot of ``read``
relies on: the latest version and its journal are read, then the read is repeated if a newer
version appeared meanwhile (its ``write`` may have deleted part of that journal).

The lock — one DynamoDB item per workspace, ``LockID = "BUCKET/KEY/env:/WORKSPACE"``, taken with
``PutItem`` on ``attribute_not_exists(LockID)`` (so of racing lockers exactly one wins and the
others read its details), holding ``Id``, ``Info`` (the :class:`LockInfo` JSON: who, pid, host,
operation, tectum version, time) and ``Expires`` (epoch seconds). A holder renews ``Expires``
every :data:`HEARTBEAT` seconds from a background thread, and before every write of a version or
journal object (a conditional ``UpdateItem`` on its ``Id``, which is also how it finds out it
lost the lock). A lock is taken over, with a warning naming the previous holder, when

* its holder ran on this machine and its process is gone (killed, crashed) — at once; or
* its lease ran out: nobody renewed it for :data:`LEASE` seconds (a holder on another machine
  that died or lost the network). Clocks of the machines must agree to within that margin.

``force-unlock ID`` deletes the item whatever its holder is doing (as Terraform's); a holder
still running fails at its next state operation with "State lock lost" — nothing more is stored
by it, what it recorded stays in the journal.

Errors (:class:`DiagnosticError`, never a boto3 exception): "State is locked", "Lock ID mismatch",
"Not locked", "State lock lost", "Unreadable state" (naming ``s3://BUCKET/PREFIX``), "State
bucket not found", "State lock table not found" or both at once (with the ``aws`` commands that
make them), "Invalid S3 state settings" (also for credentials written in ``tectum.toml``),
"No AWS credentials", "AWS denied access to the state", "Cannot reach the state store", "No AWS
region for the state", "Unknown AWS profile", "State store error" (anything else the service
refuses, with its code and message).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from tectum.backends.base import (
    JournalRow,
    LockInfo,
    NewVersion,
    StoredVersion,
    VersionInfo,
    author,
)
from tectum.diagnostics import Diagnostic, DiagnosticError, SourceLocation
from tectum.process import pid_alive
from tectum.state.manager import StateManager

#: seconds a lock stays held without being renewed (then another machine may take it over)
LEASE = 60.0
#: seconds between renewals of a held lock's lease
HEARTBEAT = 10.0
#: Terraform's ``workspace_key_prefix``
WORKSPACE_PREFIX = "env:"
_DIGITS = 20
#: attempts at storing a version when other writers keep storing the same serial first
_WRITE_ATTEMPTS = 20
#: requests at once when a read fetches many objects (journal objects, history)
_FETCH_THREADS = 16
_ACCESS_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException", "UnrecognizedClientException",
    "InvalidClientTokenId", "InvalidToken", "AllAccessDisabled", "MissingAuthenticationToken",
})


class S3Settings(NamedTuple):
    """``[state]`` of a project with ``backend = "s3"`` (Terraform's s3 backend names):
    ``bucket``, ``key`` (the prefix; no leading or trailing ``/``), ``dynamodb_table``, and
    optionally ``region``, ``profile``, ``endpoint_url``, ``use_path_style``."""

    bucket: str
    key: str
    dynamodb_table: str
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    use_path_style: bool = False

    @classmethod
    def from_table(cls, table: dict[str, Any], source: str | None = None) -> S3Settings:
        """Read and check ``[state]`` (``source``: the file it comes from, for messages).
        Raises :class:`DiagnosticError` "Invalid S3 state settings" naming the setting, and
        refuses credentials there."""
        where = f" in {source}" if source else ""
        loc = SourceLocation(source) if source else None

        def bad(detail: str) -> DiagnosticError:
            return DiagnosticError(Diagnostic.error(
                "Invalid S3 state settings", f"[state] backend = \"s3\"{where}: {detail}",
                source=loc))

        secrets = sorted(k for k in table if k in {
            "access_key", "secret_key", "token", "aws_access_key_id",
            "aws_secret_access_key", "aws_session_token", "session_token"})
        if secrets:
            raise bad(f"{', '.join(secrets)} cannot be set here: credentials come from the "
                      "standard AWS chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                      "AWS_PROFILE or profile = \"NAME\", ~/.aws/credentials, SSO, an instance "
                      "role). Remove them from the file (and rotate the key if it was "
                      "committed).")
        values: dict[str, Any] = {}
        for name in ("bucket", "key", "dynamodb_table"):
            value = table.get(name)
            if not isinstance(value, str) or not value.strip("/"):
                example = {"bucket": '"acme-tectum-state"', "key": '"network"',
                           "dynamodb_table": '"tectum-locks"'}[name]
                raise bad(f"{name} is required (a string), e.g. {name} = {example}.")
            values[name] = value.strip("/") if name == "key" else value
        for name in ("region", "profile", "endpoint_url"):
            value = table.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise bad(f"{name} must be a non-empty string.")
            values[name] = value
        path_style = table.get("use_path_style", False)
        if not isinstance(path_style, bool):
            raise bad("use_path_style must be true or false.")
        values["use_path_style"] = path_style
        known = {"backend", "path", *cls._fields}
        unknown = sorted(set(table) - known)
        if unknown:
            raise bad(f"unknown setting {', '.join(unknown)}; the settings are "
                      f"{', '.join(cls._fields)}.")
        return cls(**values)


def _serial_key(serial: int) -> str:
    return f"{serial:0{_DIGITS}d}"


def _serial_of(name: str) -> int | None:
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def _text(body: bytes) -> str | bytes:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


def _parse_lock(item: dict[str, Any] | None) -> tuple[str, LockInfo | None, float] | None:
    """An item of the lock table: (its Id, the holder's details or None when unreadable,
    when its lease ends); None for no item."""
    if not item:
        return None
    lock_id = item.get("Id", {}).get("S", "")
    try:
        expires = float(item.get("Expires", {}).get("N", "0"))
    except ValueError:
        expires = 0.0
    info: LockInfo | None = None
    try:
        data = json.loads(item.get("Info", {}).get("S", "null"))
        info = LockInfo(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        info = None
    return lock_id, info, expires


class _Conflict(Exception):
    """A conditional request whose condition did not hold."""


class S3Storage:
    """The versions, journal and lock of one workspace in an S3 bucket and a DynamoDB table:
    storage only (:class:`~tectum.backends.base.StateStorage`); :class:`S3Backend` adds the
    rules. The module docstring describes the layout and the lock."""

    def __init__(self, settings: S3Settings, workspace: str = "default") -> None:
        import importlib.util

        if importlib.util.find_spec("boto3") is None:  # (finds it without importing it)
            raise DiagnosticError(Diagnostic.error(
                "AWS support is not installed",
                "The S3 state backend needs boto3: install it with "
                "`pip install 'tectum[aws]'` (or `pip install boto3`)."))
        self.settings = settings
        self.workspace = workspace
        self.prefix = f"{settings.key}/{WORKSPACE_PREFIX}/{workspace}/"
        self.lock_key = f"{settings.bucket}/{settings.key}/{WORKSPACE_PREFIX}/{workspace}"
        self._s3: Any = None
        self._ddb: Any = None
        self._lock_id: str | None = None
        self._lock_held: LockInfo | None = None
        self._lost = False
        #: the ID of a lock this object lost: its writes are refused until it unlocks it
        self._revoked: str | None = None
        self._stop: threading.Event | None = None
        self._beat: threading.Thread | None = None
        self._last_ns = 0

    # -- clients and errors --------------------------------------------------------------
    def _clients(self) -> tuple[Any, Any]:
        if self._s3 is None:
            import boto3
            import botocore.config
            import botocore.exceptions

            s = self.settings
            try:
                # (botocore reads AWS_DEFAULT_REGION and the profile; the AWS CLI and
                # Terraform also AWS_REGION)
                session = boto3.Session(profile_name=s.profile, region_name=s.region
                                        or os.environ.get("AWS_REGION") or None)
            except botocore.exceptions.ProfileNotFound:
                raise DiagnosticError(Diagnostic.error(
                    "Unknown AWS profile",
                    f"The AWS profile {s.profile!r} of the S3 state backend is not in "
                    "~/.aws/config or ~/.aws/credentials (or AWS_CONFIG_FILE). Add it (`aws "
                    "configure --profile NAME`), or remove profile from [state] to use the "
                    "default credential chain.")) from None
            if not session.region_name:
                raise DiagnosticError(Diagnostic.error(
                    "No AWS region for the state",
                    f"The S3 state backend does not know the region of bucket {s.bucket!r}: "
                    "set region = \"...\" in [state], or AWS_REGION in the environment."))
            base = {"connect_timeout": 10, "read_timeout": 60, "retries": {"mode": "standard"}}
            s3_config = botocore.config.Config(
                **base, s3={"addressing_style": "path" if s.use_path_style else "auto"})
            ddb_config = botocore.config.Config(**base)
            try:
                self._ddb = session.client("dynamodb", endpoint_url=s.endpoint_url,
                                           config=ddb_config)
                self._s3 = session.client("s3", endpoint_url=s.endpoint_url, config=s3_config)
            except ValueError as exc:  # an endpoint_url that is not a URL
                raise DiagnosticError(Diagnostic.error(
                    "Invalid S3 state settings",
                    f"endpoint_url of the S3 state backend is not usable: {exc}.")) from None
        return self._s3, self._ddb

    def _where(self) -> str:
        return f"s3://{self.settings.bucket}/{self.prefix}"

    def _service_error(self, exc: BaseException, service: str) -> DiagnosticError:
        """The diagnostic for a failed request to ``service`` (``"s3"`` or ``"dynamodb"``)."""
        import botocore.exceptions as bex

        s = self.settings
        client = self._s3 if service == "s3" else self._ddb
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None) or "AWS"
        region = getattr(getattr(client, "meta", None), "region_name", None) or s.region
        if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
            return DiagnosticError(Diagnostic.error(
                "No AWS credentials",
                "The S3 state backend found no AWS credentials. Provide them the standard way: "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the "
                "environment, AWS_PROFILE or profile = \"NAME\" in [state] with "
                "~/.aws/credentials, `aws sso login`, or a container or instance role — never "
                "in tectum.toml."))
        if isinstance(exc, (bex.EndpointConnectionError, bex.ConnectTimeoutError,
                            bex.ReadTimeoutError, bex.ConnectionClosedError,
                            bex.ProxyConnectionError, bex.SSLError)):
            return DiagnosticError(Diagnostic.error(
                "Cannot reach the state store",
                f"tectum cannot reach {service.upper() if service == 's3' else 'DynamoDB'} at "
                f"{endpoint} (region {region}) for the state in {self._where()}: "
                f"{type(exc).__name__}. Check the network, region, and endpoint_url "
                "(or AWS_ENDPOINT_URL*) of the state backend."))
        if isinstance(exc, bex.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = str(error.get("Message", "")).rstrip(".")
            if code in ("NoSuchBucket",) or (service == "s3" and code == "404"):
                return self._missing(bucket=True, table=self._probe_missing("dynamodb"),
                                     endpoint=endpoint, region=region)
            if code == "ResourceNotFoundException":
                return self._missing(bucket=self._probe_missing("s3"), table=True,
                                     endpoint=endpoint, region=region)
            if code in _ACCESS_CODES or code == "403":
                return DiagnosticError(Diagnostic.error(
                    "AWS denied access to the state",
                    f"{'S3' if service == 's3' else 'DynamoDB'} refused the credentials in use "
                    f"for the state in {self._where()} (table {s.dynamodb_table}): {code}"
                    f"{': ' + message if message else ''}. Check the credentials (`aws sts "
                    "get-caller-identity`) and that they allow s3:GetObject, s3:PutObject, "
                    "s3:DeleteObject, s3:ListBucket on the bucket and dynamodb:GetItem, "
                    "PutItem, UpdateItem, DeleteItem on the table."))
            return DiagnosticError(Diagnostic.error(
                "State store error",
                f"{'S3' if service == 's3' else 'DynamoDB'} refused a request for the state in "
                f"{self._where()}: {code or 'error'}{': ' + message if message else ''}."))
        return DiagnosticError(Diagnostic.error(
            "State store error",
            f"A request for the state in {self._where()} failed: {type(exc).__name__}: "
            f"{exc}."))

    def _probe_missing(self, service: str) -> bool:
        """Whether the bucket (``"s3"``) or the lock table is missing too (so that one
        message names all there is to make); False when that cannot be told."""
        import botocore.exceptions as bex

        try:
            if service == "s3":
                self._s3.head_bucket(Bucket=self.settings.bucket)
            else:
                self._ddb.get_item(TableName=self.settings.dynamodb_table,
                                   Key=self._item_key())
        except bex.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            return code in ("404", "NoSuchBucket", "ResourceNotFoundException")
        except Exception:  # noqa: BLE001 - only a hint for the message
            return False
        return False

    def _missing(self, *, bucket: bool, table: bool, endpoint: str,
                 region: str | None) -> DiagnosticError:
        """"State bucket not found", "State lock table not found" or both, with the ``aws``
        commands that make them."""
        s = self.settings
        what, make = [], []
        if bucket:
            loc = ("" if region == "us-east-1" else
                   f" --create-bucket-configuration LocationConstraint={region}")
            what.append(f"the S3 bucket {s.bucket!r} that holds the state")
            make.append(f"`aws s3api create-bucket --bucket {s.bucket} --region {region}{loc}` "
                        f"and `aws s3api put-bucket-versioning --bucket {s.bucket} "
                        "--versioning-configuration Status=Enabled` (versions of every object "
                        "are then kept)")
        if table:
            what.append(f"the DynamoDB table {s.dynamodb_table!r} that holds its locks")
            make.append(f"`aws dynamodb create-table --region {region} --table-name "
                        f"{s.dynamodb_table} --attribute-definitions "
                        "AttributeName=LockID,AttributeType=S --key-schema "
                        "AttributeName=LockID,KeyType=HASH --billing-mode PAY_PER_REQUEST`")
        title = ("State bucket and lock table not found" if bucket and table else
                 "State bucket not found" if bucket else "State lock table not found")
        return DiagnosticError(Diagnostic.error(
            title,
            f"{' and '.join(what).capitalize()} of the S3 state backend "
            f"{'do' if bucket and table else 'does'} not exist (at {endpoint}, region "
            f"{region}). Make {'them' if bucket and table else 'it'} first — "
            f"{'; and '.join(make)}; or with aws_s3_bucket, aws_s3_bucket_versioning and "
            "aws_dynamodb_table (hash_key = \"LockID\") in a stack of their own that keeps its "
            "state in the default sqlite backend — or fix bucket and dynamodb_table in "
            "[state]."))

    def _call(self, service: str, op: str, *, conflict: tuple[str, ...] = (),
              missing: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """``client.op(**kwargs)``; raises :class:`_Conflict` for an error code in
        ``conflict``, returns None for one in ``missing``, DiagnosticError for the rest."""
        import botocore.exceptions as bex

        s3, ddb = self._clients()
        client = s3 if service == "s3" else ddb
        try:
            return getattr(client, op)(**kwargs)
        except bex.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in conflict:
                raise _Conflict(code) from None
            if code in missing:
                return None
            raise self._service_error(exc, service) from None
        except bex.BotoCoreError as exc:
            raise self._service_error(exc, service) from None

    def damaged(self, detail: str) -> DiagnosticError:
        """"Unreadable state" naming the bucket and prefix: ``detail`` says what is damaged."""
        return DiagnosticError(Diagnostic.error(
            "Unreadable state",
            f"The state of workspace {self.workspace!r} in {self._where()} cannot be read: "
            f"{detail}. Nothing was changed. With bucket versioning on, an earlier version "
            "of a damaged object can be restored (`aws s3api list-object-versions`).",
        ))

    # -- objects ---------------------------------------------------------------------------
    def _get(self, key: str) -> tuple[bytes, dict[str, str]] | None:
        """An object's body and user metadata, or None when there is none."""
        got = self._call("s3", "get_object", missing=("NoSuchKey",),
                         Bucket=self.settings.bucket, Key=key)
        if got is None:
            return None
        try:
            body: bytes = got["Body"].read()
        except Exception as exc:  # noqa: BLE001 - a broken stream is a failed request
            raise self._service_error(exc, "s3") from None
        return body, dict(got.get("Metadata") or {})

    def _put(self, key: str, body: bytes, *, metadata: dict[str, str] | None = None,
             new: bool = False) -> None:
        """Store an object; ``new``: only when there is none (else :class:`_Conflict`)."""
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if new else {}
        self._call("s3", "put_object", conflict=("PreconditionFailed",),
                   Bucket=self.settings.bucket, Key=key, Body=body,
                   ContentType="application/json", Metadata=metadata or {}, **extra)

    def _list(self, prefix: str, *, start_after: str | None = None,
              limit: int | None = None) -> list[str]:
        """Keys under ``prefix`` in order (after ``start_after``; at most ``limit``)."""
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            elif start_after:
                kwargs["StartAfter"] = start_after
            if limit is not None:
                kwargs["MaxKeys"] = min(1000, limit - len(keys))
            page = self._call("s3", "list_objects_v2", **kwargs)
            keys.extend(obj["Key"] for obj in page.get("Contents", ()))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token or \
                    (limit is not None and len(keys) >= limit):
                return keys

    def _delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            result = self._call("s3", "delete_objects", Bucket=self.settings.bucket,
                                Delete={"Objects": [{"Key": k} for k in batch],
                                        "Quiet": True})
            errors = result.get("Errors") or []
            if errors:
                first = errors[0]
                raise DiagnosticError(Diagnostic.error(
                    "State store error",
                    f"S3 refused to delete {len(errors)} object(s) of the state in "
                    f"{self._where()}, e.g. {first.get('Key')}: {first.get('Code')} "
                    f"{first.get('Message', '')}".rstrip() + "."))

    def _fetch(self, keys: Sequence[str]) -> list[tuple[bytes, dict[str, str]] | None]:
        """Many objects at once (in order), None for those gone."""
        if len(keys) <= 2:
            return [self._get(k) for k in keys]
        with ThreadPoolExecutor(min(_FETCH_THREADS, len(keys))) as pool:
            return list(pool.map(self._get, keys))

    def _version_key(self, serial: int) -> str:
        return f"{self.prefix}versions/{_serial_key(serial)}.json"

    def _serials_after(self, start: int | None) -> list[int]:
        keys = self._list(f"{self.prefix}versions/",
                          start_after=None if start is None else self._version_key(start))
        return [s for s in (_serial_of(k) for k in keys if k.endswith(".json"))
                if s is not None]

    def _latest_serial(self) -> int:
        """The serial of the latest version (0: none), from the head hint and one listing."""
        hint: int | None = None
        found = self._get(f"{self.prefix}head.json")
        if found is not None:
            try:
                value = json.loads(found[0]).get("serial")
                hint = value if isinstance(value, int) and value > 0 else None
            except (ValueError, AttributeError):
                hint = None
        after = self._serials_after(hint)
        if after:
            return max(after)
        if hint is None:
            return 0
        # the hint names the latest version — unless it is stale (a deleted workspace)
        if self._list(self._version_key(hint), limit=1) == [self._version_key(hint)]:
            return hint
        every = self._serials_after(None)
        return max(every) if every else 0

    def _newer_than(self, serial: int) -> bool:
        return bool(self._list(f"{self.prefix}versions/",
                               start_after=self._version_key(serial), limit=1))

    def _journal_rows(self, base: int) -> list[JournalRow]:
        keys = self._list(f"{self.prefix}journal/{_serial_key(base)}/")
        rows: list[JournalRow] = []
        for key, got in zip(keys, self._fetch(keys)):
            if got is None:
                raise _Conflict("gone")  # deleted by a write meanwhile: read again
            try:
                data = json.loads(got[0])
                if not isinstance(data, list):
                    raise ValueError("it is not a list of rows")
                for row in data:
                    address, action, record = row
                    if not isinstance(address, str) or not isinstance(action, str) or \
                            not (record is None or isinstance(record, str)):
                        raise ValueError("a row is not [address, action, record]")
                    rows.append(JournalRow(address, action, record))
            except (ValueError, TypeError, RecursionError) as exc:
                raise self.damaged(
                    f"the journal object {key} is damaged ({exc}). Delete that object: the "
                    "results it held are then lost, and the next plan reads those objects "
                    "from the world again") from None
        return rows

    def _snapshot(self, read: Callable[[int], Any]) -> tuple[int, Any]:
        """(latest serial, ``read(serial)``), repeated until no newer version appeared while
        reading (a write deletes the journal it folded in)."""
        for _ in range(_WRITE_ATTEMPTS):
            serial = self._latest_serial()
            try:
                value = read(serial)
            except _Conflict:
                continue
            if not self._newer_than(serial):
                return serial, value
        raise DiagnosticError(Diagnostic.error(
            "State store error",
            f"The state in {self._where()} kept changing while it was read "
            f"({_WRITE_ATTEMPTS} attempts); try again."))

    def get_latest(self) -> tuple[StoredVersion | None, list[JournalRow]]:
        """The latest version and the journal rows on it, as of one moment."""
        def read(serial: int) -> tuple[StoredVersion | None, list[JournalRow]]:
            latest = None
            if serial:
                got = self._get(self._version_key(serial))
                if got is None:
                    raise _Conflict("gone")
                latest = StoredVersion(serial, _text(got[0]))
            return latest, self._journal_rows(serial)

        result: tuple[StoredVersion | None, list[JournalRow]] = self._snapshot(read)[1]
        return result

    def get_journal(self) -> list[JournalRow]:
        """The journal rows on the latest version, oldest first."""
        rows: list[JournalRow] = self._snapshot(self._journal_rows)[1]
        return rows

    def get_version(self, serial: int) -> StoredVersion | None:
        """Version ``serial`` with its desired state, or None."""
        if serial <= 0:
            return None
        got = self._get(self._version_key(serial))
        if got is None:
            return None
        body, meta = got
        desired: str | bytes | None = None
        token = meta.get("tectum-desired")
        if token:
            found = self._get(f"{self.prefix}desired/{_serial_key(serial)}-{token}.json")
            desired = None if found is None else _text(found[0])
        return StoredVersion(serial, _text(body), desired)

    def _head(self, key: str) -> dict[str, str]:
        got = self._call("s3", "head_object", missing=("404", "NoSuchKey"),
                         Bucket=self.settings.bucket, Key=key)
        return dict((got or {}).get("Metadata") or {})

    def history(self) -> list[VersionInfo]:
        """Every version's metadata, oldest first (one listing, a HEAD per version)."""
        serials = sorted(self._serials_after(None))
        keys = [self._version_key(s) for s in serials]
        if len(keys) > 2:
            with ThreadPoolExecutor(min(_FETCH_THREADS, len(keys))) as pool:
                metas = list(pool.map(self._head, keys))
        else:
            metas = [self._head(k) for k in keys]
        out = []
        for serial, meta in zip(serials, metas):
            def field(name: str, meta: dict[str, str] = meta) -> str:
                return unquote(meta.get(f"tectum-{name}", ""))

            try:
                created = float(field("created-at") or 0)
            except ValueError:
                created = 0.0
            out.append(VersionInfo(serial, field("lineage"), created, field("author"),
                                   field("operation"), field("revision") or None))
        return out

    def put_version(self, make: Callable[[StoredVersion | None], NewVersion]) -> NewVersion:
        """Store the version ``make`` returns for the latest one (a conditional PUT: another
        writer that stored that serial first makes this one read again and retry), then
        delete the journal it folds in and move the head hint."""
        for _ in range(_WRITE_ATTEMPTS):
            self._check_lock()
            serial = self._latest_serial()
            latest = None
            if serial:
                got = self._get(self._version_key(serial))
                if got is None:
                    continue
                latest = StoredVersion(serial, _text(got[0]))
            new = make(latest)
            meta = {"tectum-lineage": new.lineage, "tectum-created-at": repr(new.created_at),
                    "tectum-author": new.author, "tectum-operation": new.operation}
            if new.revision is not None:
                meta["tectum-revision"] = new.revision
            meta = {k: quote(v, safe="") for k, v in meta.items()}
            desired_key = None
            if new.desired is not None:
                token = os.urandom(8).hex()
                desired_key = f"{self.prefix}desired/{_serial_key(new.serial)}-{token}.json"
                self._put(desired_key, new.desired.encode())
                meta["tectum-desired"] = token
            try:
                self._put(self._version_key(new.serial), new.document.encode(),
                          metadata=meta, new=True)
            except _Conflict:
                if desired_key is not None:
                    self._delete([desired_key])
                continue
            break
        else:
            raise DiagnosticError(Diagnostic.error(
                "State store error",
                f"Other writers kept storing versions of the state in {self._where()} first "
                f"({_WRITE_ATTEMPTS} attempts); nothing was stored. Try again."))
        self._put(f"{self.prefix}head.json", json.dumps({"serial": new.serial}).encode())
        folded = [k for k in self._list(f"{self.prefix}journal/")
                  if (_serial_of(k.removeprefix(f"{self.prefix}journal/").split("/")[0])
                      or 0) < new.serial]
        self._delete(folded)
        return new

    def append_journal(self, base_serial: int, rows: Sequence[JournalRow]) -> None:
        """Store ``rows`` as one journal object (durable when this returns)."""
        if not rows:
            return
        self._check_lock()
        now = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = now
        key = (f"{self.prefix}journal/{_serial_key(base_serial)}/"
               f"{now:0{_DIGITS}d}-{os.getpid()}-{os.urandom(4).hex()}.json")
        self._put(key, json.dumps([list(r) for r in rows], separators=(",", ":")).encode())

    # -- workspaces --------------------------------------------------------------------------
    def workspaces(self) -> list[str]:
        """Workspaces with at least one version."""
        top = f"{self.settings.key}/{WORKSPACE_PREFIX}/"
        names: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": top,
                                      "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("s3", "list_objects_v2", **kwargs)
            names.extend(p["Prefix"][len(top):].rstrip("/")
                         for p in page.get("CommonPrefixes", ()))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
        return [n for n in names
                if self._list(f"{top}{n}/versions/", limit=1)]

    def delete_workspace(self, name: str) -> None:
        """Delete every object of workspace ``name`` (its lock item is left alone)."""
        self._delete(self._list(f"{self.settings.key}/{WORKSPACE_PREFIX}/{name}/"))

    def close(self) -> None:
        """Release a lock still held by this object."""
        if self._lock_id is not None:
            self.unlock(self._lock_id)
        self._stop_heartbeat()

    # -- lock ------------------------------------------------------------------------------
    def _item_key(self) -> dict[str, Any]:
        return {"LockID": {"S": self.lock_key}}

    def _read_lock(self) -> tuple[str, LockInfo | None, float] | None:
        got = self._call("dynamodb", "get_item", TableName=self.settings.dynamodb_table,
                         Key=self._item_key(), ConsistentRead=True)
        return _parse_lock(got.get("Item"))

    def lock(self, operation: str, *, timeout: float = 0.0) -> tuple[LockInfo, str | None]:
        """Take the workspace lock, waiting up to ``timeout`` seconds (attempts with backoff
        from 50 ms to 1 s, the last at the deadline). Returns the lock and, when a dead
        holder's lock (same machine, process gone; or lease run out) was taken over, a warning
        sentence. Raises :class:`DiagnosticError` "State is locked" naming the holder."""
        from tectum import __version__

        if self._lock_held is not None:  # this object's own lock: no point in waiting
            raise self._locked(self._lock_held, 0)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            info = LockInfo(os.urandom(16).hex(), operation, author(), os.uname().nodename,
                            os.getpid(), __version__, time.time())
            got, holder = self._try_lock(info)
            if got:
                self._lock_id, self._lock_held, self._lost = info.id, info, False
                self._revoked = None
                self._start_heartbeat(info.id)
                warning = None
                if holder is not None:
                    warning = ("The previous run did not finish cleanly and left its lock "
                               f"({holder.describe()}); the lock was taken over.")
                return info, warning
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked(holder, timeout)
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    def _new_item(self, info: LockInfo) -> dict[str, Any]:
        return {"LockID": {"S": self.lock_key}, "Id": {"S": info.id},
                "Info": {"S": json.dumps(info._asdict())},
                "Expires": {"N": repr(time.time() + LEASE)}}

    def _try_lock(self, info: LockInfo) -> tuple[bool, LockInfo | None]:
        """One attempt: (True, a dead holder taken over) or (False, the live holder)."""
        table = self.settings.dynamodb_table
        holder: LockInfo | None = None
        for _ in range(5):  # (the holder may release it between the two requests)
            try:
                self._call("dynamodb", "put_item", conflict=("ConditionalCheckFailedException",),
                           TableName=table, Item=self._new_item(info),
                           ConditionExpression="attribute_not_exists(LockID)")
                return True, None
            except _Conflict:
                pass
            found = self._read_lock()
            if found is None:
                continue
            held_id, holder, expires = found
            dead = holder is not None and holder.host == os.uname().nodename \
                and not pid_alive(holder.pid)
            if not dead and time.time() <= expires:
                return False, holder
            try:  # take over that very lock (of racing takers, one wins)
                self._call("dynamodb", "put_item", conflict=("ConditionalCheckFailedException",),
                           TableName=table, Item=self._new_item(info),
                           ConditionExpression="Id = :old",
                           ExpressionAttributeValues={":old": {"S": held_id}})
                return True, holder or LockInfo(held_id, "?", "?", "?", 0, "?", 0.0)
            except _Conflict:
                continue
        return False, holder

    def _locked(self, holder: LockInfo | None, timeout: float) -> DiagnosticError:
        who = holder.describe() if holder else "details unavailable"
        waited = f" (waited {timeout:g} s)" if timeout else ""
        return DiagnosticError(Diagnostic.error(
            "State is locked",
            f"Workspace {self.workspace!r} is locked by another run{waited}: {who}. "
            "Wait for that run to finish (or pass --lock-timeout to wait). A run that died "
            f"on this machine is taken over at once, one on another machine after {LEASE:g} s "
            "without renewing its lease; `tectum force-unlock ID` releases it at once.",
        ))

    def _renew(self, lock_id: str) -> None:
        """Extend the lease of ``lock_id``; :class:`_Conflict` when it is no longer held."""
        self._call("dynamodb", "update_item", conflict=("ConditionalCheckFailedException",),
                   TableName=self.settings.dynamodb_table, Key=self._item_key(),
                   UpdateExpression="SET Expires = :e", ConditionExpression="Id = :id",
                   ExpressionAttributeValues={":e": {"N": repr(time.time() + LEASE)},
                                              ":id": {"S": lock_id}})

    def _start_heartbeat(self, lock_id: str) -> None:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT):
                try:
                    self._renew(lock_id)
                except _Conflict:
                    if not stop.is_set():
                        self._lost = True
                    return
                except DiagnosticError:
                    continue  # (the network; the next state operation says so, or renews)

        self._stop = stop
        self._beat = threading.Thread(target=beat, name=f"tectum-lock-{self.workspace}",
                                      daemon=True)
        self._beat.start()

    def _stop_heartbeat(self) -> None:
        stop, self._stop, self._beat = self._stop, None, None
        if stop is not None:
            stop.set()

    def _check_lock(self) -> None:
        """Before a write: when this object holds the lock, renew it — which fails when the
        lock was taken from it (force-unlock, a lease that ran out)."""
        if self._revoked is not None:
            raise self._lock_lost(self._revoked)
        lock_id = self._lock_id
        if lock_id is None:
            return
        try:
            if self._lost:
                raise _Conflict("lost")
            self._renew(lock_id)
        except _Conflict:
            self._lock_id = None
            self._lock_held = None
            self._revoked = lock_id
            self._stop_heartbeat()
            raise self._lock_lost(lock_id) from None

    def _lock_lost(self, lock_id: str) -> DiagnosticError:
        return DiagnosticError(Diagnostic.error(
            "State lock lost",
            f"The lock {lock_id} on workspace {self.workspace!r} is no longer held by this "
            f"run (someone ran force-unlock, or its lease of {LEASE:g} s ran out while the run "
            "could not renew it), so another run may hold it now. Nothing more was stored; "
            "run the command again: what was already recorded is kept in the journal."))

    def unlock(self, lock_id: str) -> bool:
        """Release the lock this object holds; False when ``lock_id`` is not it, or it was
        lost (taken over, force-unlocked) or cannot be reached (the lock then stays until it
        is taken over). Unlocking a lost lock ends the refusal of this object's writes."""
        if self._revoked is not None and lock_id == self._revoked:
            self._revoked = None
            return False
        if self._lock_id is None or lock_id != self._lock_id:
            return False
        self._lock_id = None
        self._lock_held = None
        self._stop_heartbeat()
        try:
            self._call("dynamodb", "delete_item", conflict=("ConditionalCheckFailedException",),
                       TableName=self.settings.dynamodb_table, Key=self._item_key(),
                       ConditionExpression="Id = :id",
                       ExpressionAttributeValues={":id": {"S": lock_id}})
        except (_Conflict, DiagnosticError):
            return False
        return True

    def lock_info(self) -> LockInfo | None:
        """The recorded holder (possibly a dead one, until its lock is taken over)."""
        found = self._read_lock()
        return None if found is None else found[1]

    def force_unlock(self, lock_id: str) -> None:
        """Delete the lock item whatever its holder is doing (Terraform's ``force-unlock``);
        a holder still running fails at its next state operation with "State lock lost".
        DiagnosticError "Not locked" or "Lock ID mismatch"."""
        if self._lock_id is not None and self._lock_id == lock_id:
            self.unlock(lock_id)
            return
        found = self._read_lock()
        if found is None:
            raise DiagnosticError(Diagnostic.error(
                "Not locked", f"Workspace {self.workspace!r} is not locked; nothing to do."))
        if found[0] != lock_id:
            raise DiagnosticError(Diagnostic.error(
                "Lock ID mismatch",
                f"The lock on workspace {self.workspace!r} has ID {found[0]}, not {lock_id}. "
                "Check the ID in the error that named the holder."))
        try:
            self._call("dynamodb", "delete_item", conflict=("ConditionalCheckFailedException",),
                       TableName=self.settings.dynamodb_table, Key=self._item_key(),
                       ConditionExpression="Id = :id",
                       ExpressionAttributeValues={":id": {"S": lock_id}})
        except _Conflict:
            raise DiagnosticError(Diagnostic.error(
                "Lock ID mismatch",
                f"The lock {lock_id} on workspace {self.workspace!r} was released or taken "
                "over meanwhile; nothing was done.")) from None


class S3Backend(StateManager):
    """The state of workspace ``workspace`` in S3 with locks in DynamoDB (``settings``): the
    state rules of :class:`~tectum.state.manager.StateManager` over :class:`S3Storage`."""

    storage: S3Storage

    def __init__(self, settings: S3Settings, workspace: str = "default") -> None:
        super().__init__(S3Storage(settings, workspace))
