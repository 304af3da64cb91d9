"""``aws_iam_role`` and ``aws_iam_role_policy``: IAM roles and their inline policies
(Terraform's hashicorp/aws resources of the same names and attributes).

``aws_iam_role``

* ``name`` (identity; a new name is a new role): IAM's rule ``[\\w+=,.@-]{1,64}``.
* ``assume_role_policy`` (the trust policy): JSON text, or a mapping tectum writes as JSON.
* ``description``, ``path`` (default ``"/"``; a new path is a new role),
  ``max_session_duration`` (seconds, 3600 to 43200, default 3600), ``tags``.
* computed: ``arn``, ``unique_id`` (IAM's ``RoleId``, ``AROA...``).

``aws_iam_role_policy``

* ``role``, ``name`` (together the identity; import ID ``ROLE:NAME`` as Terraform's),
  ``policy`` (JSON text or a mapping).

Policies are compared by meaning, not by text (as Terraform's ``awspolicyequivalence``): the
order of keys and statements, a single string against a one-element list (``"Action":
"s3:GetObject"`` = ``["s3:GetObject"]``), an empty ``Sid``, ``"Principal": "*"`` against
``{"AWS": "*"}`` and an account id against its root ARN are no difference, so IAM's own
rewriting of a document never shows as a change. State keeps the policy in a canonical form
(keys sorted, indented) and the plan shows it as a line diff. Text that is no JSON object is
refused at plan time.

Reads. Roles: ``ListRoles`` once (paginated; every role of the account), then ``ListRoleTags``
per role the stack manages (IAM's ``ListRoles`` returns no tags). Inline policies:
``GetRolePolicy`` per policy (IAM has no batch read). Per-object calls run 8 at once.

Eventual consistency: a role just created may not be visible to IAM's other calls for a few
seconds. The create waits until ``GetRole`` finds it, and writing a policy to a role not found
yet is retried (:func:`~tectum.providers.aws.client.until_visible`, up to 60 s); throttling is
botocore's standard retry.

Deleting a role that still has inline policies, attached managed policies or instance profiles
tectum does not manage fails, naming them: tectum never deletes what it did not create. The
inline policies a stack declares are deleted before their role (they depend on it).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

from tectum.diagnostics import Diagnostic, DiagnosticError
from tectum.plans.plan import Action, ResourceChange
from tectum.providers.aws.client import Aws, error_code, until_visible
from tectum.providers.aws.s3 import VISIBLE_WAIT, _check_all
from tectum.providers.aws.storage_common import (
    StillListed,
    delete_confirmed,
    each,
    failure,
    tag_changes,
    tag_dict,
    tag_list,
    there,
    valid_tags,
)
from tectum.providers.base import ApplyError, ImplicitKey, ReadError, ReadItem, ResourceType
from tectum.schema import Attr, Schema
from tectum.values import is_known

_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}")
_POLICY_NAME = re.compile(r"[\w+=,.@-]{1,128}")
_PATH = re.compile(r"/(?:[\x21-\x7e]{0,510}/)?")
_LISTS = ("Action", "NotAction", "Resource", "NotResource")
_ACCOUNT = re.compile(r"\d{12}")


def _named(pattern: re.Pattern[str], what: str, example: str) -> Any:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not is_known(value):
            return None
        if not pattern.fullmatch(value):
            return (f"{value!r} is not a valid {what}: letters, digits and + = , . @ _ - only "
                    f"(e.g. \"{example}\")")
        return None
    return check


def _valid_path(value: Any) -> str | None:
    if not isinstance(value, str) or not is_known(value):
        return None
    if not _PATH.fullmatch(value):
        return (f"{value!r} is not an IAM path: \"/\", or text starting and ending with \"/\" "
                "(e.g. \"/service/\")")
    return None


def _valid_duration(value: Any) -> str | None:
    if isinstance(value, int) and not 3600 <= value <= 43200:
        return f"{value} is not 3600 to 43200 seconds (1 to 12 hours)"
    return None


def policy_problem(value: Any) -> str | None:
    """Validator of a policy: a JSON object (text or a mapping); None when it is one."""
    if isinstance(value, str):
        if not is_known(value):
            return None
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            return f"is not JSON ({exc}); write the policy as JSON text or as a mapping"
        if not isinstance(parsed, dict):
            return "is JSON but not an object ({\"Version\": ..., \"Statement\": [...]})"
        return None
    if isinstance(value, dict):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            return f"cannot be written as JSON: {exc}"
    return None


def canonical(value: Any) -> str:
    """A policy (JSON text or a mapping) as canonical JSON text: keys sorted, indented by 2.
    Raises ``ValueError`` for text that is not a JSON object."""
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict):
        raise ValueError("a policy is a JSON object")
    return json.dumps(parsed, sort_keys=True, indent=2)


def _document(found: Any) -> dict[str, Any]:
    """A policy document as IAM returns it: a mapping (boto3 decodes it), or URL-encoded JSON
    text."""
    if isinstance(found, dict):
        return found
    text = str(found)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = json.loads(urllib.parse.unquote(text))
    return parsed if isinstance(parsed, dict) else {}


def _as_list(value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    return sorted({json.dumps(i, sort_keys=True) for i in items})


def _principal(value: Any) -> Any:
    if value == "*":
        return {"AWS": ["\"*\""]}
    if isinstance(value, dict):
        out = {}
        for kind, ids in value.items():
            ids = ids if isinstance(ids, list) else [ids]
            if kind == "AWS":
                ids = [f"arn:aws:iam::{i}:root" if isinstance(i, str) and _ACCOUNT.fullmatch(i)
                       else i for i in ids]
            out[kind] = _as_list(ids)
        return out
    return value


def _statement(stmt: Any) -> str:
    if not isinstance(stmt, dict):
        return json.dumps(stmt, sort_keys=True)
    out: dict[str, Any] = {}
    for key, value in stmt.items():
        if key == "Sid" and not value:
            continue
        if key in _LISTS:
            out[key] = _as_list(value)
        elif key in ("Principal", "NotPrincipal"):
            out[key] = _principal(value)
        elif key == "Condition" and isinstance(value, dict):
            out[key] = {op: {k: _as_list(v) for k, v in (cond or {}).items()}
                        if isinstance(cond, dict) else cond for op, cond in value.items()}
        else:
            out[key] = value
    return json.dumps(out, sort_keys=True)


def normalized(document: dict[str, Any]) -> str:
    """A policy's meaning as comparable text (see the module docstring)."""
    out = dict(document)
    statements = out.get("Statement")
    if statements is not None:
        listed = statements if isinstance(statements, list) else [statements]
        out["Statement"] = sorted(_statement(s) for s in listed)
    return json.dumps(out, sort_keys=True)


def equivalent(a: Any, b: Any) -> bool:
    """Whether two policies (text or mappings) mean the same."""
    try:
        return normalized(_document(a)) == normalized(_document(b))
    except (ValueError, TypeError):
        return False


def observed_policy(found: Any, *known: Any) -> str:
    """The policy IAM holds, as the first of ``known`` (the configured or recorded text) that
    means the same, else in canonical form."""
    document = _document(found)
    for text in known:
        if isinstance(text, str) and is_known(text) and equivalent(document, text):
            return text
    return canonical(document)


class RoleType(ResourceType[Aws]):
    """An IAM role (see the module docstring): ``IamRole("app", assume_role_policy={...})``."""

    name = "aws_iam_role"
    schema = Schema({
        "name": Attr(str, required=True, identity=True, force_new=True,
                     validate=_named(_ROLE_NAME, "IAM role name", "app-server"),
                     description="the role's name"),
        "assume_role_policy": Attr((str, dict), required=True, validate=policy_problem,
                                   description="the trust policy (JSON text or a mapping)"),
        "description": Attr(str, default="", description="what the role is for"),
        "path": Attr(str, default="/", force_new=True, validate=_valid_path,
                     description="the role's path, e.g. /service/"),
        "max_session_duration": Attr(int, default=3600, validate=_valid_duration,
                                     description="seconds a session may last, 3600 to 43200"),
        "tags": Attr(dict, default={}, validate=valid_tags, description="tags {KEY: VALUE}"),
        "arn": Attr(str, computed=True, description="the role's ARN"),
        "unique_id": Attr(str, computed=True, description="IAM's id of the role (AROA...)"),
    })
    stored_computed = ("arn", "unique_id")
    #: an in-place update keeps them (dependants stay known)
    kept_on_update = frozenset({"arn", "unique_id"})
    text_attrs = frozenset({"assume_role_policy"})

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        for key, empty in (("tags", {}), ("description", ""), ("path", "/")):
            if out.get(key) is None:
                out[key] = empty
        _check_all(self, out, ("name", "assume_role_policy", "description", "path",
                               "max_session_duration", "tags"))
        policy = out.get("assume_role_policy")
        if policy is not None and (not isinstance(policy, str) or is_known(policy)):
            out["assume_role_policy"] = canonical(policy)
        return out

    def implicit_keys(self, attrs: dict[str, Any]) -> list[ImplicitKey]:
        """``("iam_role", NAME)``: its inline policies need the role."""
        name = attrs.get("name")
        return [("iam_role", name)] if isinstance(name, str) else []

    def read(self, target: Aws, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """``ListRoles`` once, ``ListRoleTags`` per role found. Returns ``{"name",
        "assume_role_policy", "description", "path", "max_session_duration", "tags", "arn",
        "unique_id"}`` or None."""
        try:
            roles = {str(r["RoleName"]): r for r in target.pages("iam", "list_roles", "Roles")}
            names = list(dict.fromkeys(
                str(i.attrs["name"]) for i in items
                if isinstance(i.attrs.get("name"), str) and i.attrs["name"] in roles))
            tags = dict(zip(names, each(lambda n: _role_tags(target, n), names), strict=True))
        except Exception as exc:
            raise ReadError(failure(exc, "reading IAM roles")) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            name = item.attrs.get("name")
            role = roles.get(name) if isinstance(name, str) else None
            found_tags = tags.get(str(name))
            if role is None or found_tags is None:
                out.append(None)
                continue
            known = [(item.desired or {}).get("assume_role_policy"),
                     (item.prior or {}).get("assume_role_policy")]
            out.append(_role(role, found_tags, *known))
        return out

    def apply(self, target: Aws, change: ResourceChange) -> dict[str, Any] | None:
        """CREATE: ``CreateRole``, then wait until ``GetRole`` sees it; UPDATE:
        ``UpdateAssumeRolePolicy``, ``UpdateRole``, ``TagRole`` / ``UntagRole`` as needed;
        DELETE: ``DeleteRole``. Raises :class:`ApplyError`."""
        if change.action is Action.DELETE and change.before is None:
            return None  # (the plan found it gone: "only removed from state")
        iam = target.client("iam")
        if change.action in (Action.DELETE, Action.REPLACE):
            old = change.prior or change.before or {}
            if isinstance(old.get("name"), str):
                _delete_role(target, str(old["name"]))
            if change.action is Action.DELETE:
                return None
        after = dict(change.after or {})
        name = str(after["name"])
        policy = str(after["assume_role_policy"])
        tags = dict(after.get("tags") or {})
        try:
            if change.action in (Action.CREATE, Action.REPLACE):
                params: dict[str, Any] = {
                    "RoleName": name, "Path": str(after.get("path") or "/"),
                    "AssumeRolePolicyDocument": policy,
                    "MaxSessionDuration": int(after.get("max_session_duration") or 3600)}
                if after.get("description"):
                    params["Description"] = str(after["description"])
                if tags:
                    params["Tags"] = tag_list(tags)
                once = target.client("iam", once=True)
                try:
                    # (an answer lost on the way: the role there is this create's)
                    target.create_once(lambda: once.create_role(**params),
                                       lambda: there(lambda: iam.get_role(RoleName=name),
                                                        frozenset({"NoSuchEntity"})),
                                       what=f"IAM role {name}",
                                       exists=frozenset({"EntityAlreadyExists"}))
                except Exception as exc:
                    if error_code(exc) != "EntityAlreadyExists":
                        raise
                    raise ApplyError(
                        f"IAM role {name} exists already (made meanwhile, outside this plan): "
                        "run tectum plan again to adopt it, or tectum import it") from None
            else:
                before = change.before or {}
                if not equivalent(before.get("assume_role_policy") or "{}", policy):
                    iam.update_assume_role_policy(RoleName=name, PolicyDocument=policy)
                if before.get("description") != after.get("description") or \
                        before.get("max_session_duration") != after.get("max_session_duration"):
                    iam.update_role(
                        RoleName=name, Description=str(after.get("description") or ""),
                        MaxSessionDuration=int(after.get("max_session_duration") or 3600))
                put, drop = tag_changes(dict(before.get("tags") or {}), tags)
                if put:
                    iam.tag_role(RoleName=name, Tags=tag_list(put))
                if drop:
                    iam.untag_role(RoleName=name, TagKeys=drop)
            role = until_visible(lambda: iam.get_role(RoleName=name)["Role"],
                                 what=f"IAM role {name}")
        except ApplyError:
            raise
        except Exception as exc:
            raise ApplyError(failure(exc, f"IAM role {name}")) from None
        return _role(role, tags, policy)


def _role_tags(aws: Aws, name: str) -> dict[str, str] | None:
    """The tags of a role ``ListRoles`` showed (``ListRoleTags``, paginated; "no such entity"
    is retried for a while: listed but not visible yet); None when the role is gone."""
    try:
        return until_visible(
            lambda: tag_dict(aws.pages("iam", "list_role_tags", "Tags", RoleName=name)),
            codes=frozenset({"NoSuchEntity"}), timeout=VISIBLE_WAIT, what=f"IAM role {name}")
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            return None
        raise


def _role(role: dict[str, Any], tags: dict[str, str], *known: Any) -> dict[str, Any]:
    return {"name": role["RoleName"],
            "assume_role_policy": observed_policy(role.get("AssumeRolePolicyDocument") or {},
                                                  *known),
            "description": str(role.get("Description") or ""),
            "path": str(role.get("Path") or "/"),
            "max_session_duration": int(role.get("MaxSessionDuration") or 3600),
            "tags": dict(tags), "arn": role.get("Arn"), "unique_id": role.get("RoleId")}


def _delete_role(aws: Aws, name: str) -> None:
    iam = aws.client("iam")
    try:
        delete_confirmed(lambda: iam.delete_role(RoleName=name), frozenset({"NoSuchEntity"}),
                         lambda: any(r["RoleName"] == name
                                     for r in aws.pages("iam", "list_roles", "Roles")),
                         what=f"IAM role {name}")
    except StillListed as exc:
        raise ApplyError(str(exc)) from None
    except Exception as exc:
        if error_code(exc) == "DeleteConflict":
            raise ApplyError(_conflict(iam, name)) from None
        raise ApplyError(failure(exc, f"deleting IAM role {name}")) from None


def _conflict(iam: Any, name: str) -> str:
    """Why IAM refuses to delete role ``name``: what is still attached to it."""
    held: list[str] = []
    try:
        inline = iam.list_role_policies(RoleName=name).get("PolicyNames") or []
        attached = [p["PolicyArn"] for p in
                    iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies") or []]
        profiles = [p["InstanceProfileName"] for p in
                    iam.list_instance_profiles_for_role(RoleName=name).get(
                        "InstanceProfiles") or []]
    except Exception:  # noqa: BLE001 - the refusal is reported all the same
        inline, attached, profiles = [], [], []
    if inline:
        held.append(f"inline policies {', '.join(inline)}")
    if attached:
        held.append(f"attached policies {', '.join(attached)}")
    if profiles:
        held.append(f"instance profiles {', '.join(profiles)}")
    what = "; ".join(held) or "policies or instance profiles"
    return (f"IAM role {name} was not deleted: it still has {what}, which this stack does not "
            "manage (tectum deletes only what it created). Detach or delete them, or declare "
            "them in the stack; then run the command again")


def _has_policy(iam: Any, role: str, name: str) -> bool:
    """Whether ``ListRolePolicies`` of ``role`` names ``name`` (False: no such role)."""
    try:
        pages = iam.get_paginator("list_role_policies").paginate(RoleName=role)
        return any(name in (page.get("PolicyNames") or []) for page in pages)
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            return False
        raise


def _policy_id(attrs: dict[str, Any]) -> str:
    return f"{attrs.get('role')}:{attrs.get('name')}"


class RolePolicyType(ResourceType[Aws]):
    """An inline policy of an IAM role (see the module docstring):
    ``IamRolePolicy("read", role=role.name, policy={...})``."""

    name = "aws_iam_role_policy"
    schema = Schema({
        "role": Attr(str, required=True, identity=True, force_new=True,
                     validate=_named(_ROLE_NAME, "IAM role name", "app-server"),
                     description="the role's name"),
        "name": Attr(str, required=True, identity=True, force_new=True,
                     validate=_named(_POLICY_NAME, "IAM policy name", "read-logs"),
                     description="the policy's name"),
        "policy": Attr((str, dict), required=True, validate=policy_problem,
                       description="the policy document (JSON text or a mapping)"),
    })
    text_attrs = frozenset({"policy"})

    def prepare(self, attrs: dict[str, Any], base_dir: str) -> dict[str, Any]:
        out = super().prepare(attrs, base_dir)
        _check_all(self, out, ("role", "name", "policy"))
        policy = out.get("policy")
        if policy is not None and (not isinstance(policy, str) or is_known(policy)):
            out["policy"] = canonical(policy)
        return out

    def implicit_needs(self, attrs: dict[str, Any]) -> list[list[ImplicitKey]]:
        role = attrs.get("role")
        return [[("iam_role", role)]] if isinstance(role, str) else []

    def describe(self, attrs: dict[str, Any]) -> str:
        return _policy_id(attrs)

    def import_item(self, import_id: str) -> ReadItem:
        """Terraform's import ID ``ROLE:NAME``. Raises :class:`DiagnosticError` for another
        shape."""
        role, _, name = import_id.partition(":")
        if not role or not name:
            raise DiagnosticError(Diagnostic.error(
                "Invalid import ID",
                f"{import_id!r} does not name an inline policy: aws_iam_role_policy is "
                "imported as ROLE:NAME (the role's name, a colon, the policy's name), e.g. "
                "app-server:read-logs."))
        return ReadItem(None, {"role": role, "name": name})

    def read(self, target: Aws, items: Sequence[ReadItem]) -> list[dict[str, Any] | None]:
        """``GetRolePolicy`` per policy (IAM has no batch read). Returns ``{"role", "name",
        "policy"}`` or None (no such role, or no such policy on it)."""
        keys = list(dict.fromkeys((str(i.attrs.get("role")), str(i.attrs.get("name")))
                                  for i in items))

        def get(key: tuple[str, str]) -> Any:
            try:
                return target.client("iam").get_role_policy(
                    RoleName=key[0], PolicyName=key[1])["PolicyDocument"]
            except Exception as exc:
                if error_code(exc) == "NoSuchEntity":
                    return None
                raise

        try:
            found = dict(zip(keys, each(get, keys), strict=True))
        except Exception as exc:
            raise ReadError(failure(exc, "reading IAM role policies")) from None
        out: list[dict[str, Any] | None] = []
        for item in items:
            key = (str(item.attrs.get("role")), str(item.attrs.get("name")))
            document = found.get(key)
            if document is None:
                out.append(None)
                continue
            out.append({"role": key[0], "name": key[1], "policy": observed_policy(
                document, (item.desired or {}).get("policy"), (item.prior or {}).get("policy"))})
        return out

    def apply(self, target: Aws, change: ResourceChange) -> dict[str, Any] | None:
        """``PutRolePolicy`` (a role just made and not visible yet is waited for);
        ``DeleteRolePolicy``. Raises :class:`ApplyError`."""
        if change.action is Action.DELETE and change.before is None:
            return None  # (the plan found it gone: "only removed from state")
        iam = target.client("iam")
        if change.action in (Action.DELETE, Action.REPLACE):
            old = change.prior or change.before or {}
            role, name = str(old.get("role")), str(old.get("name"))
            try:
                delete_confirmed(
                    lambda: iam.delete_role_policy(RoleName=role, PolicyName=name),
                    frozenset({"NoSuchEntity"}), lambda: _has_policy(iam, role, name),
                    what=f"IAM role policy {_policy_id(old)}")
            except StillListed as exc:
                raise ApplyError(str(exc)) from None
            except Exception as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise ApplyError(failure(exc, f"deleting IAM role policy "
                                                  f"{_policy_id(old)}")) from None
            if change.action is Action.DELETE:
                return None
        after = dict(change.after or {})
        role, name, policy = str(after["role"]), str(after["name"]), str(after["policy"])
        before = change.before or {}
        if change.action is Action.UPDATE and isinstance(before.get("policy"), str) and \
                equivalent(before["policy"], policy):
            # (planned with a value known only at apply, e.g. the ARN of a bucket being
            # updated, that turned out the same: nothing to write)
            return {"role": role, "name": name, "policy": policy}
        try:
            until_visible(lambda: iam.put_role_policy(RoleName=role, PolicyName=name,
                                                      PolicyDocument=policy),
                          codes=frozenset({"NoSuchEntity"}), what=f"IAM role {role}")
        except Exception as exc:
            hint = (" (no such role: declare it in the stack, or create it first)"
                    if error_code(exc) == "NoSuchEntity" else "")
            raise ApplyError(failure(exc, f"IAM role policy {role}:{name}") + hint) from None
        return {"role": role, "name": name, "policy": policy}
