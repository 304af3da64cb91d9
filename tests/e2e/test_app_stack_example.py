"""examples/app-stack for real: a PostgreSQL role and database with a generated password, an
etcd key holding the DSN, a configuration file rendered from it on this machine and the service
reading it (restarted when it changes), an S3 bucket and an IAM role on moto — one plan, one
state. The service answers with the role its DSN logs in as, over a cluster that checks
passwords (scram-sha-256 for every role but the administrator), so the page proves the whole
chain. Ten plans after the apply change nothing; the generated password appears in no output;
destroy removes everything in dependency order.

The example is copied with its ``tectum.toml`` pointed at the test's own servers: a private
PostgreSQL cluster, the session's etcd, the test's moto server; the names carry a random
suffix and the port is a free one."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends.conftest import Cluster, _pg_bindir
from tests.conftest import ok, run_tectum
from tests.harness.etcd import Etcd, etcd_server  # noqa: F401
from tests.harness.moto import Moto

pytestmark = [pytest.mark.system, pytest.mark.etcd, pytest.mark.aws]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "app-stack"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A cluster of the test's own whose TCP logins check passwords (but the administrator's)."""
    made = Cluster(_pg_bindir(), settings={"password_encryption": "scram-sha-256"})
    try:
        made.start()
        (made.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(made.port), "-U", "postgres",
                        "-d", "postgres", "-c", "select pg_reload_conf()"], check=True,
                       capture_output=True)
        yield made
    finally:
        made.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, attempts: int = 60) -> tuple[int, str]:
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            last = exc
            time.sleep(0.25)
    raise AssertionError(f"{url} did not answer: {last}")


def _project(tmp: Path, cluster: Cluster, etcd: Etcd, moto: Moto) -> Path:
    root = tmp / "app-stack"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".tectum"))
    toml = (root / "tectum.toml").read_text()
    toml = re.sub(r"(?m)^port = \d+$", f"port = {cluster.port}", toml)
    toml = re.sub(r'(?m)^endpoints = .*$', f'endpoints = ["{etcd.endpoint}"]', toml)
    toml = re.sub(r'(?m)^endpoint_url = .*$', f'endpoint_url = "{moto.url}"', toml)
    (root / "tectum.toml").write_text(toml)
    return root


def _psql(cluster: Cluster, sql: str) -> str:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres",
                           "-d", "postgres", "-tAc", sql], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_app_stack_in_one_plan(tmp_path: Path, cluster: Cluster, etcd_server: Etcd,  # noqa: F811
                               moto: Moto) -> None:
    name = f"appstack-{secrets.token_hex(3)}"
    port = _free_port()
    root = _project(tmp_path, cluster, etcd_server, moto)
    env = {**moto.env()}
    args = ["-var", f"name={name}", "-var", f"port={port}", "-var", f"pg_port={cluster.port}"]
    run = lambda *a: run_tectum(*a, *args, str(root), env=env)  # noqa: E731
    try:
        plan = ok(run("plan"))
        for kind in ("random_password.db", "postgresql_role.app", "postgresql_database.app",
                     "postgresql_grant.app_connect", "etcd_key.dsn", "aws_s3_bucket.assets",
                     "aws_s3_bucket_versioning.assets", "aws_iam_role.service", "file.config",
                     "service.app"):
            assert kind in plan.stdout, plan.stdout
        applied = ok(run("apply", "--auto-approve"))
        status, page = _get(f"http://127.0.0.1:{port}/")
        assert (status, page) == (200, f"Hello from app-stack: connected as {name}\n"), page

        # the whole chain is real: the role, the key, the bucket, the IAM role
        assert _psql(cluster, f"select rolcanlogin from pg_roles where rolname = '{name}'") == "t"
        dsn = etcd_server.keys(f"/{name}/")[f"/{name}/database/dsn"]
        password = dsn.rsplit("password=", 1)[1]
        s3 = moto.client("s3")
        assert f"{name}-assets" in [b["Name"] for b in s3.list_buckets()["Buckets"]]  # type: ignore[attr-defined]
        assert moto.client("iam").get_role(RoleName=f"{name}-service")  # type: ignore[attr-defined]

        outputs = [plan, applied]
        for _ in range(10):
            again = ok(run("plan"))
            assert "No changes." in again.stdout, again.stdout
            outputs.append(again)
        outputs.append(ok(run_tectum("show", str(root), env=env)))
        for result in outputs:
            assert password not in result.output

        # a greeting changed: the file and a restart, nothing else
        changed = ok(run_tectum("apply", "--auto-approve", *args, "-var", "greeting=Hi",
                                str(root), env=env))
        assert "Plan: 0 to add, 2 to change, 0 to replace, 0 to destroy." in changed.stdout
        assert "file.config: updated" in changed.stdout and "service.app: restarted" in \
            changed.stdout, changed.stdout
        assert _get(f"http://127.0.0.1:{port}/")[1] == f"Hi: connected as {name}\n"
        args += ["-var", "greeting=Hi"]
    finally:
        gone = run("destroy", "--auto-approve")
    ok(gone)
    assert _psql(cluster, f"select count(*) from pg_roles where rolname = '{name}'") == "0"
    assert _psql(cluster, f"select count(*) from pg_database where datname = '{name}'") == "0"
    assert etcd_server.keys(f"/{name}/") == {}
    assert f"{name}-assets" not in [b["Name"] for b in  # type: ignore[attr-defined]
                                    moto.client("s3").list_buckets()["Buckets"]]
    assert not Path(f"/etc/init.d/{name}").exists()
    assert not Path(f"/etc/{name}").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
