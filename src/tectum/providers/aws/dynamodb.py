"""``aws_dynamodb_table``: a DynamoDB table (Terraform's hashicorp/aws ``aws_dynamodb_table``,
its key and capacity attributes; no secondary indexes, streams or TTL yet).

* ``name`` (identity; a new name is a new table): ``[a-zA-Z0-9_.-]{3,255}``.
* ``billing_mode``: ``"PROVISIONED"`` (the default, as Terraform's) or ``"PAY_PER_REQUEST"``.
* ``hash_key``, ``range_key`` (optional): attribute names of the key; changing either makes a
  new table (the plan says so: the table is deleted with its items).
* ``attribute``: ``[{"name": ..., "type": "S" | "N" | "B"}, ...]``: the key attributes'
  types, exactly those of ``hash_key`` and ``range_key`` (DynamoDB refuses others without an
  index); compared in any order.
* ``read_capacity``, ``write_capacity``: required with ``PROVISIONED``, not allowed with
  ``PAY_PER_REQUEST`` (DynamoDB reports 0 then).
* ``tags``; ``timeouts = {"create": "30m", "update": "60m", "delete": "10m"}`` (Terraform's
  defaults): how long to wait for the table to become ``ACTIVE`` after a create or update, and
  to be gone after a delete (``DescribeTable`` polled after 0.5 s, doubling to every 5 s); they
  live in state only.
* computed: ``arn``.

Reads: ``ListTables`` once (paginated), then ``DescribeTable`` and ``ListTagsOfResource`` per
table the stack manages (``DescribeTable`` shows no tags); per-table calls run 8 at once. A table
deleted by hand is planned as a create (with its drift, "deleted"). A table's name is its
identity: a table a killed run created is found by name and adopted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.aws.client import Aws, error_code, until_visible
from tectum.providers.aws.s3 import VISIBLE_WAIT, _check_all
from tectum.providers.aws.storage_common import (
    StillListed,
    delete_confirmed,
    duration,
    each,
    failure,
    kept,
    tag_changes,
    tag_dict,
    tag_list,
    there,
    valid_tags,
    valid_timeouts,
)
from tectum.providers.base import ApplyError, ReadError, ReadItem, ResourceType
from tectum.schema import Attr, Schema
from tectum.values import is_known

_TABLE = re.compile(r"[a-zA-Z0-9_.-]{3,255}")
#: Terraform's default timeouts of ``aws_dynamodb_table``
DEFAULT_TIMEOUTS = {"create": "30m", "update": "60m", "delete": "10m"}
#: most seconds between two polls of a wait
POLL = 5.0
MODES = ("PROVISIONED", "PAY_PER_REQUEST")


def _valid_table(value: Any) -> str | None:
    if not isinstance(value, str) or not is_known(value):
        return None
    if not _TABLE.fullmatch(value):
        return (f"{value!r} is not a DynamoDB table name: 3 to 255 letters, digits, _ . and - "
                "(e.g. \"orders\")")
    return None


def _valid_attributes(value: Any) -> str | None:
    if not isinstance(value, list):
        return None
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"name", "type"}:
            return (f"each attribute is {{\"name\": NAME, \"type\": \"S\" | \"N\" | \"B\"}}, "
                    f"not {entry!r}")
        kind = entry["type"]
        if isinstance(kind, str) and is_known(kind) and kind not in ("S", "N", "B"):
            return f"attribute {entry['name']!r}: type {kind!r} is not \"S\", \"N\" or \"B\""
    return None


def _capacity(value: Any) -> str | None:
    if isinstance(value, int) and value < 1:
        return f"{value} is not a capacity (1 or more units)"
    return None


def _attributes(value: Any) -> list[dict[str, str]]:
    return sorted(({"name": str(a["name"]), "type": str(a["type"])} for a in value or ()),
                  key=lambda a: a["name"])


class TableType(ResourceType[Aws]):
    """A DynamoDB table (see the module docstring): ``DynamodbTable("orders",
    billing_mode="PAY_PER_REQUEST", hash_key="id", attribute=[{"name": "id", "type":
    "S"}])``."""

    name = "aws_dynamodb_table"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True, validate=_valid_table,
                     description="the table's name"),
        "billing_mode": Attr(str, default="PROVISIONED", choices=MODES,
                             description="PROVISIONED or PAY_PER_REQUEST"),
        "hash_key": Attr(str, required=True, force_new=True,
                         description="the partition key's attribute name"),
        "range_key": Attr(str, force_new=True, description="the sort key's attribute name"),
        "attribute": Attr(list, required=True, force_new=True, validate=_valid_attributes,
                          description="the key attributes: [{name, type: S|N|B}]"),
        "read_capacity": Attr(int, validate=_capacity,
                              description="read capacity units (PROVISIONED)"),
        "write_capacity": Attr(int, validate=_capacity,
                               description="write capacity units (PROVISIONED)"),
        "tags": Attr(dict, default={}, validate=valid_tags, description="tags {KEY: VALUE}"),
        "timeouts": Attr(dict, default={}, validate=valid_timeouts(tuple(DEFAULT_TIMEOUTS)),
                         description="waits: {create, update, delete} durations (\"10m\")"),
        "arn": Attr(str, computed=True, description="the table's ARN"),
    })
    stored_computed = ("arn",)
    #: an in-place update keeps them (dependants stay known)
    kept_on_update = frozenset({"arn"})
    unobserved = frozenset({"timeouts"})

    def check(self, attrs: dict[str, Any]) -> list[str]:
        problems = []
        mode = attrs.get("billing_mode", "PROVISIONED")
        if mode == "PROVISIONED":
            missing = [k for k in ("read_capacity", "write_capacity") if attrs.get(k) is None]
            if missing:
                problems.append(f"billing_mode \"PROVISIONED\" needs {' and '.join(missing)} "
                                "(or set billing_mode = \"PAY_PER_REQUEST\")")
        elif mode == "PAY_PER_REQUEST":
            given = [k for k in ("read_capacity", "write_capacity") if attrs.get(k) is not None]
            if given:
                problems.append(f"billing_mode \"PAY_PER_REQUEST\" takes no {' or '.join(given)}")
        keys = [attrs.get("hash_key"), attrs.get("range_key")]
        names = [a.get("name") for a in attrs.get("attribute") or () if isinstance(a, dict)]
        if all(isinstance(x, str) and is_known(x) for x in [*keys, *names] if x is not None):
            wanted = sorted(str(k) for k in keys if isinstance(k, str))
            if sorted(map(str, names)) != wanted:
                problems.append(f"attribute must name exactly the key attributes {wanted} "
                                f"(hash_key, range_key), not {sorted(map(str, names))}")
        return problems

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        out.setdefault("range_key", None)
        for key in ("tags", "timeouts"):
            if out.get(key) is None:
                out[key] = {}
        _check_all(self, out, ("name", "billing_mode", "hash_key", "range_key", "attribute",
                               "read_capacity", "write_capacity", "tags", "timeouts"))
        problems = self.check(out)
        if problems:
            raise ValueError("; ".join(problems))
        out["attribute"] = _attributes(out.get("attribute"))
        return out

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        """The default diff, and a ``range_key`` the configuration dropped (a new table)."""
        out = super().diff(desired, observed)
        if desired.get("range_key") is None and observed.get("range_key") is not None:
            out.append(AttrChange("range_key", observed["range_key"], None, force_new=True))
        return out

    def delete_summary(self, prior: dict[str, Any]) -> str | None:
        return "deletes the table with every item in it"

    def warnings(self, change: ResourceChange) -> list[str]:
        if change.action in (Action.DELETE, Action.REPLACE):
            return ["the table is deleted with its items; undoing this makes it anew, empty"]
        return []

    def read(self, target: Aws, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """``ListTables`` once, ``DescribeTable`` + ``ListTagsOfResource`` per table found.
        Returns the table's attributes (``timeouts`` from state), or None."""
        try:
            tables = set(target.pages("dynamodb", "list_tables", "TableNames"))
            names = list(dict.fromkeys(
                str(i.attrs["name"]) for i in items
                if isinstance(i.attrs.get("name"), str) and i.attrs["name"] in tables))
            found = dict(zip(names, each(lambda n: _describe(target, n), names), strict=True))
        except Exception as exc:
            raise ReadError(failure(exc, "reading DynamoDB tables")) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            got = found.get(str(item.attrs.get("name")))
            if got is None:
                out.append(None)
                continue
            out.append(_table(got[0], got[1], kept(item, "timeouts", {})))
        return out

    def apply(self, target: Aws, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE: ``CreateTable`` and wait for ``ACTIVE``; UPDATE: ``UpdateTable`` (billing
        mode, capacity) and wait, ``TagResource`` / ``UntagResource``; DELETE: ``DeleteTable``
        and wait until it is gone. Raises :class:`ApplyError` (a wait past its timeout
        too)."""
        if change.action is Action.DELETE and change.before is None:
            return None  # (the plan found it gone: "only removed from state")
        ddb = target.client("dynamodb")
        if change.action in (Action.DELETE, Action.REPLACE):
            old = change.prior or change.before or {}
            if isinstance(old.get("name"), str):
                self._delete(target, str(old["name"]), _timeout(old, "delete"))
            if change.action is Action.DELETE:
                return None
        after = dict(change.after or {})
        name = str(after["name"])
        tags = dict(after.get("tags") or {})
        try:
            if change.action in (Action.CREATE, Action.REPLACE):
                params: dict[str, Any] = {
                    "TableName": name, "BillingMode": after["billing_mode"],
                    "KeySchema": [{"AttributeName": after["hash_key"], "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": a["name"],
                                              "AttributeType": a["type"]}
                                             for a in after["attribute"]]}
                if after.get("range_key"):
                    params["KeySchema"].append({"AttributeName": after["range_key"],
                                                "KeyType": "RANGE"})
                if after["billing_mode"] == "PROVISIONED":
                    params["ProvisionedThroughput"] = _throughput(after)
                if tags:
                    params["Tags"] = tag_list(tags)
                once = target.client("dynamodb", once=True)
                try:
                    # (an answer lost on the way: the table there is this create's)
                    target.create_once(lambda: once.create_table(**params),
                                       lambda: there(
                                           lambda: ddb.describe_table(TableName=name),
                                           frozenset({"ResourceNotFoundException"})),
                                       what=f"DynamoDB table {name}",
                                       exists=frozenset({"ResourceInUseException"}))
                except Exception as exc:
                    if error_code(exc) != "ResourceInUseException":
                        raise
                    raise ApplyError(
                        f"DynamoDB table {name} exists already (made meanwhile, outside this "
                        "plan): run tectum plan again to adopt it, or tectum import it") \
                        from None
                _wait(target, "table_exists", name, _timeout(after, "create"))
            else:
                before = change.before or {}
                update: dict[str, Any] = {}
                if before.get("billing_mode") != after["billing_mode"]:
                    update["BillingMode"] = after["billing_mode"]
                if after["billing_mode"] == "PROVISIONED" and (
                        "BillingMode" in update
                        or before.get("read_capacity") != after.get("read_capacity")
                        or before.get("write_capacity") != after.get("write_capacity")):
                    update["ProvisionedThroughput"] = _throughput(after)
                if update:
                    ddb.update_table(TableName=name, **update)
                    _wait(target, "table_exists", name, _timeout(after, "update"))
                put, drop = tag_changes(dict(before.get("tags") or {}), tags)
                if put or drop:
                    arn = before.get("arn") or (change.prior or {}).get("arn")
                    if not arn:
                        arn = ddb.describe_table(TableName=name)["Table"]["TableArn"]
                    if put:
                        ddb.tag_resource(ResourceArn=arn, Tags=tag_list(put))
                    if drop:
                        ddb.untag_resource(ResourceArn=arn, TagKeys=drop)
            table = until_visible(lambda: ddb.describe_table(TableName=name)["Table"],
                                  what=f"DynamoDB table {name}")
        except ApplyError:
            raise
        except Exception as exc:
            raise ApplyError(failure(exc, f"DynamoDB table {name}")) from None
        return _table(table, tags, after.get("timeouts") or {})

    def _delete(self, aws: Aws, name: str, timeout: float) -> None:
        try:
            delete_confirmed(lambda: aws.client("dynamodb").delete_table(TableName=name),
                             frozenset({"ResourceNotFoundException"}),
                             lambda: name in set(aws.pages("dynamodb", "list_tables",
                                                           "TableNames")),
                             what=f"DynamoDB table {name}")
        except StillListed as exc:
            raise ApplyError(str(exc)) from None
        except Exception as exc:
            raise ApplyError(failure(exc, f"deleting DynamoDB table {name}")) from None
        _wait(aws, "table_not_exists", name, timeout)


def _timeout(attrs: dict[str, Any], what: str) -> float:
    text = (attrs.get("timeouts") or {}).get(what) or DEFAULT_TIMEOUTS[what]
    return duration(str(text))


def _throughput(attrs: dict[str, Any]) -> dict[str, int]:
    return {"ReadCapacityUnits": int(attrs["read_capacity"]),
            "WriteCapacityUnits": int(attrs["write_capacity"])}


def _wait(aws: Aws, waiter: str, name: str, timeout: float) -> None:
    """Poll ``DescribeTable`` until table ``name`` is ``ACTIVE`` (``waiter`` "table_exists")
    or gone ("table_not_exists"), as botocore's waiters of those names do, but polling after
    0.5 s, doubling to :data:`POLL` seconds (a table is often ready within seconds), for at
    most ``timeout`` seconds. "Not found" while waiting for ``ACTIVE`` is a table not visible
    yet. Raises :class:`ApplyError` when the time is up."""
    ddb = aws.client("dynamodb")
    deadline = time.monotonic() + timeout
    delay = 0.5
    status = "unknown"
    while True:
        try:
            status = str(ddb.describe_table(TableName=name)["Table"].get("TableStatus"))
        except Exception as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise ApplyError(failure(exc, f"waiting for DynamoDB table {name}")) from None
            status = "not found"
            if waiter == "table_not_exists":
                return
        else:
            if waiter == "table_exists" and status == "ACTIVE":
                return
        if time.monotonic() + delay > deadline:
            what = "ACTIVE" if waiter == "table_exists" else "deleted"
            raise ApplyError(f"DynamoDB table {name} was not {what} within {timeout:g} s "
                             f"(timeouts; it is {status}). Raise the timeout in timeouts, "
                             "then apply again")
        time.sleep(delay)
        delay = min(delay * 2, POLL)


def _describe(aws: Aws, name: str) -> tuple[dict[str, Any], dict[str, str]] | None:
    """``DescribeTable`` and the tags of a table ``ListTables`` showed ("not found" is retried
    for a while: listed but not visible yet); None when it is gone (or being deleted)."""
    ddb = aws.client("dynamodb")
    try:
        table = until_visible(lambda: ddb.describe_table(TableName=name)["Table"],
                              codes=frozenset({"ResourceNotFoundException"}),
                              timeout=VISIBLE_WAIT, what=f"DynamoDB table {name}")
        if table.get("TableStatus") == "DELETING":
            return None
        tags: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs = {"ResourceArn": table["TableArn"]}
            if token:
                kwargs["NextToken"] = token
            got = ddb.list_tags_of_resource(**kwargs)
            tags.extend(got.get("Tags") or [])
            token = got.get("NextToken")
            if not token:
                break
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    return table, tag_dict(tags)


def _table(table: dict[str, Any], tags: dict[str, str], timeouts: dict[str, Any]
           ) -> dict[str, Any]:
    keys = {k["KeyType"]: k["AttributeName"] for k in table.get("KeySchema") or ()}
    mode = (table.get("BillingModeSummary") or {}).get("BillingMode") or "PROVISIONED"
    throughput = table.get("ProvisionedThroughput") or {}
    provisioned = mode == "PROVISIONED"
    return {
        "name": table["TableName"], "billing_mode": mode,
        "hash_key": keys.get("HASH"), "range_key": keys.get("RANGE"),
        "attribute": _attributes({"name": a["AttributeName"], "type": a["AttributeType"]}
                                 for a in table.get("AttributeDefinitions") or ()),
        "read_capacity": int(throughput.get("ReadCapacityUnits") or 0) if provisioned else None,
        "write_capacity": int(throughput.get("WriteCapacityUnits") or 0) if provisioned
        else None,
        "tags": dict(tags), "timeouts": dict(timeouts), "arn": table.get("TableArn"),
    }
