"""The aws provider's EC2 types, with Terraform's ``hashicorp/aws`` names and attribute names:
``aws_vpc``, ``aws_subnet``, ``aws_security_group``, ``aws_vpc_security_group_ingress_rule``,
``aws_vpc_security_group_egress_rule`` and ``aws_instance``.

Reads: one paginated Describe call per type per region for every object of the type at once,
filtered by the parents the objects live in (``vpc-id`` for subnets and security groups,
``group-id`` for rules, ``subnet-id`` for instances) or by their ids (VPCs); a second
filtered call only for an object imported by id without its parent, or found by the client
token of a journal identity (a killed run's object).

Crash safety (objects whose id the server assigns): ``prepare`` gives each configured object a
random ``client_token`` (once: a token already there is kept, so the plan, its journal intent
and the create call carry the same one; it is a computed attribute, so it is never diffed).
The journal identity holds it before the create call, and the create puts it on the object in
the same call — EC2 ``RunInstances`` ``ClientToken`` (AWS then makes one instance however often
the call is retried) and, on every type, the tags ``tectum:token``, ``tectum:stack`` (the
project and workspace, :func:`~tectum.providers.aws.client.stack_id`) and
``tectum:address`` (the resource's address). After a ``kill -9`` between "created" and
"recorded":

* a resource that left the configuration, or ``tectum destroy``: the planner reads the
  journal identity, and the read finds the object by its token (then deletes it);
* a resource still declared: the planner reads it by its configuration — types with a natural
  identity (subnets: VPC and CIDR; security groups: VPC and name; rules: group, protocol,
  CIDR, ports) are found by it and adopted in the plan; for the others (and when the
  identity holds a value known only after apply) the plan says "create", and the create
  first looks for the object this project and workspace made for this address
  (``tectum:stack`` + ``tectum:address``, one Describe call) and takes it instead of making a
  second one (updated in place to match the configuration, or made anew when an attribute
  that cannot change differs). Nothing is ever taken from another project or workspace.

Tags whose key starts with ``tectum:`` or ``aws:`` are never part of ``tags``.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, ClassVar

from tectum.plans.plan import Action, AttrChange, ResourceChange
from tectum.providers.aws.client import Aws, error_code, until_visible
from tectum.providers.base import ApplyError, ReadError, ReadItem, ResourceType
from tectum.schema import Attr, Schema
from tectum.values import is_known

EC2_TYPES: dict[str, str] = {
    "aws_vpc": "tectum.providers.aws.ec2:VpcType",
    "aws_subnet": "tectum.providers.aws.ec2:SubnetType",
    "aws_security_group": "tectum.providers.aws.ec2:SecurityGroupType",
    "aws_vpc_security_group_ingress_rule": "tectum.providers.aws.ec2:IngressRuleType",
    "aws_vpc_security_group_egress_rule": "tectum.providers.aws.ec2:EgressRuleType",
    "aws_instance": "tectum.providers.aws.ec2:InstanceType",
}

#: the tag holding an object's client token (see the module docstring)
TOKEN_TAG = "tectum:token"
#: the tag naming the project and workspace that made an object (``client.stack_id``)
STACK_TAG = "tectum:stack"
#: the tag naming the resource address an object was made for
ADDRESS_TAG = "tectum:address"
#: tag key prefixes that are never the user's tags
RESERVED_TAGS = ("tectum:", "aws:")

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def duration(text: str) -> float:
    """Seconds of a Terraform ``timeouts`` duration (``"10m"``, ``"1h30m"``, ``"45s"``).
    Raises ``ValueError`` for anything else."""
    found = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not found or not any(found.groups()):
        raise ValueError(f"{text!r} is no duration (e.g. \"10m\", \"1h30m\", \"45s\")")
    h, m, s = (int(g or 0) for g in found.groups())
    return float(h * 3600 + m * 60 + s)


def _port(value: Any) -> int:
    """A rule's port for the API: none given is -1 (every ICMP type or code)."""
    return -1 if value is None else int(value)


def _port_read(value: Any) -> int | None:
    """A rule's port as read: AWS's -1 (every ICMP type or code) is none."""
    return None if value is None or value == -1 else int(value)


def _cidr(value: Any) -> str | None:
    if not isinstance(value, str) or not is_known(value) or "${tectum:" in value:
        return None
    if "/" not in value:
        return f"{value!r} needs a prefix length (e.g. \"{value}/32\" for one address)"
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        return f"is no network in CIDR notation ({exc})"
    if net.version != 4:
        return "must be an IPv4 network (e.g. \"10.0.0.0/16\")"
    return None


def _tags_ok(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            return "keys and values must be strings"
        if key.startswith(RESERVED_TAGS):
            return f"tag {key!r}: keys starting with 'tectum:' or 'aws:' are reserved"
    if len(value) > 47:  # (AWS allows 50; tectum adds tectum:token, :stack and :address)
        return "at most 47 tags (AWS allows 50; tectum adds three of its own)"
    return None


def _timeouts_ok(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    for key, val in value.items():
        if key not in ("create", "update", "delete"):
            return f"unknown timeout {key!r} (create, update, delete)"
        try:
            duration(val)
        except ValueError as exc:
            return str(exc)
    return None


def user_tags(raw: Iterable[dict[str, Any]] | None) -> dict[str, str]:
    """An AWS tag list as the ``tags`` mapping (reserved keys left out)."""
    return {t["Key"]: t.get("Value", "") for t in raw or ()
            if not str(t["Key"]).startswith(RESERVED_TAGS)}


def _tag(raw: Iterable[dict[str, Any]] | None, key: str) -> str | None:
    for t in raw or ():
        if t.get("Key") == key:
            return str(t.get("Value", ""))
    return None


TAGS = Attr(dict, validate=_tags_ok, description="tags (key → value); tectum: and aws: keys "
            "are reserved")
TOKEN = Attr(str, computed=True, description="the client token the create carried (tag "
             "tectum:token): finds the object after a crash")
ID = Attr(str, computed=True, description="the id AWS assigned")
TIMEOUTS = Attr(dict, validate=_timeouts_ok, description="Terraform's timeouts block: "
                "{\"create\": \"10m\", \"delete\": \"20m\"}")


class Ec2Type(ResourceType[Aws]):
    """What the EC2 types share: the batched read, the client token, tags, waiters.

    A subclass sets ``kind`` (for messages), ``tag_type`` (``TagSpecifications``
    ResourceType), ``describe_op`` / ``describe_key`` (the Describe call and its result
    list), ``id_filter`` (the Describe filter on ids), ``parent`` (``(attribute, filter)``:
    the one filter that finds every object of a batch, or None), ``natural`` (whether its
    identity finds an object state does not hold), and implements :meth:`observe`,
    :meth:`create`, :meth:`update_object` and :meth:`delete_object`."""

    def takes_over_as_created(self, found: dict[str, Any] | None,
                              desired: dict[str, Any]) -> bool:
        """An object found carrying a tectum client token was made by tectum for this project
        and workspace (objects of another are never matched): a create whose follow-up call
        failed (a subnet's attribute, a group's default rule). It stays tectum's, so destroy
        deletes it; any other object found is only forgotten."""
        return found is None or bool(found.get("client_token"))

    kind: ClassVar[str]
    tag_type: ClassVar[str]
    describe_op: ClassVar[str]
    describe_key: ClassVar[str]
    id_filter: ClassVar[str]
    parent: ClassVar[tuple[str, str] | None] = None
    natural: ClassVar[bool] = False
    extra_filters: ClassVar[tuple[dict[str, Any], ...]] = ()
    stored_computed: ClassVar[tuple[str, ...]] = ("id", "client_token")
    #: attributes only the configuration holds (Terraform's ``timeouts``): a read takes them
    #: from the configuration (from state for a resource no longer declared), never from AWS
    virtual: ClassVar[frozenset[str]] = frozenset({"timeouts"})
    #: computed attributes an in-place update never changes (ResourceType.kept_on_update:
    #: dependents keep seeing them when the object is updated, not "known after apply")
    kept_on_update: ClassVar[frozenset[str]] = frozenset({"id", "arn", "client_token",
                                                          "security_group_rule_id"})
    #: default timeouts (seconds) of ``create`` / ``update`` / ``delete``
    default_timeouts: ClassVar[dict[str, float]] = {"create": 600.0, "update": 600.0,
                                                    "delete": 300.0}

    # -- configuration ----------------------------------------------------------------------
    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        """Defaults, canonical forms, and a ``client_token`` (kept when already there).
        Raises ``ValueError`` for a bad CIDR, tag or timeout."""
        out = super().prepare(attrs, base_dir)
        for key, spec in self.schema.attrs.items():
            value = out.get(key)
            if value is not None and spec.validate is not None and is_known(value):
                problem = spec.validate(value)
                if problem:
                    raise ValueError(f"{key}: {problem}")
        if not out.get("client_token"):
            out["client_token"] = f"tt-{secrets.token_hex(12)}"
        return out

    def journal_identity(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The identity attributes, the id once known and the client token (written before
        the create call, so the object is found after a crash)."""
        out = {k: attrs.get(k) for k in self.schema.identity}
        out["id"] = attrs.get("id")
        out["client_token"] = attrs.get("client_token")
        return out

    def import_item(self, import_id: str) -> ReadItem:
        """Import by the id AWS assigned (``vpc-...``, ``subnet-...``, ``sg-...``,
        ``sgr-...``, ``i-...``), as Terraform does."""
        return ReadItem(None, {"id": import_id})

    def timeout(self, attrs: dict[str, Any] | None, which: str) -> float:
        """Seconds for ``which`` (``create``, ``update``, ``delete``) from ``timeouts``."""
        given = ((attrs or {}).get("timeouts") or {}).get(which)
        return duration(given) if given else self.default_timeouts[which]

    # -- reading ----------------------------------------------------------------------------
    def observe(self, aws: Aws, raw: dict[str, Any]) -> dict[str, Any]:
        """One Describe result as attributes (with ``_stack``: its ``tectum:stack`` tag)."""
        raise NotImplementedError

    def read_unobserved(self, aws: Aws, obs: dict[str, Any]) -> dict[str, Any]:
        """Attributes the Describe call does not show, read one by one: only for an object
        state has no record of (an import)."""
        return {}

    def keep(self, raw: dict[str, Any]) -> bool:
        """Whether a Describe result is an object of this type (egress vs ingress rules)."""
        return True

    def describe(self, attrs: dict[str, Any]) -> str:
        found = attrs.get("id")
        label = super().describe(attrs)
        return f"{label} ({found})" if found else label

    def _describe(self, aws: Aws, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every object the filters select (AWS takes at most 200 values per filter: more
        are asked for in slices of 200, one call each)."""
        out: list[dict[str, Any]] = []
        for chunk in _slices(filters):
            out.extend(self._describe_one(aws, chunk))
        return out

    def _describe_one(self, aws: Aws, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.observe(aws, raw)
                for raw in aws.pages("ec2", self.describe_op, self.describe_key,
                                     Filters=[*filters, *self.extra_filters])
                if self.keep(raw)]

    def by_ids(self, aws: Aws, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The objects of ``ids`` (one call; ids that are gone are left out)."""
        return self._describe(aws, [{"Name": self.id_filter, "Values": list(ids)}])

    def read(self, target: Aws, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        try:
            return self._read(target, items)
        except ReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's errors, as a sentence
            raise ReadError(f"{self.describe_op}: {_message(exc)}") from None

    def _read(self, aws: Aws, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        found: dict[str, dict[str, Any]] = {}

        def add(objs: Iterable[dict[str, Any]]) -> None:
            for obj in objs:
                found[obj["id"]] = obj

        def parent_of(item: ReadItem) -> Any:
            if self.parent is None:
                return None
            for attrs in (item.prior, item.desired):
                value = (attrs or {}).get(self.parent[0])
                if isinstance(value, str) and is_known(value) and value:
                    return value
            return None

        parents = sorted({p for p in map(parent_of, items) if p})
        if self.parent is not None and parents:
            add(self._describe(aws, [{"Name": self.parent[1], "Values": parents}]))
        ids = sorted({str(item.prior["id"]) for item in items
                      if item.prior and item.prior.get("id") and not parent_of(item)})
        if ids:
            add(self.by_ids(aws, ids))
        claimed = {str(item.prior["id"]) for item in items
                   if item.prior and item.prior.get("id")}
        out: list[dict[str, Any] | None] = [None] * len(items)
        self._match(aws, items, found, claimed, out)
        # journal identities (a killed run's object, not in state): by their tokens
        tokens = sorted({str(item.prior["client_token"]) for item in items
                         if item.prior and item.prior.get("client_token")
                         and not item.prior.get("id")}
                        | {str(item.recovery["client_token"]) for item in items
                           if item.recovery and item.recovery.get("client_token")})
        if tokens:
            add(self._describe(aws, [{"Name": f"tag:{TOKEN_TAG}", "Values": tokens}]))
            self._match(aws, items, found, claimed, out)
        result: list[dict[str, Any] | None] = []
        for item, obs in zip(items, out, strict=True):
            if obs is None:
                result.append(None)
                continue
            obs = dict(obs)
            prior = item.prior or {}
            for key in self.unobserved:
                if prior.get("id") and key in prior:
                    obs[key] = prior[key]  # (what the last apply set)
            for key in self.virtual & self.unobserved:
                obs[key] = (item.desired if item.desired is not None else prior).get(key)
            missing = [k for k in self.unobserved if k not in obs]
            if missing:  # an object state has no record of (import, adoption): read them
                extra = self.read_unobserved(aws, obs)
                obs.update({k: extra.get(k) for k in missing})
            result.append(obs)
        return result

    def _match(self, aws: Aws, items: Sequence[ReadItem], found: dict[str, dict[str, Any]],
               claimed: set[str], out: list[dict[str, Any] | None]) -> None:
        """Fill ``out`` (per item, still None) from ``found``: by the prior id, by a client
        token, then (types with a natural identity, items without an id) by identity. An
        object another item's record holds (``claimed``) is never taken for another."""
        by_token: dict[str, dict[str, Any]] = {}
        for obj in found.values():
            if obj.get("client_token"):
                by_token.setdefault(str(obj["client_token"]), obj)
        taken = set(claimed) | {o["id"] for o in out if o is not None}
        for i, item in enumerate(items):
            if out[i] is not None:
                continue
            prior = item.prior or {}
            if prior.get("id"):
                by_id = found.get(str(prior["id"]))
                if by_id is not None:
                    out[i] = by_id
                    continue
            # (a killed run's create or replace: its journaled token first)
            for token in ((item.recovery or {}).get("client_token"), prior.get("client_token"),
                          (item.desired or {}).get("client_token")):
                tok = by_token.get(str(token)) if token else None
                if tok is not None and (tok["id"] not in taken or tok["id"] == prior.get("id")):
                    out[i] = tok
                    taken.add(tok["id"])
                    break
        for i, item in enumerate(items):
            if out[i] is not None or (item.prior or {}).get("id") and item.desired is None:
                continue
            want = item.desired if item.desired is not None else item.prior or {}
            if self.natural and not (item.prior or {}).get("id"):
                ident = self.identity(want)
                if all(is_known(v) for v in ident):
                    for obj in found.values():
                        if obj.get("_stack") and obj["_stack"] != aws.stack:
                            continue  # (another project's or workspace's: never taken)
                        if obj["id"] not in taken and self.identity(obj) == ident:
                            out[i] = obj
                            taken.add(obj["id"])
                            break
                    if out[i] is not None:
                        continue

    # -- applying ---------------------------------------------------------------------------
    def create(self, aws: Aws, after: dict[str, Any], tags: list[dict[str, Any]]) -> str:
        """The one create call (through ``aws.client("ec2", once=True)``: :meth:`Aws.create_once`
        retries it), tags, with the token and stack tags, in the call itself; returns the new
        object's id."""
        raise NotImplementedError

    def created(self, aws: Aws, object_id: str, after: dict[str, Any]) -> None:
        """What follows the create call (settings the create cannot carry, waiting until the
        object is ready); each step may be repeated safely."""

    def update_object(self, aws: Aws, object_id: str, change: ResourceChange) -> None:
        """Change what can be changed in place (tags are done already)."""

    def delete_object(self, aws: Aws, object_id: str, attrs: dict[str, Any],
                      timeout: float) -> None:
        """Delete the object (gone already is no error)."""
        raise NotImplementedError

    def get(self, aws: Aws, object_id: str) -> dict[str, Any]:
        """The object just made or changed, read by id; retried while AWS does not show it
        yet (eventual consistency). Raises the last ``NotFound``."""
        def one() -> dict[str, Any]:
            found = self.by_ids(aws, [object_id])
            if not found:
                raise _NotVisible(f"{object_id} is not visible yet")
            return found[0]
        return until_visible(one, codes=_VISIBLE_CODES, what=object_id)

    def apply(self, target: Aws, change: ResourceChange) -> dict[str, Any] | None:
        try:
            return self._apply(target, change)
        except ApplyError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's errors, as a sentence
            raise ApplyError(f"{self.kind} {change.action.value}: {_message(exc)}") from None

    def _apply(self, aws: Aws, change: ResourceChange) -> dict[str, Any] | None:
        old = {**(change.prior or {}), **(change.before or {})}
        old_id = old.get("id")
        if change.action in (Action.DELETE, Action.REPLACE) and old_id:
            self.delete_object(aws, str(old_id), old, self.timeout(change.prior, "delete"))
        if change.action is Action.DELETE:
            return None
        after = dict(change.after or {})
        found_there = False
        if change.action in (Action.CREATE, Action.REPLACE) or not old_id:
            try:
                object_id = self._create_once(aws, change.address, after)
            except _FoundRule as exc:
                # made meanwhile by something else: recorded as found (forgotten, not
                # deleted, when the resource goes), its tags set as configured
                object_id, found_there = exc.object_id, True
                have = self.get(aws, object_id)
                self._retag(aws, object_id, have.get("tags") or {}, after.get("tags"))
                self.update_object(aws, object_id, ResourceChange(
                    change.address, self.name, Action.UPDATE, self.stored(have), after))
        else:
            object_id = str(old_id)
            self._retag(aws, object_id, old.get("tags") or {}, after.get("tags"))
            self.update_object(aws, object_id, change)
        obs = self.get(aws, object_id)
        for key in self.unobserved:
            obs[key] = after.get(key)
        return {**self.stored(obs), "_found": True} if found_there else self.stored(obs)

    def made_for(self, aws: Aws, address: str) -> dict[str, Any] | None:
        """The object this project and workspace made for ``address`` earlier (a run killed
        after its create call, before it recorded the object), else None: one Describe call
        filtered by the ``tectum:stack`` and ``tectum:address`` tags."""
        if not aws.stack:
            return None
        found = self._describe(aws, [{"Name": f"tag:{STACK_TAG}", "Values": [aws.stack]},
                                     {"Name": f"tag:{ADDRESS_TAG}", "Values": [address]}])
        return found[0] if found else None

    def _create_once(self, aws: Aws, address: str, after: dict[str, Any]) -> str:
        """Create the object — unless a killed run made it for this address already (found
        by the ``tectum:stack`` and ``tectum:address`` tags; a plan adopts such an object by
        its journaled token when it can read it, but not while an identity it needs, such as
        its VPC's id, is known only after apply): then that object is taken and updated in
        place to match. One whose attributes that cannot change differ is never deleted
        here: the apply fails naming it. Returns the id; sets ``after["client_token"]`` to
        the token the object carries."""
        earlier = self.made_for(aws, address)
        if earlier is not None:
            earlier = {**earlier, **self.read_unobserved(aws, earlier)}
            fixed = [k for k, spec in self.schema.attrs.items() if spec.force_new
                     and after.get(k) is not None and after.get(k) != earlier.get(k)]
            if fixed:
                raise ApplyError(
                    f"{earlier['id']} carries this stack's tags for {address} (made by an "
                    f"interrupted run, or by a resource moved away from this address) but its "
                    f"{', '.join(fixed)} differ: tectum neither takes nor deletes it. Delete it "
                    f"if nothing uses it, or import it (tectum import {address} "
                    f"{earlier['id']}), then apply again")
            after["client_token"] = earlier.get("client_token")
            self._retag(aws, earlier["id"], earlier.get("tags") or {}, after.get("tags"))
            self.update_object(aws, earlier["id"], ResourceChange(
                address, self.name, Action.UPDATE, self.stored(earlier), after))
            return str(earlier["id"])
        token = str(after.get("client_token") or f"tt-{secrets.token_hex(12)}")
        after["client_token"] = token
        tags = [{"Key": k, "Value": v} for k, v in (after.get("tags") or {}).items()]
        tags.append({"Key": TOKEN_TAG, "Value": token})
        if aws.stack:
            tags.append({"Key": STACK_TAG, "Value": aws.stack})
        tags.append({"Key": ADDRESS_TAG, "Value": address})
        object_id = aws.create_once(lambda: self.create(aws, after, tags),
                                    lambda: self._by_token(aws, token), what=address)
        self.created(aws, object_id, after)
        return object_id

    def _by_token(self, aws: Aws, token: str) -> str | None:
        """The id of the object carrying client token ``token``, else None (one Describe)."""
        found = self._describe(aws, [{"Name": f"tag:{TOKEN_TAG}", "Values": [token]}])
        return str(found[0]["id"]) if found else None

    def _retag(self, aws: Aws, object_id: str, have: dict[str, str],
               want: dict[str, str] | None) -> None:
        if want is None or want == have:
            return
        ec2 = aws.client("ec2")
        gone = [{"Key": k} for k in have if k not in want]
        if gone:
            ec2.delete_tags(Resources=[object_id], Tags=gone)
        new = [{"Key": k, "Value": v} for k, v in want.items() if have.get(k) != v]
        if new:
            ec2.create_tags(Resources=[object_id], Tags=new)

    def spec(self, tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"ResourceType": self.tag_type, "Tags": tags}]


class _FoundRule(Exception):
    """A rule to create is there already (its id)."""

    def __init__(self, object_id: str) -> None:
        super().__init__(object_id)
        self.object_id = object_id


class _NotVisible(Exception):
    response: ClassVar[dict[str, Any]] = {"Error": {"Code": "NotVisible"}}


_VISIBLE_CODES = frozenset({"NotVisible", "InvalidVpcID.NotFound", "InvalidSubnetID.NotFound",
                            "InvalidGroup.NotFound", "InvalidInstanceID.NotFound",
                            "InvalidSecurityGroupRuleId.NotFound"})

#: errors of a delete that mean "gone already"
_GONE = frozenset({"InvalidVpcID.NotFound", "InvalidSubnetID.NotFound", "InvalidGroup.NotFound",
                   "InvalidInstanceID.NotFound", "InvalidSecurityGroupRuleId.NotFound",
                   "InvalidPermission.NotFound"})


#: the most values AWS takes in one filter
MAX_FILTER_VALUES = 200


def _slices(filters: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """``filters`` as is, or — when one has more than :data:`MAX_FILTER_VALUES` values (only
    the first such is split) — one copy per slice of its values."""
    for i, flt in enumerate(filters):
        values = flt.get("Values") or []
        if len(values) > MAX_FILTER_VALUES:
            for start in range(0, len(values), MAX_FILTER_VALUES):
                part = {**flt, "Values": values[start:start + MAX_FILTER_VALUES]}
                yield [*filters[:i], part, *filters[i + 1:]]
            return
    yield filters


def _message(exc: BaseException) -> str:
    code = error_code(exc)
    response = getattr(exc, "response", None)
    if code and isinstance(response, dict):
        return f"{code}: {(response.get('Error') or {}).get('Message') or ''}".rstrip(": ")
    return str(exc) or type(exc).__name__


def _gone_ok(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception as exc:
        if error_code(exc) not in _GONE:
            raise


def _while_in_use(call: Callable[[], Any], timeout: float) -> None:
    """``call()`` again while AWS says the object is still in use (``DependencyViolation``:
    an instance's network interface outlives its termination for a while)."""
    until_visible(lambda: _gone_ok(call), codes=frozenset({"DependencyViolation"}),
                  timeout=timeout)


def _arn(aws: Aws, owner: str | None, what: str) -> str:
    try:
        partition = str(aws.session.get_partition_for_region(aws.region))
    except Exception:  # noqa: BLE001 - an unknown region (another endpoint): AWS's
        partition = "aws"
    return f"arn:{partition}:ec2:{aws.region}:{owner or ''}:{what}"


class VpcType(Ec2Type):
    """``aws_vpc``: ``cidr_block`` (force new), ``enable_dns_support`` (default true),
    ``enable_dns_hostnames`` (default false), ``tags``; computed ``id``, ``arn``.

    The DNS attributes are not in ``DescribeVpcs`` (AWS has one ``DescribeVpcAttribute`` call
    per VPC and attribute): to keep one call per type they are ``unobserved`` — set on create
    and update, read only on import, and a change made by hand is not reported as drift."""

    name = "aws_vpc"
    moves_by_identity = False  # (its identity is no unique name)
    kind = "VPC"
    tag_type = "vpc"
    describe_op, describe_key, id_filter = "describe_vpcs", "Vpcs", "vpc-id"
    schema = Schema({
        "cidr_block": Attr(str, required=True, identity=True, force_new=True, validate=_cidr,
                           description="the IPv4 network, e.g. 10.0.0.0/16"),
        "enable_dns_support": Attr(bool, default=True, description="Amazon DNS in the VPC"),
        "enable_dns_hostnames": Attr(bool, default=False,
                                     description="DNS host names for instances"),
        "tags": TAGS,
        "id": ID,
        "arn": Attr(str, computed=True, description="the VPC's ARN"),
        "client_token": TOKEN,
    })
    stored_computed = ("id", "arn", "client_token")
    unobserved = frozenset({"enable_dns_support", "enable_dns_hostnames"})

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """Two VPCs may have one CIDR: never "managed twice"."""
        return (self.name, attrs.get("cidr_block"), attrs.get("client_token"))

    def observe(self, aws: Aws, raw: dict[str, Any]) -> dict[str, Any]:
        return {"id": raw["VpcId"], "cidr_block": raw.get("CidrBlock"),
                "arn": _arn(aws, raw.get("OwnerId"), f"vpc/{raw['VpcId']}"),
                "tags": user_tags(raw.get("Tags")),
                "client_token": _tag(raw.get("Tags"), TOKEN_TAG),
                "_stack": _tag(raw.get("Tags"), STACK_TAG)}

    def read_unobserved(self, aws: Aws, obs: dict[str, Any]) -> dict[str, Any]:
        ec2 = aws.client("ec2")
        out = {}
        for key, attr in (("enable_dns_support", "enableDnsSupport"),
                          ("enable_dns_hostnames", "enableDnsHostnames")):
            got = ec2.describe_vpc_attribute(VpcId=obs["id"], Attribute=attr)
            out[key] = bool(got[attr[0].upper() + attr[1:]]["Value"])
        return out

    def create(self, aws: Aws, after: dict[str, Any], tags: list[dict[str, Any]]) -> str:
        return str(aws.client("ec2", once=True).create_vpc(
            CidrBlock=after["cidr_block"], TagSpecifications=self.spec(tags))["Vpc"]["VpcId"])

    def created(self, aws: Aws, object_id: str, after: dict[str, Any]) -> None:
        self._dns(aws, object_id, after, {"enable_dns_support": True,
                                          "enable_dns_hostnames": False})

    def _dns(self, aws: Aws, vpc_id: str, after: dict[str, Any], have: dict[str, Any]) -> None:
        ec2 = aws.client("ec2")
        for key, param in (("enable_dns_support", "EnableDnsSupport"),
                           ("enable_dns_hostnames", "EnableDnsHostnames")):
            want = after.get(key)
            if want is not None and want != have.get(key):
                setting: dict[str, Any] = {"VpcId": vpc_id, param: {"Value": bool(want)}}
                until_visible(partial(ec2.modify_vpc_attribute, **setting),
                              codes=_VISIBLE_CODES)

    def update_object(self, aws: Aws, object_id: str, change: ResourceChange) -> None:
        self._dns(aws, object_id, change.after or {}, change.before or {})

    def delete_object(self, aws: Aws, object_id: str, attrs: dict[str, Any],
                      timeout: float) -> None:
        ec2 = aws.client("ec2")
        _while_in_use(lambda: ec2.delete_vpc(VpcId=object_id), timeout)


class SubnetType(Ec2Type):
    """``aws_subnet``: ``vpc_id``, ``cidr_block``, ``availability_zone`` (force new; AWS
    picks one when unset), ``map_public_ip_on_launch`` (default false), ``tags``; computed
    ``id``, ``arn``. A VPC's subnets never overlap, so ``vpc_id`` and ``cidr_block`` find a
    subnet state does not hold yet."""

    name = "aws_subnet"
    kind = "subnet"
    tag_type = "subnet"
    describe_op, describe_key, id_filter = "describe_subnets", "Subnets", "subnet-id"
    parent = ("vpc_id", "vpc-id")
    natural = True
    schema = Schema({
        "vpc_id": Attr(str, required=True, identity=True, force_new=True,
                       description="the VPC's id"),
        "cidr_block": Attr(str, required=True, identity=True, force_new=True, validate=_cidr,
                           description="the IPv4 network, inside the VPC's"),
        "availability_zone": Attr(str, force_new=True, description="e.g. eu-west-1a"),
        "map_public_ip_on_launch": Attr(bool, default=False,
                                        description="public IPv4 addresses for instances"),
        "tags": TAGS,
        "id": ID,
        "arn": Attr(str, computed=True, description="the subnet's ARN"),
        "client_token": TOKEN,
    })
    stored_computed = ("id", "arn", "client_token")

    def observe(self, aws: Aws, raw: dict[str, Any]) -> dict[str, Any]:
        return {"id": raw["SubnetId"], "vpc_id": raw.get("VpcId"),
                "cidr_block": raw.get("CidrBlock"),
                "availability_zone": raw.get("AvailabilityZone"),
                "map_public_ip_on_launch": bool(raw.get("MapPublicIpOnLaunch")),
                "arn": raw.get("SubnetArn") or _arn(aws, raw.get("OwnerId"),
                                                    f"subnet/{raw['SubnetId']}"),
                "tags": user_tags(raw.get("Tags")),
                "client_token": _tag(raw.get("Tags"), TOKEN_TAG),
                "_stack": _tag(raw.get("Tags"), STACK_TAG)}

    def create(self, aws: Aws, after: dict[str, Any], tags: list[dict[str, Any]]) -> str:
        kwargs: dict[str, Any] = {"VpcId": after["vpc_id"], "CidrBlock": after["cidr_block"],
                                  "TagSpecifications": self.spec(tags)}
        if after.get("availability_zone"):
            kwargs["AvailabilityZone"] = after["availability_zone"]
        return str(aws.client("ec2", once=True).create_subnet(**kwargs)["Subnet"]["SubnetId"])

    def created(self, aws: Aws, object_id: str, after: dict[str, Any]) -> None:
        if after.get("map_public_ip_on_launch"):
            self._public(aws, object_id, True)

    def _public(self, aws: Aws, subnet_id: str, value: bool) -> None:
        ec2 = aws.client("ec2")
        until_visible(lambda: ec2.modify_subnet_attribute(
            SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": value}), codes=_VISIBLE_CODES)

    def update_object(self, aws: Aws, object_id: str, change: ResourceChange) -> None:
        want = (change.after or {}).get("map_public_ip_on_launch")
        if want is not None and want != (change.before or {}).get("map_public_ip_on_launch"):
            self._public(aws, object_id, bool(want))

    def delete_object(self, aws: Aws, object_id: str, attrs: dict[str, Any],
                      timeout: float) -> None:
        ec2 = aws.client("ec2")
        _while_in_use(lambda: ec2.delete_subnet(SubnetId=object_id), timeout)


class SecurityGroupType(Ec2Type):
    """``aws_security_group``: ``name``, ``description`` (both force new; default
    description "Managed by tectum"), ``vpc_id``, ``tags``; computed ``id``, ``arn``.

    As Terraform's provider does, the allow-all egress rule AWS puts in a new group is
    removed on create: a group allows only what its ``aws_vpc_security_group_*_rule`` s
    declare. Rules are separate resources (Terraform's current advice): the group's own
    record holds none, and rules made by hand are not drift of the group."""

    name = "aws_security_group"
    kind = "security group"
    tag_type = "security-group"
    describe_op, describe_key, id_filter = "describe_security_groups", "SecurityGroups", \
        "group-id"
    parent = ("vpc_id", "vpc-id")
    natural = True
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True,
                     description="the group's name, unique in its VPC"),
        "description": Attr(str, default="Managed by tectum", force_new=True,
                            description="the group's description"),
        "vpc_id": Attr(str, required=True, identity=True, force_new=True,
                       description="the VPC's id"),
        "tags": TAGS,
        "id": ID,
        "arn": Attr(str, computed=True, description="the group's ARN"),
        "client_token": TOKEN,
    })
    stored_computed = ("id", "arn", "client_token")

    def observe(self, aws: Aws, raw: dict[str, Any]) -> dict[str, Any]:
        return {"id": raw["GroupId"], "name": raw.get("GroupName"),
                "description": raw.get("Description"), "vpc_id": raw.get("VpcId"),
                "arn": raw.get("SecurityGroupArn") or _arn(
                    aws, raw.get("OwnerId"), f"security-group/{raw['GroupId']}"),
                "tags": user_tags(raw.get("Tags")),
                "client_token": _tag(raw.get("Tags"), TOKEN_TAG),
                "_stack": _tag(raw.get("Tags"), STACK_TAG)}

    def check(self, attrs: dict[str, Any]) -> list[str]:
        name = attrs.get("name")
        if isinstance(name, str) and name.lower().startswith("sg-"):
            return ["name: may not start with 'sg-' (AWS refuses it)"]
        if isinstance(name, str) and name == "default":
            return ["name: 'default' is the VPC's own group"]
        return []

    def create(self, aws: Aws, after: dict[str, Any], tags: list[dict[str, Any]]) -> str:
        return str(aws.client("ec2", once=True).create_security_group(
            GroupName=after["name"], Description=after.get("description") or "Managed by tectum",
            VpcId=after["vpc_id"], TagSpecifications=self.spec(tags))["GroupId"])

    def created(self, aws: Aws, object_id: str, after: dict[str, Any]) -> None:
        ec2 = aws.client("ec2")
        until_visible(lambda: _gone_ok(lambda: ec2.revoke_security_group_egress(
            GroupId=object_id, IpPermissions=[{"IpProtocol": "-1",
                                               "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])),
            codes=_VISIBLE_CODES)

    def delete_object(self, aws: Aws, object_id: str, attrs: dict[str, Any],
                      timeout: float) -> None:
        ec2 = aws.client("ec2")
        _while_in_use(lambda: ec2.delete_security_group(GroupId=object_id), timeout)


_PROTOCOLS = {"-1": "-1", "all": "-1", "tcp": "tcp", "6": "tcp", "udp": "udp", "17": "udp",
              "icmp": "icmp", "1": "icmp", "icmpv6": "icmpv6", "58": "icmpv6"}


class _RuleType(Ec2Type):
    """What the ingress and egress rule types share (see :class:`IngressRuleType`)."""

    egress: ClassVar[bool] = False
    tag_type = "security-group-rule"
    describe_op, describe_key, id_filter = "describe_security_group_rules", \
        "SecurityGroupRules", "security-group-rule-id"
    parent = ("security_group_id", "group-id")
    natural = True
    schema = Schema({
        "security_group_id": Attr(str, required=True, identity=True, force_new=True,
                                  description="the group's id"),
        "ip_protocol": Attr(str, required=True, identity=True, force_new=True,
                            description="tcp, udp, icmp, icmpv6, a protocol number, or "
                                        "\"-1\" (all)"),
        "cidr_ipv4": Attr(str, required=True, identity=True, force_new=True, validate=_cidr,
                          description="the IPv4 range"),
        "from_port": Attr(int, identity=True, force_new=True,
                          description="first port (ICMP type); none with ip_protocol -1"),
        "to_port": Attr(int, identity=True, force_new=True,
                        description="last port (ICMP code); none with ip_protocol -1"),
        "description": Attr(str, description="the rule's description"),
        "tags": TAGS,
        "id": ID,
        "security_group_rule_id": Attr(str, computed=True, description="= id (Terraform's)"),
        "arn": Attr(str, computed=True, description="the rule's ARN"),
        "client_token": TOKEN,
    })
    stored_computed = ("id", "security_group_rule_id", "arn", "client_token")

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        proto = out.get("ip_protocol")
        if isinstance(proto, str) and is_known(proto):
            out["ip_protocol"] = _PROTOCOLS.get(proto.lower(), proto.lower())
        if out.get("description") == "":
            out["description"] = None  # (AWS keeps no empty description: no perpetual diff)
        for key in ("from_port", "to_port"):
            if out.get(key) == -1:
                out[key] = None  # (-1: every ICMP type or code, as no port at all)
        return out

    def check(self, attrs: dict[str, Any]) -> list[str]:
        proto = attrs.get("ip_protocol")
        if isinstance(proto, str):  # (as prepare normalises it: "TCP", "6" are tcp)
            proto = _PROTOCOLS.get(proto.lower(), proto.lower())
        ports = attrs.get("from_port") is not None or attrs.get("to_port") is not None
        if proto in ("-1", "all") and ports:
            return ["from_port/to_port: not allowed with ip_protocol -1 (all ports)"]
        if proto in ("tcp", "udp", "6", "17") and not (
                attrs.get("from_port") is not None and attrs.get("to_port") is not None):
            return [f"from_port and to_port are required with ip_protocol {proto}"]
        return []

    def keep(self, raw: dict[str, Any]) -> bool:
        return bool(raw.get("IsEgress")) is self.egress

    def observe(self, aws: Aws, raw: dict[str, Any]) -> dict[str, Any]:
        proto = str(raw.get("IpProtocol"))
        rule_id = raw["SecurityGroupRuleId"]
        all_ports = proto == "-1"
        return {"id": rule_id, "security_group_rule_id": rule_id,
                "security_group_id": raw.get("GroupId"), "ip_protocol": proto,
                "cidr_ipv4": raw.get("CidrIpv4"),
                "from_port": None if all_ports else _port_read(raw.get("FromPort")),
                "to_port": None if all_ports else _port_read(raw.get("ToPort")),
                "description": raw.get("Description") or None,
                "arn": _arn(aws, raw.get("GroupOwnerId"), f"security-group-rule/{rule_id}"),
                "tags": user_tags(raw.get("Tags")),
                "client_token": _tag(raw.get("Tags"), TOKEN_TAG),
                "_stack": _tag(raw.get("Tags"), STACK_TAG)}

    def _permission(self, after: dict[str, Any]) -> dict[str, Any]:
        rng: dict[str, Any] = {"CidrIp": after["cidr_ipv4"]}
        if after.get("description"):
            rng["Description"] = after["description"]
        perm: dict[str, Any] = {"IpProtocol": after["ip_protocol"], "IpRanges": [rng]}
        if after["ip_protocol"] != "-1":
            perm["FromPort"], perm["ToPort"] = _port(after.get("from_port")), \
                _port(after.get("to_port"))
        return perm

    def create(self, aws: Aws, after: dict[str, Any], tags: list[dict[str, Any]]) -> str:
        ec2 = aws.client("ec2", once=True)
        call = ec2.authorize_security_group_egress if self.egress \
            else ec2.authorize_security_group_ingress
        try:
            got = until_visible(lambda: call(
                GroupId=after["security_group_id"], IpPermissions=[self._permission(after)],
                TagSpecifications=self.spec(tags)), codes=_VISIBLE_CODES)
        except Exception as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise
            # the same rule is there already: made by this create's earlier attempt whose
            # answer was lost (it carries this create's token), else AWS's allow-all egress
            # rule of a group whose create was interrupted before it was removed, or a rule
            # made meanwhile
            ident = self.identity(after)
            for obj in self._describe(aws, [{"Name": "group-id",
                                             "Values": [after["security_group_id"]]}]):
                if self.identity(obj) == ident:
                    if obj.get("client_token") == after.get("client_token"):
                        return str(obj["id"])
                    raise _FoundRule(str(obj["id"])) from None
            raise
        return str(got["SecurityGroupRules"][0]["SecurityGroupRuleId"])

    def update_object(self, aws: Aws, object_id: str, change: ResourceChange) -> None:
        after = change.after or {}
        if after.get("description") != (change.before or {}).get("description"):
            rule: dict[str, Any] = {"IpProtocol": after["ip_protocol"],
                                    "CidrIpv4": after["cidr_ipv4"],
                                    "Description": after.get("description") or ""}
            if after["ip_protocol"] != "-1":
                rule["FromPort"], rule["ToPort"] = _port(after.get("from_port")), \
                    _port(after.get("to_port"))
            else:
                rule["FromPort"], rule["ToPort"] = -1, -1
            aws.client("ec2").modify_security_group_rules(
                GroupId=after["security_group_id"],
                SecurityGroupRules=[{"SecurityGroupRuleId": object_id,
                                     "SecurityGroupRule": rule}])

    def delete_object(self, aws: Aws, object_id: str, attrs: dict[str, Any],
                      timeout: float) -> None:
        ec2 = aws.client("ec2")
        call = ec2.revoke_security_group_egress if self.egress \
            else ec2.revoke_security_group_ingress
        _gone_ok(lambda: call(GroupId=attrs["security_group_id"],
                              SecurityGroupRuleIds=[object_id]))


class IngressRuleType(_RuleType):
    """``aws_vpc_security_group_ingress_rule``: ``security_group_id``, ``ip_protocol``,
    ``cidr_ipv4``, ``from_port``, ``to_port`` (all force new: AWS cannot change them),
    ``description``, ``tags``; computed ``security_group_rule_id`` (= ``id``), ``arn``. One
    CIDR per rule, as in Terraform's resource (``cidr_ipv6``, prefix lists and referenced
    groups are not offered yet)."""

    name = "aws_vpc_security_group_ingress_rule"
    kind = "ingress rule"


class EgressRuleType(_RuleType):
    """``aws_vpc_security_group_egress_rule``: as :class:`IngressRuleType`, for traffic out."""

    name = "aws_vpc_security_group_egress_rule"
    kind = "egress rule"
    egress = True


class InstanceType(Ec2Type):
    """``aws_instance``: ``ami``, ``instance_type``, ``subnet_id``,
    ``vpc_security_group_ids`` (a set: order does not matter), ``user_data``,
    ``user_data_replace_on_change`` (false), ``tags``, ``timeouts`` (``create`` 10m,
    ``update`` 10m, ``delete`` 20m); computed ``id``, ``arn``, ``private_ip``, ``state``.

    ``instance_type`` and ``user_data`` change in place as Terraform's ``aws_instance`` does:
    the instance is stopped, modified and started again — unless it was stopped already (by
    hand, on purpose): then it stays stopped. With ``user_data_replace_on_change`` a new
    ``user_data`` replaces the instance instead (Terraform's attribute: cloud-init runs
    ``user_data`` only at first boot). ``ami`` and ``subnet_id`` replace it. An instance
    terminated by hand is gone (drift ``deleted``) and planned anew. ``user_data`` is not in
    ``DescribeInstances``: it is ``unobserved`` (read one by one only on import)."""

    name = "aws_instance"
    moves_by_identity = False  # (its identity is no unique name)
    kind = "instance"
    tag_type = "instance"
    describe_op, describe_key, id_filter = "describe_instances", "Reservations", "instance-id"
    parent = ("subnet_id", "subnet-id")
    extra_filters = ({"Name": "instance-state-name",
                      "Values": ["pending", "running", "stopping", "stopped"]},)
    schema = Schema({
        "ami": Attr(str, required=True, identity=True, force_new=True,
                    description="the image id (ami-...)"),
        "instance_type": Attr(str, required=True, description="e.g. t3.micro"),
        # (no identity: unset, AWS picks the default VPC's subnet, which a plan must not
        # take for a change)
        "subnet_id": Attr(str, force_new=True, description="the subnet's id"),
        "vpc_security_group_ids": Attr(list, description="ids of its security groups"),
        "user_data": Attr(str, description="cloud-init user data (text); changed in place "
                          "(stop, modify, start)"),
        "user_data_replace_on_change": Attr(
            bool, default=False, description="a new user_data replaces the instance"),
        "tags": TAGS,
        "timeouts": TIMEOUTS,
        "id": ID,
        "arn": Attr(str, computed=True, description="the instance's ARN"),
        "private_ip": Attr(str, computed=True, description="its private IPv4 address"),
        "state": Attr(str, computed=True, description="running, stopped..."),
        "client_token": TOKEN,
    })
    stored_computed = ("id", "arn", "private_ip", "state", "client_token")
    unobserved = frozenset({"user_data", "user_data_replace_on_change", "timeouts"})
    virtual = frozenset({"timeouts", "user_data_replace_on_change"})
    default_timeouts: ClassVar[dict[str, float]] = {"create": 600.0, "update": 600.0,
                                                    "delete": 1200.0}

    def identity_key(self, attrs: dict[str, Any]) -> tuple[Any, ...]:
        """Many instances may share an image and a subnet: never "managed twice"."""
        return (self.name, attrs.get("client_token"))

    def diff(self, desired: dict[str, Any], observed: dict[str, Any]) -> list[AttrChange]:
        """As any type's, with a ``user_data`` change forcing a replace when
        ``user_data_replace_on_change`` is true."""
        out = super().diff(desired, observed)
        if desired.get("user_data_replace_on_change"):
            out = [c._replace(force_new=True) if c.name == "user_data" else c for c in out]
        return out

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        groups = out.get("vpc_security_group_ids")
        if isinstance(groups, list) and all(isinstance(g, str) for g in groups) \
                and is_known(groups):
            out["vpc_security_group_ids"] = sorted(set(groups))
        return out

    def _describe_one(self, aws: Aws, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for reservation in aws.pages("ec2", "describe_instances", "Reservations",
                                     Filters=[*filters, *self.extra_filters]):
            out.extend(self.observe(aws, {**raw, "_owner": reservation.get("OwnerId")})
                       for raw in reservation.get("Instances") or [])
        return out

    def observe(self, aws: Aws, raw: dict[str, Any]) -> dict[str, Any]:
        iid = raw["InstanceId"]
        return {"id": iid, "ami": raw.get("ImageId"), "instance_type": raw.get("InstanceType"),
                "subnet_id": raw.get("SubnetId"),
                "vpc_security_group_ids": sorted(g["GroupId"]
                                                 for g in raw.get("SecurityGroups") or []),
                "arn": _arn(aws, raw.get("_owner"), f"instance/{iid}"),
                "private_ip": raw.get("PrivateIpAddress"),
                "state": (raw.get("State") or {}).get("Name"),
                "tags": user_tags(raw.get("Tags")),
                "client_token": _tag(raw.get("Tags"), TOKEN_TAG) or raw.get("ClientToken")
                or None,
                "_stack": _tag(raw.get("Tags"), STACK_TAG)}

    def read_unobserved(self, aws: Aws, obs: dict[str, Any]) -> dict[str, Any]:
        got = aws.client("ec2").describe_instance_attribute(InstanceId=obs["id"],
                                                           Attribute="userData")
        data = (got.get("UserData") or {}).get("Value")
        return {"user_data": base64.b64decode(data).decode("utf-8", "replace")
                if data else None}

    def _wait(self, aws: Aws, name: str, instance_id: str, timeout: float) -> None:
        import botocore.exceptions

        delay = 2
        try:
            aws.client("ec2").get_waiter(name).wait(
                InstanceIds=[instance_id],
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, int(timeout // delay))})
        except botocore.exceptions.WaiterError as exc:
            last = (exc.last_response or {}).get("Error") or {}
            if name == "instance_terminated" and last.get("Code") == "InvalidInstanceID.NotFound":
                return  # (AWS forgets a terminated instance after a while: gone is done)
            raise ApplyError(f"instance {instance_id}: {name.replace('_', ' ')} not reached "
                             f"within {timeout:.0f} s (timeouts): {exc}") from None

    def create(self, aws: Aws, after: dict[str, Any], tags: list[dict[str, Any]]) -> str:
        # (RunInstances is idempotent by its ClientToken: AWS makes one instance however
        # often it is sent; the token's tag finds it also where that is not so, as in moto)
        ec2 = aws.client("ec2", once=True)
        kwargs: dict[str, Any] = {
            "ImageId": after["ami"], "InstanceType": after["instance_type"], "MinCount": 1,
            "MaxCount": 1, "ClientToken": after["client_token"],
            "TagSpecifications": self.spec(tags)}
        if after.get("subnet_id"):
            kwargs["SubnetId"] = after["subnet_id"]
        if after.get("vpc_security_group_ids"):
            kwargs["SecurityGroupIds"] = list(after["vpc_security_group_ids"])
        if after.get("user_data"):
            kwargs["UserData"] = after["user_data"]
        return str(ec2.run_instances(**kwargs)["Instances"][0]["InstanceId"])

    def created(self, aws: Aws, object_id: str, after: dict[str, Any]) -> None:
        self._wait(aws, "instance_running", object_id, self.timeout(after, "create"))

    def update_object(self, aws: Aws, object_id: str, change: ResourceChange) -> None:
        ec2 = aws.client("ec2")
        after, before = change.after or {}, change.before or {}
        groups = after.get("vpc_security_group_ids")
        if groups is not None and groups != before.get("vpc_security_group_ids"):
            ec2.modify_instance_attribute(InstanceId=object_id, Groups=list(groups))
        kind = after.get("instance_type")
        kind = kind if kind is not None and kind != before.get("instance_type") else None
        data = after.get("user_data")
        data = data if data is not None and data != before.get("user_data") else None
        if kind is None and data is None:
            return
        # (AWS changes either only while the instance is stopped; one stopped on purpose
        # stays stopped)
        timeout = self.timeout(after, "update")
        was = (self.get(aws, object_id).get("state") or "").lower()
        if was not in ("stopped", "stopping"):
            ec2.stop_instances(InstanceIds=[object_id])
        self._wait(aws, "instance_stopped", object_id, timeout)
        if kind is not None:
            ec2.modify_instance_attribute(InstanceId=object_id, InstanceType={"Value": kind})
        if data is not None:
            # (ModifyInstanceAttribute takes the user data base64-encoded inside the blob
            # botocore encodes again, unlike RunInstances: Terraform's aws_instance does so)
            ec2.modify_instance_attribute(
                InstanceId=object_id, UserData={"Value": base64.b64encode(data.encode())})
        if was not in ("stopped", "stopping"):
            ec2.start_instances(InstanceIds=[object_id])
            self._wait(aws, "instance_running", object_id, timeout)

    def delete_object(self, aws: Aws, object_id: str, attrs: dict[str, Any],
                      timeout: float) -> None:
        ec2 = aws.client("ec2")
        try:
            ec2.terminate_instances(InstanceIds=[object_id])
        except Exception as exc:
            if error_code(exc) in _GONE:
                return
            raise
        self._wait(aws, "instance_terminated", object_id, timeout)

    def by_ids(self, aws: Aws, ids: Sequence[str]) -> list[dict[str, Any]]:
        return self._describe(aws, [{"Name": "instance-id", "Values": list(ids)}])
