"""``aws_s3_bucket`` and ``aws_s3_bucket_versioning``: S3 buckets (Terraform's hashicorp/aws
resources of the same names and attributes).

``aws_s3_bucket``

* ``bucket`` (identity; a new name is a new bucket): S3's bucket naming rules, checked at plan
  time (3 to 63 characters; lower-case letters, digits, ``.`` and ``-``; starts and ends with a
  letter or digit; no ``..``, not an IP address, none of the reserved prefixes and suffixes).
* ``tags``: ``{KEY: VALUE}`` (``PutBucketTagging`` / ``DeleteBucketTagging``).
* ``force_destroy`` (default False): whether deleting the bucket first deletes every object
  version and delete marker in it. Like Terraform, the value *recorded in state* decides: set it,
  apply, then destroy. A non-empty bucket without it is not deleted: the apply fails naming the
  bucket. It lives in state only (nothing in AWS shows it).
* computed: ``arn`` (``arn:aws:s3:::BUCKET``), ``region`` (where the bucket is).

``aws_s3_bucket_versioning``

* ``bucket`` (identity), ``versioning_configuration = {"status": "Enabled" | "Suspended"}``.
* Deleting it follows Terraform: versioning of a bucket can never be turned off once enabled, so
  removing the resource *suspends* versioning (objects keep their versions; new writes make
  none). A bucket whose versioning was never enabled, or a bucket that is gone, has no
  versioning configuration: the read finds nothing. A delete of a configuration found suspended
  makes no call (so a destroy killed after suspending is finished by the next one). A suspended
  configuration that state does not hold is planned as a create when the stack enables it.

Reads. ``ListBuckets`` once per read (every bucket of the account), then per bucket the stack
manages what S3 can only tell one bucket at a time: ``GetBucketTagging`` (tags), and
``GetBucketLocation`` only for a bucket whose region is neither recorded in state nor listed
(AWS lists ``BucketRegion``; moto does not). The versioning type reads ``GetBucketVersioning``
per bucket. Per-bucket calls run 8 at once. S3 is strongly consistent: a bucket is visible as
soon as ``CreateBucket`` returns; a tagging call that finds no bucket right after it is retried
all the same (:func:`~tectum.providers.aws.client.until_visible`).

Crash recovery: a bucket's name is its identity (the journal keeps it), so a bucket a killed run
created is found by name and adopted by the next run; the versioning configuration is found by
its bucket.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.aws.client import Aws, error_code, until_visible
from tectum.providers.aws.storage_common import (
    StillListed,
    delete_confirmed,
    each,
    failure,
    kept,
    tag_dict,
    tag_list,
    there,
    valid_tags,
)
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem, ResourceType
from tectum.schema import Attr, Schema
from tectum.values import is_known

#: seconds a read waits for an object a List call showed to be visible to a call naming it
VISIBLE_WAIT = 10.0
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", "--x-s3", ".mrap")


def bucket_name_problem(value: Any) -> str | None:
    """Validator of ``bucket``: S3's general purpose bucket naming rules."""
    if not isinstance(value, str) or not is_known(value):
        return None
    rules = ("3 to 63 characters: lower-case letters, digits, '.' and '-', starting and "
             "ending with a letter or digit, e.g. \"my-app-logs\"")
    if not _BUCKET_RE.fullmatch(value):
        return f"{value!r} is not a valid S3 bucket name ({rules})"
    if ".." in value or ".-" in value or "-." in value:
        return f"{value!r} is not a valid S3 bucket name: no '..', '.-' or '-.' ({rules})"
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        pass
    else:
        return f"{value!r} is not a valid S3 bucket name: it looks like an IP address"
    for prefix in _RESERVED_PREFIXES:
        if value.startswith(prefix):
            return f"{value!r} is not a valid S3 bucket name: the prefix {prefix!r} is reserved"
    for suffix in _RESERVED_SUFFIXES:
        if value.endswith(suffix):
            return f"{value!r} is not a valid S3 bucket name: the suffix {suffix!r} is reserved"
    return None


def _check_all(rt: ResourceType[Any], out: dict[str, Any], keys: Sequence[str]) -> None:
    """Check resolved values again (a reference resolved at plan time was not checked when
    declared). Raises ``ValueError``."""
    for key in keys:
        value = out.get(key)
        if value is None:
            continue
        problem = rt.schema.attrs[key].check(value)
        if problem is not None:
            raise ValueError(f"Attribute {key!r}: {problem}")


def _list_buckets(aws: Aws) -> dict[str, dict[str, Any]]:
    """Every bucket of the account by name (``ListBuckets``, paginated)."""
    return {str(b["Name"]): b for b in aws.pages("s3", "list_buckets", "Buckets")}


def _bucket_tags(aws: Aws, bucket: str) -> dict[str, str] | None:
    """The tags of a bucket ``ListBuckets`` showed (``GetBucketTagging``; "no such bucket" is
    retried for a while: a bucket listed but not visible yet); None when the bucket is gone."""
    try:
        got = until_visible(lambda: aws.client("s3").get_bucket_tagging(Bucket=bucket),
                            codes=frozenset({"NoSuchBucket"}), timeout=VISIBLE_WAIT,
                            what=f"bucket {bucket}")
    except Exception as exc:
        code = error_code(exc)
        if code == "NoSuchTagSet":
            return {}
        if code == "NoSuchBucket":
            return None
        raise
    return tag_dict(got.get("TagSet"))


def _bucket_region(aws: Aws, bucket: str) -> str:
    got = aws.client("s3").get_bucket_location(Bucket=bucket)
    return str(got.get("LocationConstraint") or "us-east-1")


class BucketType(ResourceType[Aws]):
    """An S3 bucket (see the module docstring): ``S3Bucket("logs", bucket="acme-logs",
    tags={"team": "web"})``."""

    name = "aws_s3_bucket"
    schema = Schema({
        "bucket": Attr(str, required=True, identity=True, force_new=True,
                       validate=bucket_name_problem,
                       description="the bucket's name (S3's naming rules)"),
        "force_destroy": Attr(bool, default=False,
                              description="delete every object version with the bucket"),
        "tags": Attr(dict, default={}, validate=valid_tags, description="tags {KEY: VALUE}"),
        "arn": Attr(str, computed=True, description="arn:aws:s3:::BUCKET"),
        "region": Attr(str, computed=True, description="the region the bucket is in"),
    })
    stored_computed = ("arn", "region")
    #: an in-place update keeps them (dependants stay known)
    kept_on_update = frozenset({"arn", "region"})
    unobserved = frozenset({"force_destroy"})

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        if out.get("tags") is None:
            out["tags"] = {}
        _check_all(self, out, ("bucket", "tags", "force_destroy"))
        return out

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """``("s3_bucket", NAME)``: a bucket's versioning needs the bucket."""
        name = attrs.get("bucket")
        return [("s3_bucket", name)] if isinstance(name, str) else []

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        if prior.get("force_destroy"):
            return "deletes every object and object version in the bucket (force_destroy)"
        return "fails if the bucket is not empty (force_destroy is false)"

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action in (Action.DELETE, Action.REPLACE) and \
                (change.prior or {}).get("force_destroy"):
            return ["the bucket's objects are deleted with it; undoing this makes an empty "
                    "bucket"]
        return []

    # -- refresh -------------------------------------------------------------------------
    def read(self, target: Aws, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """``ListBuckets`` once, then ``GetBucketTagging`` per bucket found (and
        ``GetBucketLocation`` for one whose region is neither listed nor recorded). Returns
        ``{"bucket", "tags", "force_destroy" (from state), "arn", "region"}`` or None."""
        try:
            listed = _list_buckets(target)
            names = list(dict.fromkeys(
                str(i.attrs["bucket"]) for i in items
                if isinstance(i.attrs.get("bucket"), str) and i.attrs["bucket"] in listed))

            found = dict(zip(names, each(lambda n: _bucket_tags(target, n), names),
                             strict=True))
            regions: dict[str, str] = {}
            for item in items:
                name = item.attrs.get("bucket")
                if name not in found:
                    continue
                region = listed[name].get("BucketRegion") or (item.prior or {}).get("region")
                if region:
                    regions[str(name)] = str(region)
            unknown = [n for n in found if n not in regions and found[n] is not None]
            regions.update(zip(unknown, each(lambda n: _bucket_region(target, n), unknown),
                               strict=True))
        except Exception as exc:
            raise ReadError(failure(exc, "reading S3 buckets")) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            name = item.attrs.get("bucket")
            tags = found.get(name) if isinstance(name, str) else None
            if tags is None:
                out.append(None)
                continue
            out.append(_bucket(str(name), tags, regions.get(str(name), target.region),
                               bool(kept(item, "force_destroy", False))))
        return out

    # -- apply ---------------------------------------------------------------------------
    def apply(self, target: Aws, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE: ``CreateBucket`` (+ ``PutBucketTagging``); UPDATE: the tags; DELETE:
        ``DeleteBucket`` (with ``force_destroy`` recorded: every object version and delete
        marker first). Raises :class:`ApplyError`."""
        if change.action is Action.DELETE and change.before is None:
            return None  # (the plan found it gone: "only removed from state")
        if change.action in (Action.DELETE, Action.REPLACE):
            old = change.prior or change.before or {}
            if isinstance(old.get("bucket"), str):
                self._delete(target, str(old["bucket"]), bool(old.get("force_destroy")))
            if change.action is Action.DELETE:
                return None
        after = dict(change.after or {})
        name = str(after["bucket"])
        s3 = target.client("s3")
        found = False
        try:
            if change.action in (Action.CREATE, Action.REPLACE):
                params: dict[str, Any] = {"Bucket": name}
                if target.region != "us-east-1":
                    params["CreateBucketConfiguration"] = {"LocationConstraint": target.region}
                once = target.client("s3", once=True)
                try:
                    # (an answer lost on the way: the bucket there is this create's)
                    target.create_once(lambda: once.create_bucket(**params),
                                       lambda: there(lambda: s3.head_bucket(Bucket=name),
                                                        frozenset({"NoSuchBucket", "404"})),
                                       what=f"bucket {name}",
                                       exists=frozenset({"BucketAlreadyOwnedByYou"}))
                except Exception as exc:
                    if error_code(exc) != "BucketAlreadyOwnedByYou":
                        raise
                    # made meanwhile in this account by someone else: recorded as found (a
                    # destroy forgets it), with the tags the plan showed
                    found = True
                old_tags: dict[str, str] = {}
                region = target.region
            else:
                before = change.before or {}
                old_tags = dict(before.get("tags") or {})
                region = str(before.get("region") or target.region)
            tags = dict(after.get("tags") or {})
            if tags != old_tags or change.action in (Action.CREATE, Action.REPLACE):
                if tags:
                    until_visible(lambda: s3.put_bucket_tagging(
                        Bucket=name, Tagging={"TagSet": tag_list(tags)}),
                        codes=frozenset({"NoSuchBucket"}), timeout=10, what=f"bucket {name}")
                elif old_tags:
                    s3.delete_bucket_tagging(Bucket=name)
        except ApplyError:
            raise
        except Exception as exc:
            hint = ""
            if error_code(exc) == "BucketAlreadyExists":
                hint = (" (bucket names are global across all AWS accounts: another account "
                        "has this one; choose another name)")
            raise ApplyError(failure(exc, f"bucket {name}") + hint) from None
        made = _bucket(name, tags, region, bool(after.get("force_destroy", False)))
        return {**made, "_found": True} if found else made

    def _delete(self, aws: Aws, name: str, force: bool) -> None:
        s3 = aws.client("s3")

        def delete() -> None:
            if force:
                _empty(aws, name)
            s3.delete_bucket(Bucket=name)

        try:
            delete_confirmed(delete, frozenset({"NoSuchBucket"}),
                             lambda: name in _list_buckets(aws), what=f"bucket {name}")
        except StillListed as exc:
            raise ApplyError(str(exc)) from None
        except ApplyError:
            raise
        except Exception as exc:
            if error_code(exc) == "BucketNotEmpty":
                raise ApplyError(
                    f"bucket {name} is not empty: it was not deleted. Set force_destroy = True "
                    "on it and apply (then every object version in it is deleted with it), or "
                    "empty it yourself; then run destroy again") from None
            raise ApplyError(failure(exc, f"deleting bucket {name}")) from None


def _empty(aws: Aws, name: str) -> None:
    """Delete every object version and delete marker of bucket ``name`` (``ListObjectVersions``
    + ``DeleteObjects``, 1,000 at a time), until none is left."""
    s3 = aws.client("s3")
    for _ in range(100):
        batch: list[dict[str, str]] = []
        left = False
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            for entry in (page.get("Versions") or []) + (page.get("DeleteMarkers") or []):
                batch.append({"Key": entry["Key"], "VersionId": entry.get("VersionId") or
                              "null"})
                left = True
                if len(batch) == 1000:
                    _delete_objects(s3, name, batch)
                    batch = []
        if batch:
            _delete_objects(s3, name, batch)
        if not left:
            return
    raise ApplyError(f"bucket {name}: objects keep appearing while it is emptied")


def _delete_objects(s3: Any, name: str, batch: list[dict[str, str]]) -> None:
    got = s3.delete_objects(Bucket=name, Delete={"Objects": batch, "Quiet": True})
    errors = got.get("Errors") or []
    if errors:
        first = errors[0]
        raise ApplyError(f"bucket {name}: deleting {len(errors)} object version(s) failed, "
                         f"e.g. {first.get('Key')!r}: {first.get('Code')}: "
                         f"{first.get('Message')}")


def _bucket(name: str, tags: dict[str, str], region: str | None, force: bool) -> dict[str, Any]:
    return {"bucket": name, "force_destroy": force, "tags": dict(tags),
            "arn": f"arn:aws:s3:::{name}", "region": region}


#: the statuses ``versioning_configuration.status`` takes
STATUSES = ("Enabled", "Suspended")


def _valid_versioning(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    unknown = sorted(set(value) - {"status"})
    if unknown:
        return (f"unknown key(s) {unknown} in versioning_configuration (it holds status = "
                "\"Enabled\" or \"Suspended\")")
    status = value.get("status")
    if isinstance(status, str) and not is_known(status):
        return None
    if status not in STATUSES:
        return (f"versioning_configuration.status is {status!r}: it is \"Enabled\" or "
                "\"Suspended\"")
    return None


class BucketVersioningType(ResourceType[Aws]):
    """A bucket's versioning (see the module docstring): ``S3BucketVersioning("logs",
    bucket=logs.bucket, versioning_configuration={"status": "Enabled"})``."""

    name = "aws_s3_bucket_versioning"
    schema = Schema({
        "bucket": Attr(str, required=True, identity=True, force_new=True,
                       validate=bucket_name_problem, description="the bucket's name"),
        "versioning_configuration": Attr(
            dict, required=True, validate=_valid_versioning,
            description="{status = \"Enabled\" | \"Suspended\"}"),
    })

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        _check_all(self, out, ("bucket", "versioning_configuration"))
        return out

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        name = attrs.get("bucket")
        return [[("s3_bucket", name)]] if isinstance(name, str) else []

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return ("suspends versioning (S3 cannot turn it off); object versions already made "
                "stay")

    def read(self, target: Aws, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """``GetBucketVersioning`` per bucket (S3 has no batch read). Returns ``{"bucket",
        "versioning_configuration": {"status"}}``, or None when the bucket is gone or its
        versioning was never enabled."""
        names = list(dict.fromkeys(str(i.attrs["bucket"]) for i in items
                                   if isinstance(i.attrs.get("bucket"), str)))

        def status(name: str) -> str | None:
            try:
                got = target.client("s3").get_bucket_versioning(Bucket=name)
            except Exception as exc:
                if error_code(exc) == "NoSuchBucket":
                    return None
                raise
            found = got.get("Status")
            return str(found) if found else None

        try:
            found = dict(zip(names, each(status, names), strict=True))
        except Exception as exc:
            raise ReadError(failure(exc, "reading S3 bucket versioning")) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            got = found.get(str(item.attrs.get("bucket")))
            out.append(None if got is None else {
                "bucket": item.attrs["bucket"], "versioning_configuration": {"status": got}})
        return out

    def plan(self, desired: dict[str, Any], observed: dict[str, Any] | None,
             prior: dict[str, Any] | None) -> tuple[Action, list[AttrChange]]:
        """As the default, but a suspended configuration state does not hold, that the stack
        enables, is planned as a create (it is what a delete leaves: S3 cannot remove it)."""
        if observed is not None and prior is None and \
                (observed.get("versioning_configuration") or {}).get("status") == "Suspended" \
                and (desired.get("versioning_configuration") or {}).get("status") == "Enabled":
            return super().plan(desired, None, prior)
        return super().plan(desired, observed, prior)

    def apply(self, target: Aws, change: ResourceChange) -> dict[str, Any] | None:
        """``PutBucketVersioning``; a delete suspends (Terraform's rule). Raises
        :class:`ApplyError`."""
        if change.action is Action.DELETE and change.before is None:
            return None  # (the plan found it gone: "only removed from state")
        s3 = target.client("s3")
        if change.action is Action.DELETE:
            old = change.prior or change.before or {}
            name = str(old.get("bucket"))
            if ((change.before or {}).get("versioning_configuration") or {}).get(
                    "status") == "Suspended":
                return None  # (what a delete makes: suspended already)
            try:
                s3.put_bucket_versioning(Bucket=name,
                                         VersioningConfiguration={"Status": "Suspended"})
            except Exception as exc:
                if error_code(exc) == "NoSuchBucket":
                    return None
                raise ApplyError(failure(exc, f"suspending versioning of bucket {name}")) \
                    from None
            return None
        after = dict(change.after or {})
        name = str(after["bucket"])
        status = str((after.get("versioning_configuration") or {}).get("status"))
        try:
            until_visible(lambda: s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": status}),
                codes=frozenset({"NoSuchBucket"}), timeout=10, what=f"bucket {name}")
        except Exception as exc:
            hint = (" (declare the bucket in the stack, or create it first)"
                    if error_code(exc) == "NoSuchBucket" else "")
            raise ApplyError(failure(exc, f"versioning of bucket {name}") + hint) from None
        return {"bucket": name, "versioning_configuration": {"status": status}}
