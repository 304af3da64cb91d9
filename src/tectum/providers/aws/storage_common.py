"""What the aws provider's storage and identity types (:mod:`~tectum.providers.aws.s3`,
:mod:`~tectum.providers.aws.iam`, :mod:`~tectum.providers.aws.dynamodb`) share: tags as AWS
writes them, the per-object reads S3 and IAM cannot batch (run a few at once), Terraform's
durations (``timeouts``), and error messages made from botocore exceptions."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tectum.providers.aws.client import error_code
from tectum.values import is_known

A = TypeVar("A")
R = TypeVar("R")

#: tag keys AWS reserves for itself (``aws:cloudformation:stack-name``): never set by a
#: stack, never compared
RESERVED_TAG_PREFIX = "aws:"
#: per-object calls at once in a read (S3 and IAM offer no batch read of tags)
READ_WORKERS = 8


def tag_list(tags: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """``{"env": "prod"}`` → ``[{"Key": "env", "Value": "prod"}]`` (sorted by key)."""
    return [{"Key": str(k), "Value": str(v)} for k, v in sorted((tags or {}).items())]


def tag_dict(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """AWS's ``[{"Key": ..., "Value": ...}]`` → ``{KEY: VALUE}``, without the ``aws:`` tags
    AWS sets itself."""
    return {str(t["Key"]): str(t.get("Value") or "") for t in tags or ()
            if not str(t["Key"]).startswith(RESERVED_TAG_PREFIX)}


def valid_tags(value: Any) -> str | None:
    """Validator of ``tags``: ``{KEY: VALUE}`` strings, keys of 1 to 128 characters not
    starting with ``aws:``, values of at most 256 (AWS's tag rules)."""
    if not isinstance(value, dict):
        return None  # (the type check says so)
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            return f"tags are strings: {key!r} = {item!r} is not (write {{\"{key}\": \"{item}\"}})"
        if not is_known(key) or not is_known(item):
            continue
        if not 1 <= len(key) <= 128:
            return f"tag key {key!r} must be 1 to 128 characters long"
        if key.lower().startswith(RESERVED_TAG_PREFIX):
            return f"tag key {key!r}: keys starting with 'aws:' are reserved for AWS"
        if len(item) > 256:
            return f"the value of tag {key!r} is longer than 256 characters"
    return None


def tag_changes(old: Mapping[str, str], new: Mapping[str, str]
                ) -> tuple[dict[str, str], list[str]]:
    """What turns tags ``old`` into ``new``: the tags to set and the keys to remove."""
    put = {k: v for k, v in new.items() if old.get(k) != v}
    return put, sorted(k for k in old if k not in new)


def each(fn: Callable[[A], R], args: Sequence[A]) -> list[R]:
    """``[fn(a) for a in args]``, run :data:`READ_WORKERS` at once (per-object reads); the
    first exception is raised."""
    if len(args) <= 1:
        return [fn(a) for a in args]
    with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(args))) as pool:
        return list(pool.map(fn, args))


def failure(exc: BaseException, what: str) -> str:
    """A sentence for a failed AWS call: ``WHAT failed: CODE: message``."""
    response = getattr(exc, "response", None)
    code = error_code(exc)
    if code is not None and isinstance(response, dict):
        message = (response.get("Error") or {}).get("Message") or ""
        return f"{what} failed: {code}" + (f": {message}" if message else "")
    return f"{what} failed: {type(exc).__name__}: {exc}"


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def duration(text: str) -> float:
    """Terraform's duration (``"30s"``, ``"10m"``, ``"1h30m"``) in seconds. Raises
    ``ValueError``."""
    found = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not text or found is None or not any(found.groups()):
        raise ValueError(f"{text!r} is not a duration such as \"30s\", \"10m\" or \"1h30m\"")
    h, m, s = (int(g or 0) for g in found.groups())
    return float(h * 3600 + m * 60 + s)


def valid_timeouts(keys: Sequence[str]) -> Callable[[Any], str | None]:
    """Validator of a ``timeouts`` table (Terraform's ``timeouts`` block): only ``keys``,
    each a duration."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return None
        for key, item in value.items():
            if key not in keys:
                return f"unknown timeout {key!r} (known: {', '.join(keys)})"
            if isinstance(item, str) and not is_known(item):
                continue
            try:
                duration(item)
            except ValueError as exc:
                return f"timeouts.{key}: {exc}"
        return None

    return check


class StillListed(Exception):
    """A delete answered "no such object" while the List call kept showing the object."""


def delete_confirmed(delete: Callable[[], Any], codes: frozenset[str],
                     still_there: Callable[[], bool], *, what: str,
                     timeout: float = 30.0) -> None:
    """``delete()``; an answer "no such object" (one of ``codes``) counts as done only when
    ``still_there()`` (a List call) agrees: an eventually consistent API may deny an object
    it still holds (or still list one it has deleted), so the delete is tried again, with
    backoff (0.2 s doubling to 5 s), for up to ``timeout`` seconds. Raises
    :class:`StillListed` (naming ``what``) when the two still disagree then — the object is
    not reported deleted, so state keeps it and the next apply tries again — and the
    delete's own error for any other failure."""
    delay = 0.2
    deadline = time.monotonic() + timeout
    while True:
        try:
            delete()
            return
        except Exception as exc:
            if error_code(exc) not in codes:
                raise
        if not still_there():
            return
        if time.monotonic() + delay > deadline:
            raise StillListed(
                f"{what}: the delete answers that it does not exist, but AWS still lists it "
                f"after {timeout:.0f} s (eventual consistency); state keeps it: run the apply "
                "(or destroy) again")
        time.sleep(delay * (0.5 + random.random() / 2))
        delay = min(delay * 2, 5.0)


def there(call: Callable[[], Any], gone: frozenset[str]) -> bool | None:
    """True when ``call()`` (a Head/Get/Describe of one object by name) finds the object,
    None when it answers one of the "no such object" codes ``gone`` (for
    :meth:`~tectum.providers.aws.client.Aws.create_once`'s look after a lost answer)."""
    try:
        call()
    except Exception as exc:
        if error_code(exc) in gone:
            return None
        raise
    return True


def kept(item: Any, key: str, default: Any) -> Any:
    """The value of an attribute no read can see (``force_destroy``, ``timeouts``) for a
    :class:`~tectum.providers.base.ReadItem`: as state records it, else as configured (an
    object adopted after a crash: the journal's identity holds no such value), else
    ``default``."""
    for source in (item.prior, item.desired):
        if source is not None and source.get(key) is not None:
            return source[key]
    return default
