"""Secrets: encrypted secrets files in the repository (:mod:`tectum.secrets.store`).

``secrets/ENV.yaml`` holds readable keys and age-encrypted values, with a MAC over the whole
file; see :mod:`tectum.secrets.store` and docs/secrets.md.
"""

from tectum.secrets.store import (
    FORMAT_VERSION,
    SECRETS_DIR,
    Identity,
    Keyring,
    Recipient,
    SecretsError,
    SecretsFile,
    default_key_file,
    generate_identity,
    load_identities,
    load_keyring,
    load_secrets,
    normalize_recipient,
    parse_plaintext_yaml,
    parse_recipient,
    plaintext_yaml,
    secrets_path,
    valid_env,
    valid_key,
)

__all__ = [
    "FORMAT_VERSION",
    "SECRETS_DIR",
    "Identity",
    "Keyring",
    "Recipient",
    "SecretsError",
    "SecretsFile",
    "default_key_file",
    "generate_identity",
    "load_identities",
    "load_keyring",
    "load_secrets",
    "normalize_recipient",
    "parse_plaintext_yaml",
    "parse_recipient",
    "plaintext_yaml",
    "secrets_path",
    "valid_env",
    "valid_key",
]
