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

* ``versions/SLOT.json`` (slot 1, 2, 3..., zero-padded to 20 digits so that keys sort) — the
  state document of the SLOT-th version stored, exactly as ``tectum state pull`` prints it; its
  serial, lineage, time, author, operation and revision are the object's user metadata
  (``x-amz-meta-tectum-*``, percent-encoded). The serial grows with the slot and equals it unless
  a push jumped ahead. A version is always written into the slot after the latest with
  ``If-None-Match: *``: the conditional write *is* the commit, so of two writers exactly one
  fills it — whatever serials they computed — and the other reads the new latest version and
  tries again (the push rules are checked again then). The store must honour that header.
* ``desired/SERIAL-TOKEN.json`` — the desired state a version applied, written before the version
  (whose ``tectum-desired`` metadata names the TOKEN), so that a version never points at a
  desired state that is not there.
* ``journal/BASE/SEQ.json`` — one object per ``intend``/``record`` call: a JSON array of
  ``[address, action, record]`` rows, on serial BASE, written into the next sequence slot (1, 2,
  3...) with ``If-None-Match: *``; replayed by ``read`` in sequence order (the order they were
  stored in; no clock is involved) when BASE is still the latest serial; deleted by the next
  ``write`` (best effort after the commit, as is moving the head hint).
* ``head.json`` — ``{"slot": N}``, a hint where to start listing ``versions/`` (the latest
  version is the last key listed after it), so that a read costs a few requests however long the
  history is. It may lag behind (a writer killed before updating it); it is never trusted alone.

Versions and journal objects carry a random ``tectum-write-id``: when a conditional PUT's
response is lost and botocore's retry fails the condition, the object's write ID tells this
writer's own write (done) from another's.

S3 reads and lists are strongly consistent (since December 2020), which the snapshot of ``read``
relies on: the latest version and its journal are read, then the read is repeated if a newer
version appeared meanwhile (its ``write`` may have deleted part of that journal).

The lock — one DynamoDB item per workspace, ``LockID = "BUCKET/KEY/env:/WORKSPACE"``, taken with
``PutItem`` on ``attribute_not_exists(LockID)`` (so of racing lockers exactly one wins and the
others read its details), holding ``Id``, ``Info`` (the :class:`LockInfo` JSON), ``Rvn`` (a
random renewal version), ``Lease`` (seconds) and ``Owner`` (:func:`_owner`: boot ID, PID
namespace, process start time). A holder renews every :data:`HEARTBEAT` seconds from a background
thread by setting a new ``Rvn`` (a conditional ``UpdateItem`` on its ``Id``, which is also how it
finds out it lost the lock). The lease is judged by observation, as the Amazon DynamoDB lock
client does — no clocks of two machines are compared. A lock is taken over, with a warning
naming the previous holder, when

* its holder ran in this machine's boot and PID namespace and its process is gone (or its PID is
  a later process's) — at once; or
* a taker saw the same ``Id`` and ``Rvn`` for the holder's whole lease on its own monotonic clock
  (so only while waiting: ``timeout`` > :data:`LEASE`); the takeover is conditional on both.

A holder keeps a local deadline: the monotonic time its last successful renewal started, plus
the lease. Each attempt of an S3 write (a botocore ``before-send`` hook: retries too) is sent
only while the deadline is more than one attempt away (``attempt_budget``: connect plus read
timeout, a third of ``LEASE - HEARTBEAT``), else the lock is renewed first ("State lock lost"
when it is gone). The lock is renewed before a version write and a workspace delete, before a
journal write when the last renewal is older than a heartbeat, and after a write that ended past
the deadline (then "State lock lost" says the write may have raced). ``force-unlock ID`` deletes
the item whatever its holder is doing (as Terraform's); see ``docs/state-s3.md``.

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
import logging
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

_log = logging.getLogger(__name__)

#: seconds a lock stays held after the last renewal a taker saw: a taker on any machine that sees
#: the same renewal version (``Rvn``) for this long on its own monotonic clock takes the lock over
LEASE = 60.0
#: seconds between renewals of a held lock's lease
HEARTBEAT = 10.0
#: Terraform's ``workspace_key_prefix``
WORKSPACE_PREFIX = "env:"
_DIGITS = 20
#: attempts at storing a version when other writers keep storing the same slot first
_WRITE_ATTEMPTS = 20
#: attempts of one DynamoDB request (a renewal must end well within LEASE - HEARTBEAT)
_DDB_ATTEMPTS = 2
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


def _proc_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, ``/proc/PID/stat`` field 22);
    None where there is no ``/proc`` or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return stat[stat.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def _owner() -> dict[str, str | None]:
    """What tells this process apart from any other, on any machine: the kernel's boot ID
    (``/proc/sys/kernel/random/boot_id``, new at every boot, distinct on cloned VMs), the PID
    namespace (``/proc/self/ns/pid``: containers have their own) and the process start time.
    A value is None where Linux's ``/proc`` does not give it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot_id: str | None = fh.read().strip() or None
    except OSError:
        boot_id = None
    try:
        pid_ns: str | None = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = None
    return {"boot_id": boot_id, "pid_ns": pid_ns, "start": _proc_start(os.getpid())}


class _Held(NamedTuple):
    """An item of the lock table: its ``id``, the holder's details (None when unreadable), the
    renewal version ``rvn`` (None: none recorded), the holder's ``lease`` in seconds and its
    ``owner`` (:func:`_owner`, empty when not recorded)."""

    id: str
    info: LockInfo | None
    rvn: str | None
    lease: float
    owner: dict[str, Any]


def _parse_lock(item: dict[str, Any] | None, lease: float) -> _Held | None:
    """An item of the lock table (``lease``: the one to assume when it records none); None for
    no item."""
    if not item:
        return None
    lock_id = item.get("Id", {}).get("S", "")
    try:
        held_lease = float(item.get("Lease", {}).get("N", repr(lease)))
    except ValueError:
        held_lease = lease
    info: LockInfo | None = None
    try:
        data = json.loads(item.get("Info", {}).get("S", "null"))
        info = LockInfo(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        info = None
    try:
        owner = json.loads(item.get("Owner", {}).get("S", "{}"))
    except ValueError:
        owner = {}
    return _Held(lock_id, info, item.get("Rvn", {}).get("S"),
                 held_lease if held_lease > 0 else lease,
                 owner if isinstance(owner, dict) else {})


class _Conflict(Exception):
    """A conditional request whose condition did not hold."""


class _Fenced(Exception):
    """An S3 write refused before it was sent: the lock's lease (by this process's monotonic
    clock) might end before the request does."""


class S3Storage:
    """The versions, journal and lock of one workspace in an S3 bucket and a DynamoDB table:
    storage only (:class:`~tectum.backends.base.StateStorage`); :class:`S3Backend` adds the
    rules. The module docstring describes the layout and the lock. ``LEASE`` and ``HEARTBEAT``
    are read when the object is made (tests shorten them)."""

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
        self.lease = float(LEASE)
        self.heartbeat = float(HEARTBEAT)
        if not 0 < self.heartbeat < self.lease:
            raise ValueError("HEARTBEAT must be positive and shorter than LEASE")
        #: the longest one attempt of a request may take (connect + read timeout): a third of
        #: what is left of a lease between two renewals
        self.attempt_budget = (self.lease - self.heartbeat) / 3
        self._s3: Any = None
        self._ddb: Any = None
        self._lock_id: str | None = None
        self._lock_held: LockInfo | None = None
        self._lost = False
        #: the ID of a lock this object lost: its writes are refused until it unlocks it
        self._revoked: str | None = None
        self._stop: threading.Event | None = None
        self._beat: threading.Thread | None = None
        #: monotonic: when the last successful renewal (or the taking) of the lock started,
        #: and until when the lock is surely this object's (no taker can have seen the
        #: renewal version unchanged for a whole lease before then)
        self._renewed_at = 0.0
        self._deadline = 0.0
        #: the next journal sequence number per base serial; serial of each version slot
        self._journal_next: dict[int, int] = {}
        self._slot_serials: dict[int, int] = {}

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
                if s.profile is not None:
                    which = (f"The AWS profile {s.profile!r} of the S3 state backend (profile "
                             "in [state])")
                    fix = "remove profile from [state]"
                else:
                    which = (f"The AWS profile {os.environ.get('AWS_PROFILE', '')!r} named by "
                             "AWS_PROFILE in the environment")
                    fix = "unset AWS_PROFILE"
                raise DiagnosticError(Diagnostic.error(
                    "Unknown AWS profile",
                    f"{which} is not in ~/.aws/config or ~/.aws/credentials (or "
                    "AWS_CONFIG_FILE). Add it (`aws configure --profile NAME`), or "
                    f"{fix} to use the default credential chain.")) from None
            if not session.region_name:
                raise DiagnosticError(Diagnostic.error(
                    "No AWS region for the state",
                    f"The S3 state backend does not know the region of bucket {s.bucket!r}: "
                    "set region = \"...\" in [state], or AWS_REGION in the environment."))
            # one attempt of any request ends within attempt_budget (a write is sent only when
            # the lease has longer than that to run); DynamoDB (renewals) gets few attempts
            connect = min(5.0, self.attempt_budget / 4)
            base = {"connect_timeout": connect, "read_timeout": self.attempt_budget - connect}
            s3_config = botocore.config.Config(
                **base, retries={"mode": "standard"},
                s3={"addressing_style": "path" if s.use_path_style else "auto"})
            ddb_config = botocore.config.Config(
                **base, retries={"mode": "standard", "total_max_attempts": _DDB_ATTEMPTS})
            try:
                self._ddb = session.client("dynamodb", endpoint_url=s.endpoint_url,
                                           config=ddb_config)
                self._s3 = session.client("s3", endpoint_url=s.endpoint_url, config=s3_config)
                for op in ("PutObject", "DeleteObjects"):  # (before each attempt, retries too)
                    self._s3.meta.events.register(f"before-send.s3.{op}", self._fence)
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
        for _ in range(3):
            try:
                return getattr(client, op)(**kwargs)
            except _Fenced:  # the lease is too near its end to send a write: renew, resend
                self._check_lock(force=True)
            except bex.ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in conflict:
                    raise _Conflict(code) from None
                if code in missing:
                    return None
                raise self._service_error(exc, service) from None
            except bex.BotoCoreError as exc:
                raise self._service_error(exc, service) from None
        raise self._too_slow()

    def _fence(self, **_: Any) -> None:
        """botocore's ``before-send`` of every S3 write attempt: while this object holds the
        lock, refuse to send unless its lease (on this process's monotonic clock) lasts longer
        than one attempt can take — so no write of a holder lands after a takeover."""
        if self._lock_id is not None and \
                self._deadline - time.monotonic() <= self.attempt_budget:
            raise _Fenced()

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
        self._call("s3", "put_object",
                   conflict=("PreconditionFailed", "ConditionalRequestConflict"),
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

    def _put_new(self, key: str, body: bytes, metadata: dict[str, str]) -> bool:
        """Store an object only when there is none (``If-None-Match: *``); True when stored.
        A write ID in its metadata tells this object's own write — one whose response was
        lost and whose retry then found it there — from another writer's (False)."""
        write_id = os.urandom(8).hex()
        try:
            self._put(key, body, metadata={**metadata, "tectum-write-id": write_id}, new=True)
        except _Conflict:
            return self._head(key).get("tectum-write-id") == write_id
        return True

    def _version_key(self, slot: int) -> str:
        return f"{self.prefix}versions/{_serial_key(slot)}.json"

    def _slots_after(self, start: int | None) -> list[int]:
        keys = self._list(f"{self.prefix}versions/",
                          start_after=None if start is None else self._version_key(start))
        return [s for s in (_serial_of(k) for k in keys if k.endswith(".json"))
                if s is not None]

    def _latest_slot(self) -> int:
        """The slot of the latest version (0: none), from the head hint and one listing."""
        hint: int | None = None
        found = self._get(f"{self.prefix}head.json")
        if found is not None:
            try:
                value = json.loads(found[0]).get("slot")
                hint = value if isinstance(value, int) and value > 0 else None
            except (ValueError, AttributeError):
                hint = None
        after = self._slots_after(hint)
        if after:
            return max(after)
        if hint is None:
            return 0
        # the hint names the latest version — unless it is stale (a deleted workspace)
        if self._list(self._version_key(hint), limit=1) == [self._version_key(hint)]:
            return hint
        every = self._slots_after(None)
        return max(every) if every else 0

    def _newer_than(self, slot: int) -> bool:
        return bool(self._list(f"{self.prefix}versions/",
                               start_after=self._version_key(slot), limit=1))

    def _serial_in(self, slot: int, meta: dict[str, str]) -> int:
        """The serial of the version in ``slot`` (its ``tectum-serial`` metadata; the slot
        number when that is missing, as in a version written by hand)."""
        value = meta.get("tectum-serial", "")
        serial = int(value) if value.isdigit() and int(value) > 0 else slot
        self._slot_serials[slot] = serial
        return serial

    def _serial_at(self, slot: int) -> int | None:
        """The serial of the version in ``slot`` (a HEAD, once per slot); None: no version."""
        if slot in self._slot_serials:
            return self._slot_serials[slot]
        got = self._call("s3", "head_object", missing=("404", "NoSuchKey"),
                         Bucket=self.settings.bucket, Key=self._version_key(slot))
        return None if got is None else self._serial_in(slot, dict(got.get("Metadata") or {}))

    def _slot_of(self, serial: int) -> int | None:
        """The slot that holds version ``serial``, or None. Serials grow with slots and are
        never below them, so the slot is ``serial`` itself unless a push jumped ahead: then a
        binary search over the slots below it (a HEAD each)."""
        if serial <= 0:
            return None
        lo, hi = 1, min(serial, self._latest_slot())
        first = True
        while lo <= hi:
            mid = hi if first else (lo + hi) // 2
            first = False
            found = self._serial_at(mid)
            if found is None:  # (a gap: a version deleted by hand) — look at them all
                return next((s for s in self._slots_after(None)
                             if self._serial_at(s) == serial), None)
            if found == serial:
                return mid
            if found < serial:
                lo = mid + 1
            else:
                hi = mid - 1
        return None

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

    def _snapshot(self, read: Callable[[int], Any]) -> Any:
        """``read(latest slot)``, repeated until no newer version appeared while reading (a
        write deletes the journal it folded in)."""
        for _ in range(_WRITE_ATTEMPTS):
            slot = self._latest_slot()
            try:
                value = read(slot)
            except _Conflict:
                continue
            if not self._newer_than(slot):
                return value
        raise DiagnosticError(Diagnostic.error(
            "State store error",
            f"The state in {self._where()} kept changing while it was read "
            f"({_WRITE_ATTEMPTS} attempts); try again."))

    def get_latest(self) -> tuple[StoredVersion | None, list[JournalRow]]:
        """The latest version and the journal rows on it, as of one moment."""
        def read(slot: int) -> tuple[StoredVersion | None, list[JournalRow]]:
            if not slot:
                return None, self._journal_rows(0)
            got = self._get(self._version_key(slot))
            if got is None:
                raise _Conflict("gone")
            serial = self._serial_in(slot, got[1])
            return StoredVersion(serial, _text(got[0])), self._journal_rows(serial)

        result: tuple[StoredVersion | None, list[JournalRow]] = self._snapshot(read)
        return result

    def get_journal(self) -> list[JournalRow]:
        """The journal rows on the latest version, oldest first."""
        def read(slot: int) -> list[JournalRow]:
            serial = self._serial_at(slot) if slot else 0
            if serial is None:
                raise _Conflict("gone")
            return self._journal_rows(serial)

        rows: list[JournalRow] = self._snapshot(read)
        return rows

    def get_version(self, serial: int) -> StoredVersion | None:
        """Version ``serial`` with its desired state, or None."""
        for _ in range(2):
            slot = self._slot_of(serial)
            got = None if slot is None else self._get(self._version_key(slot))
            if got is None or slot is None:
                return None
            if self._serial_in(slot, got[1]) == serial:
                break
            self._slot_serials.clear()  # (a workspace deleted and made again meanwhile)
        else:
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
        slots = sorted(self._slots_after(None))
        keys = [self._version_key(s) for s in slots]
        if len(keys) > 2:
            with ThreadPoolExecutor(min(_FETCH_THREADS, len(keys))) as pool:
                metas = list(pool.map(self._head, keys))
        else:
            metas = [self._head(k) for k in keys]
        out = []
        for slot, meta in zip(slots, metas):
            def field(name: str, meta: dict[str, str] = meta) -> str:
                return unquote(meta.get(f"tectum-{name}", ""))

            try:
                created = float(field("created-at") or 0)
            except ValueError:
                created = 0.0
            out.append(VersionInfo(self._serial_in(slot, meta), field("lineage"), created,
                                   field("author"), field("operation"),
                                   field("revision") or None))
        return out

    def put_version(self, make: Callable[[StoredVersion | None], NewVersion]) -> NewVersion:
        """Store the version ``make`` returns for the latest one in the next slot (a
        conditional PUT: when another writer filled that slot first, read again and retry),
        then delete the journal it folds in and move the head hint (best effort)."""
        for _ in range(_WRITE_ATTEMPTS):
            self._check_lock(force=True)
            slot = self._latest_slot()
            latest = None
            if slot:
                got = self._get(self._version_key(slot))
                if got is None:
                    continue
                latest = StoredVersion(self._serial_in(slot, got[1]), _text(got[0]))
            new = make(latest)
            meta = {"tectum-serial": str(new.serial), "tectum-lineage": new.lineage,
                    "tectum-created-at": repr(new.created_at), "tectum-author": new.author,
                    "tectum-operation": new.operation}
            if new.revision is not None:
                meta["tectum-revision"] = new.revision
            meta = {k: quote(v, safe="") for k, v in meta.items()}
            desired_key = None
            if new.desired is not None:
                token = os.urandom(8).hex()
                desired_key = f"{self.prefix}desired/{_serial_key(new.serial)}-{token}.json"
                self._put(desired_key, new.desired.encode())
                meta["tectum-desired"] = token
            if self._put_new(self._version_key(slot + 1), new.document.encode(), meta):
                self._slot_serials[slot + 1] = new.serial
                break
            if desired_key is not None:
                self._delete([desired_key])
        else:
            raise DiagnosticError(Diagnostic.error(
                "State store error",
                f"Other writers kept storing versions of the state in {self._where()} first "
                f"({_WRITE_ATTEMPTS} attempts); nothing was stored. Try again."))
        self._confirm(f"version {new.serial} was stored")
        try:  # (the version is committed: what follows only tidies up)
            self._put(f"{self.prefix}head.json", json.dumps({"slot": slot + 1}).encode())
            folded = [k for k in self._list(f"{self.prefix}journal/")
                      if (_serial_of(k.removeprefix(f"{self.prefix}journal/").split("/")[0])
                          or 0) < new.serial]
            self._delete(folded)
        except DiagnosticError as exc:
            _log.warning("state version %s stored; tidying up after it failed (the next write "
                         "does it): %s", new.serial, exc)
        return new

    def _next_seq(self, base: int) -> int:
        """One past the highest sequence number of the journal objects on ``base``."""
        seqs = [_serial_of(k) for k in self._list(f"{self.prefix}journal/{_serial_key(base)}/")]
        return max((s for s in seqs if s is not None), default=0) + 1

    def append_journal(self, base_serial: int, rows: Sequence[JournalRow]) -> None:
        """Store ``rows`` as one journal object (durable when this returns) in the next
        sequence slot on ``base_serial`` (a conditional PUT, so the order of the objects is
        the order in which they were stored, whatever the clocks say)."""
        if not rows:
            return
        self._check_lock()
        body = json.dumps([list(r) for r in rows], separators=(",", ":")).encode()
        prefix = f"{self.prefix}journal/{_serial_key(base_serial)}/"
        seq = self._journal_next.get(base_serial) or self._next_seq(base_serial)
        for _ in range(_WRITE_ATTEMPTS):
            if self._put_new(f"{prefix}{_serial_key(seq)}.json", body, {}):
                break
            seq = self._next_seq(base_serial)
        else:
            raise DiagnosticError(Diagnostic.error(
                "State store error",
                f"Other writers kept storing journal objects in {self._where()} first "
                f"({_WRITE_ATTEMPTS} attempts); nothing was stored. Try again."))
        self._journal_next = {base_serial: seq + 1}
        self._confirm("the journal object was stored")

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
        """Delete every object of workspace ``name`` (its lock item is left alone); checked
        against this object's lock first, as every write is."""
        self._check_lock(force=True)
        self._delete(self._list(f"{self.settings.key}/{WORKSPACE_PREFIX}/{name}/"))
        if name == self.workspace:
            self._slot_serials.clear()
            self._journal_next.clear()

    def close(self) -> None:
        """Release a lock still held by this object."""
        if self._lock_id is not None:
            self.unlock(self._lock_id)
        self._stop_heartbeat()

    # -- lock ------------------------------------------------------------------------------
    def _item_key(self) -> dict[str, Any]:
        return {"LockID": {"S": self.lock_key}}

    def _read_lock(self) -> _Held | None:
        got = self._call("dynamodb", "get_item", TableName=self.settings.dynamodb_table,
                         Key=self._item_key(), ConsistentRead=True)
        return _parse_lock(got.get("Item"), self.lease)

    def lock(self, operation: str, *, timeout: float = 0.0) -> tuple[LockInfo, str | None]:
        """Take the workspace lock, waiting up to ``timeout`` seconds (attempts with backoff
        from 50 ms to 1 s, the last at the deadline). A holder is taken over (with a warning
        sentence naming it) when it ran in this very machine's PID namespace and its process
        is gone — at once; or when the renewal version of its item was seen unchanged for its
        whole lease (on this process's monotonic clock) — which needs ``timeout`` > LEASE.
        Raises :class:`DiagnosticError` "State is locked" naming the holder."""
        from tectum import __version__

        if self._lock_held is not None:  # this object's own lock: no point in waiting
            raise self._locked(self._lock_held, 0, None)
        deadline = time.monotonic() + timeout
        delay = 0.05
        seen: tuple[str, str | None] | None = None  # (Id, Rvn) watched since seen_at
        seen_at = 0.0
        held: _Held | None = None
        while True:
            info = LockInfo(os.urandom(16).hex(), operation, author(), os.uname().nodename,
                            os.getpid(), __version__, time.time())
            for _ in range(5):  # (the holder may release it between the requests)
                started = time.monotonic()
                if self._put_lock(info, "attribute_not_exists(LockID)", {}):
                    return self._acquired(info, started, None)
                held = self._read_lock()
                if held is None:
                    continue
                if (held.id, held.rvn) != seen:
                    seen, seen_at = (held.id, held.rvn), time.monotonic()
                if not self._dead_here(held) and time.monotonic() - seen_at < held.lease:
                    break
                # take over that very lock, as renewed when seen (of racing takers one wins;
                # a renewal landing meanwhile makes this fail)
                values = {":old": {"S": held.id}}
                if held.rvn is None:
                    condition = "Id = :old AND attribute_not_exists(Rvn)"
                else:
                    condition = "Id = :old AND Rvn = :rvn"
                    values[":rvn"] = {"S": held.rvn}
                started = time.monotonic()
                if self._put_lock(info, condition, values):
                    return self._acquired(
                        info, started, held.info or LockInfo(held.id, "?", "?", "?", 0, "?", 0.0))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked(held.info if held else None, timeout,
                                   None if held is None else (held.lease,
                                                              time.monotonic() - seen_at))
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)

    def _put_lock(self, info: LockInfo, condition: str, values: dict[str, Any]) -> bool:
        """One conditional PutItem of a new lock item for ``info``: True when it is ours —
        also when the condition failed on a retry because the first attempt, whose response
        was lost, had stored it."""
        item = {"LockID": {"S": self.lock_key}, "Id": {"S": info.id},
                "Info": {"S": json.dumps(info._asdict())}, "Rvn": {"S": os.urandom(16).hex()},
                "Lease": {"N": repr(self.lease)}, "Owner": {"S": json.dumps(_owner())}}
        extra: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
        try:
            self._call("dynamodb", "put_item", conflict=("ConditionalCheckFailedException",),
                       TableName=self.settings.dynamodb_table, Item=item,
                       ConditionExpression=condition, **extra)
        except _Conflict:
            now = self._read_lock()
            return now is not None and now.id == info.id
        return True

    def _acquired(self, info: LockInfo, started: float,
                  previous: LockInfo | None) -> tuple[LockInfo, str | None]:
        self._lock_id, self._lock_held, self._lost = info.id, info, False
        self._revoked = None
        self._renewed_at, self._deadline = started, started + self.lease
        self._start_heartbeat(info.id)
        warning = None
        if previous is not None:
            warning = ("The previous run did not finish cleanly and left its lock "
                       f"({previous.describe()}); the lock was taken over.")
        return info, warning

    @staticmethod
    def _dead_here(held: _Held) -> bool:
        """Whether the holder ran in this machine's boot and PID namespace and its process is
        gone (or its PID now belongs to a process started later). Host name and PID alone
        prove nothing: containers and cloned machines share host names."""
        mine, theirs, info = _owner(), held.owner, held.info
        if info is None or any(mine[k] is None or theirs.get(k) != mine[k]
                               for k in ("boot_id", "pid_ns")):
            return False
        if not pid_alive(info.pid):
            return True
        start = _proc_start(info.pid)
        return start is not None and theirs.get("start") is not None and start != theirs["start"]

    def _locked(self, holder: LockInfo | None, timeout: float,
                watched: tuple[float, float] | None) -> DiagnosticError:
        who = holder.describe() if holder else "details unavailable"
        waited = f" (waited {timeout:g} s)" if timeout else ""
        lease = watched[0] if watched else self.lease
        quiet = (f" No renewal of its lease was seen in the {watched[1]:.0f} s watched."
                 if watched and watched[1] >= self.heartbeat else "")
        return DiagnosticError(Diagnostic.error(
            "State is locked",
            f"Workspace {self.workspace!r} is locked by another run{waited}: {who}.{quiet} "
            "Wait for that run to finish (--lock-timeout waits). A run that died on this "
            f"machine is taken over at once; any other once no renewal of its {lease:g} s lease "
            f"is seen while waiting for {lease:g} s (pass --lock-timeout {lease + 10:g}s or "
            "more for that); `tectum force-unlock ID` releases it at once.",
        ))

    def _renew(self, lock_id: str) -> None:
        """Renew the lease of ``lock_id``: a new renewal version, so that takers see it alive;
        moves the local deadline. :class:`_Conflict` when it is no longer held."""
        started = time.monotonic()
        self._call("dynamodb", "update_item", conflict=("ConditionalCheckFailedException",),
                   TableName=self.settings.dynamodb_table, Key=self._item_key(),
                   UpdateExpression="SET Rvn = :r", ConditionExpression="Id = :id",
                   ExpressionAttributeValues={":r": {"S": os.urandom(16).hex()},
                                              ":id": {"S": lock_id}})
        if self._lock_id == lock_id:
            self._renewed_at = max(self._renewed_at, started)
            self._deadline = max(self._deadline, started + self.lease)

    def _start_heartbeat(self, lock_id: str) -> None:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat):
                try:
                    self._renew(lock_id)
                except _Conflict:
                    if not stop.is_set():
                        self._lost = True
                    return
                except DiagnosticError:
                    continue  # (the network; the local deadline fences writes meanwhile)

        self._stop = stop
        self._beat = threading.Thread(target=beat, name=f"tectum-lock-{self.workspace}",
                                      daemon=True)
        self._beat.start()

    def _stop_heartbeat(self) -> None:
        stop, self._stop, self._beat = self._stop, None, None
        if stop is not None:
            stop.set()

    def _check_lock(self, *, force: bool = False) -> None:
        """Before a write: when this object holds the lock, renew it (``force``, or when the
        last renewal is older than a heartbeat) — which fails when the lock was taken from it
        (force-unlock, a takeover) — and see that its lease has longer to run than one request
        can take."""
        if self._revoked is not None:
            raise self._lock_lost(self._revoked)
        lock_id = self._lock_id
        if lock_id is None:
            return
        if not force and not self._lost and \
                time.monotonic() - self._renewed_at < self.heartbeat:
            return
        for _ in range(2):
            try:
                if self._lost:
                    raise _Conflict("lost")
                self._renew(lock_id)
            except _Conflict:
                self._revoke(lock_id)
                raise self._lock_lost(lock_id) from None
            if self._deadline - time.monotonic() > self.attempt_budget:
                return
        raise self._too_slow()

    def _confirm(self, what: str) -> None:
        """After a write: it ended before the lease could (the local deadline), so no other
        run can have held the lock meanwhile — else find out by renewing, and say that the
        write (``what``: a clause) may have raced with another run."""
        lock_id = self._lock_id
        if lock_id is None or time.monotonic() < self._deadline:
            return
        try:
            if self._lost:
                raise _Conflict("lost")
            self._renew(lock_id)
            return
        except _Conflict:
            self._revoke(lock_id)
            cause = "was taken from this run"
        except DiagnosticError:
            cause = "could not be renewed"
        raise DiagnosticError(Diagnostic.error(
            "State lock lost",
            f"The lock {lock_id} on workspace {self.workspace!r} {cause} while the write "
            f"took longer than its {self.lease:g} s lease: {what}, but another run may have "
            "changed the state at the same time. Run `tectum plan` to see where things "
            "stand."))

    def _revoke(self, lock_id: str) -> None:
        self._lock_id = None
        self._lock_held = None
        self._revoked = lock_id
        self._stop_heartbeat()

    def _too_slow(self) -> DiagnosticError:
        return DiagnosticError(Diagnostic.error(
            "Cannot reach the state store",
            f"Renewing the lock on workspace {self.workspace!r} in DynamoDB (table "
            f"{self.settings.dynamodb_table}) kept taking too long to leave time for a write "
            f"within its {self.lease:g} s lease; nothing more was stored. Check the network "
            "and run the command again: what was already recorded is kept in the journal."))

    def _lock_lost(self, lock_id: str) -> DiagnosticError:
        return DiagnosticError(Diagnostic.error(
            "State lock lost",
            f"The lock {lock_id} on workspace {self.workspace!r} is no longer held by this "
            f"run (someone ran force-unlock, or no renewal of its {self.lease:g} s lease "
            "reached DynamoDB and another run took it over), so another run may hold it now. "
            "Nothing more was stored; run the command again: what was already recorded is "
            "kept in the journal."))

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
        except _Conflict:  # gone: a retried delete whose first attempt did it counts as done
            try:
                return self._read_lock() is None
            except DiagnosticError:
                return False
        except DiagnosticError:
            return False
        return True

    def lock_info(self) -> LockInfo | None:
        """The recorded holder (possibly a dead one, until its lock is taken over)."""
        found = self._read_lock()
        return None if found is None else found.info

    def force_unlock(self, lock_id: str) -> None:
        """Delete the lock item whatever its holder is doing (Terraform's ``force-unlock``);
        a holder still running is refused its next write ("State lock lost", or told after
        a write that it may have raced). DiagnosticError "Not locked" or "Lock ID mismatch"."""
        if self._lock_id is not None and self._lock_id == lock_id:
            self.unlock(lock_id)
            return
        found = self._read_lock()
        if found is None:
            raise DiagnosticError(Diagnostic.error(
                "Not locked", f"Workspace {self.workspace!r} is not locked; nothing to do."))
        if found.id != lock_id:
            raise DiagnosticError(Diagnostic.error(
                "Lock ID mismatch",
                f"The lock on workspace {self.workspace!r} has ID {found.id}, not {lock_id}. "
                "Check the ID in the error that named the holder."))
        try:
            self._call("dynamodb", "delete_item", conflict=("ConditionalCheckFailedException",),
                       TableName=self.settings.dynamodb_table, Key=self._item_key(),
                       ConditionExpression="Id = :id",
                       ExpressionAttributeValues={":id": {"S": lock_id}})
        except _Conflict:
            if self._read_lock() is None:  # gone: done (a retried delete, or its holder)
                return
            raise DiagnosticError(Diagnostic.error(
                "Lock ID mismatch",
                f"The lock {lock_id} on workspace {self.workspace!r} was taken over "
                "meanwhile; nothing was done.")) from None


class S3Backend(StateManager):
    """The state of workspace ``workspace`` in S3 with locks in DynamoDB (``settings``): the
    state rules of :class:`~tectum.state.manager.StateManager` over :class:`S3Storage`."""

    storage: S3Storage

    def __init__(self, settings: S3Settings, workspace: str = "default") -> None:
        super().__init__(S3Storage(settings, workspace))
