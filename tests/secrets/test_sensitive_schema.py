"""A static check of every registered resource type: an attribute whose name says it holds a
secret (a password, a token, a private key...) must be declared ``sensitive`` in the type's
schema — else its value would be printed in plans and stored in plaintext state.

The checker is tested on a made-up schema first, so that an empty or broken registry, or a
pattern that matches nothing, cannot make the real check pass vacuously.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from tectum.providers.registry import registry
from tectum.schema import Attr, Schema

# Compared against the attribute name lowercased with every non-letter-or-digit removed, so
# that ``db_password``, ``dbPassword`` and ``db-password`` all match ``password``.
SECRET_FRAGMENTS = (
    "password", "passwd", "passphrase", "passcode", "secret", "token", "privatekey", "privkey",
    "apikey", "credential", "accesskey", "signingkey", "encryptionkey", "sessionkey",
    "clientkey", "masterkey", "authkey", "bearer", "cookie", "pincode", "otpseed", "hmac",
    "salt", "psk", "dsn", "connstr", "connectionstring",
)
# Whole words only (the name split at ``_``, ``-``, ``.`` and case changes): short words that
# would match inside unrelated names as fragments (``pin`` in ``spinning``, ``key`` in
# ``monkey``, ``auth`` in ``author``).
SECRET_WORDS = frozenset({"pw", "pwd", "pass", "pin", "key", "auth", "otp", "totp", "jwt"})


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def looks_secret(name: str) -> bool:
    """True if an attribute called ``name`` probably holds a secret value."""
    compact = re.sub(r"[^a-z0-9]", "", name.lower())
    return (any(fragment in compact for fragment in SECRET_FRAGMENTS)
            or any(word in SECRET_WORDS for word in _words(name)))


#: attribute names that look secret but name no secret, per type (with why): the word is the
#: service's own term for something public
NOT_SECRETS: Mapping[tuple[str, str], str] = {
    **{(t, "client_token"): "an idempotency token EC2 shows in every Describe (ClientToken)"
       for t in ("aws_instance", "aws_security_group", "aws_subnet", "aws_vpc",
                 "aws_vpc_security_group_egress_rule", "aws_vpc_security_group_ingress_rule")},
    ("aws_dynamodb_table", "hash_key"): "the name of the table's partition key attribute",
    ("aws_dynamodb_table", "range_key"): "the name of the table's sort key attribute",
    ("etcd_key", "key"): "the etcd key's name (its value is the sensitive part)",
    ("etcd_data_key", "key"): "the etcd key's name (its value is the sensitive part)",
}


def unmarked_secrets(attrs: Mapping[str, Attr], type_name: str = "") -> list[str]:
    """The attributes that look secret but are not declared sensitive (and are not listed in
    :data:`NOT_SECRETS` for ``type_name``)."""
    return sorted(name for name, attr in attrs.items()
                  if looks_secret(name) and not attr.sensitive
                  and (type_name, name) not in NOT_SECRETS)


# -- the checker itself ------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "password", "db_password", "dbPassword", "root-passwd", "passphrase", "client_secret",
    "secret", "api_token", "token", "AuthToken", "private_key", "ssh_private_key", "privkey",
    "tls_privkey_pem", "api_key", "apiKey", "credentials", "aws_access_key", "signing_key",
    "become_pass", "pw", "admin_pwd", "key", "enrollment_pin", "jwt", "bearer_header",
    "session_cookie", "hmac_key", "password_salt", "wifi_psk", "database_dsn", "conn_str",
])
def test_secret_names_are_recognised(name: str) -> None:
    assert looks_secret(name), name


@pytest.mark.parametrize("name", [
    "path", "content", "template", "vars", "mode", "owner", "group", "name", "ensure",
    "version", "uid", "gid", "home", "shell", "comment", "system", "running", "enabled",
    "command", "creates", "unless", "cwd", "environment", "timeout", "exit_code", "length",
    "special", "keepers", "target", "content_sha256", "groups", "create_home", "spinning",
    "passenger_count", "monkey", "keyboard_layout", "author", "pinned_version",
])
def test_ordinary_names_are_not_flagged(name: str) -> None:
    assert not looks_secret(name), name


def test_checker_flags_exactly_the_unmarked_secret_attributes() -> None:
    fake = Schema({
        "path": Attr(str, required=True, identity=True),
        "db_password": Attr(str),                            # secret, not marked: flagged
        "api_token": Attr(str, sensitive=True),              # secret, marked: fine
        "ssh_private_key": Attr(str, computed=True),         # computed secrets count too
        "generated": Attr(str, computed=True, sensitive=True),
        "mode": Attr(str, default="0644"),
    })
    assert unmarked_secrets(fake.attrs) == ["db_password", "ssh_private_key"]
    assert unmarked_secrets({"path": Attr(str)}) == []
    assert unmarked_secrets({}) == []


# -- every registered resource type ------------------------------------------------------------

def _type_names() -> list[str]:
    return list(registry.names())


def test_the_registry_lists_resource_types() -> None:
    names = _type_names()
    assert {"file", "command", "user"} <= set(names), names
    for name in names:
        rt = registry.get(name)
        assert rt is not None, f"registry lists {name!r} but cannot load it"
        assert rt.schema.attrs, f"resource type {name!r} has no attributes"


@pytest.mark.parametrize("type_name", _type_names())
def test_secret_looking_attributes_are_sensitive(type_name: str) -> None:
    rt = registry.get(type_name)
    assert rt is not None
    missing = unmarked_secrets(rt.schema.attrs, type_name)
    assert not missing, (
        f"resource type {type_name!r}: attribute(s) {', '.join(missing)} look like they hold "
        "a secret but are not declared Attr(..., sensitive=True) in its schema; their values "
        "would be shown in plans and stored in plaintext state")
    for (listed, attr), _why in NOT_SECRETS.items():
        if listed == type_name:
            assert attr in rt.schema.attrs, f"NOT_SECRETS names {attr!r}, which {listed} lacks"
    # the schema's own index of sensitive attributes agrees with the flags
    assert rt.schema.sensitive == {k for k, a in rt.schema.attrs.items() if a.sensitive}


def test_generated_password_result_is_sensitive() -> None:
    if "random_password" not in registry.names():
        pytest.skip("resource type random_password (tectum.random.Password) is not registered "
                    "yet")
    rt = registry.get("random_password")
    assert rt is not None
    result = rt.schema.attrs.get("result")
    assert result is not None, "random_password has no 'result' attribute"
    assert result.computed, "random_password.result must be computed (generated at apply)"
    assert result.sensitive, "random_password.result must be declared sensitive"
