"""The provider itself: settings (the password only from the environment), ``down()`` after a
change could not reach the server, and a connecting role that is no superuser (the password
cannot be observed: it is kept from state, never reported as drift)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from tectum.config.inventory import empty_inventory
from tectum.diagnostics import DiagnosticError
from tectum.masking import REDACTOR
from tectum.providers.base import ProviderContext, ReadItem, provider_settings
from tectum.providers.postgresql.client import Client, PgError
from tectum.providers.postgresql.provider import PASSWORD_ENV, PostgresqlProvider
from tectum.providers.postgresql.role import RoleType
from tests.providers.cases.postgresql import settings
from tests.providers.postgresql.conftest import Pg


def _context(root: Path) -> ProviderContext:
    return ProviderContext(str(root), "default", empty_inventory(str(root)), {})


@pytest.fixture
def env_password() -> Iterator[str]:
    value = "env-secret-" + os.urandom(6).hex()
    os.environ[PASSWORD_ENV] = value
    yield value
    del os.environ[PASSWORD_ENV]


def test_the_password_comes_from_the_environment_only(tmp_path: Path,
                                                      env_password: str) -> None:
    config = provider_settings("postgresql", PostgresqlProvider, {"port": 5433}, "tectum.toml")
    provider = PostgresqlProvider()
    provider.configure(config, _context(tmp_path))
    assert "password" not in provider.config and REDACTOR.redact(env_password) != env_password
    (tmp_path / "tectum.toml").write_text('[providers.postgresql]\npassword = "in-the-toml"\n')
    del os.environ[PASSWORD_ENV]
    try:
        config = provider_settings("postgresql", PostgresqlProvider,
                                   {"password": "in-the-toml"}, "tectum.toml")
        with pytest.raises(DiagnosticError) as info:
            PostgresqlProvider().configure(config, _context(tmp_path))
    finally:
        os.environ[PASSWORD_ENV] = env_password
    diag = next(iter(info.value.diagnostics))
    assert diag.summary == "Password in tectum.toml" and "in-the-toml" not in diag.detail
    # the environment override set too (review item 11): still refused, not hidden
    config = provider_settings("postgresql", PostgresqlProvider,
                               {"password": "in-the-toml"}, "tectum.toml")
    assert config["password"] == env_password
    with pytest.raises(DiagnosticError) as info:
        PostgresqlProvider().configure(config, _context(tmp_path))
    diag = next(iter(info.value.diagnostics))
    assert diag.summary == "Password in tectum.toml" and "in-the-toml" not in diag.detail
    assert env_password not in diag.detail


def test_down_after_a_change_cannot_reach_the_server(tmp_path: Path,
                                                     closed_port: int) -> None:
    provider = PostgresqlProvider()
    provider.configure(provider_settings("postgresql", PostgresqlProvider,
                                         {"host": "127.0.0.1", "port": closed_port,
                                          "connect_timeout": 2}, "t"), _context(tmp_path))
    client = provider.target(None)
    assert provider.down(client) is None
    with pytest.raises(PgError, match="cannot connect to PostgreSQL at 127.0.0.1:"):
        client.execute("postgres", sql.SQL("SELECT 1"))
    down = provider.down(client)
    assert down is not None and down[0] == "unreachable" and "127.0.0.1:" in down[1]
    provider.close()


def test_a_role_that_is_no_superuser_keeps_the_password_from_state(pg: Pg,
                                                                   prefix: str) -> None:
    plain, other = f"{prefix}plain", f"{prefix}other"
    pg.run(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(plain)))
    pg.run(sql.SQL("CREATE ROLE {} PASSWORD 'set-by-hand'").format(sql.Identifier(other)))
    client = Client({**settings(pg.port), "username": plain})
    try:
        assert client.is_superuser() is False
        prior = {"name": other, "password": "recorded-one"}
        found = RoleType().read(client, [ReadItem({"name": other, "password": "wanted"},
                                                  prior)])
        assert found[0] is not None and found[0]["password"] == "recorded-one"
    finally:
        client.close()


_NO_PSYCOPG = """\
import importlib.util, sys
sys.modules["psycopg"] = None  # as if it were not installed
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "psycopg" else real(name, *a)
from tectum.cli.main import main
sys.argv = ["tectum", "plan"]
main()
"""


def test_without_psycopg_the_plan_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import tectum_env

    (tmp_path / "tectum.toml").write_text('[providers.postgresql]\nhost = "127.0.0.1"\n')
    (tmp_path / "stack.py").write_text('from tectum.postgresql import Role\nRole("r")\n')
    proc = subprocess.run([sys.executable, "-c", _NO_PSYCOPG], cwd=tmp_path, env=tectum_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "pip install 'tectum[postgres]'" in out, out
    assert "Traceback" not in out
