"""Benchmark: the postgresql provider — a no-op over 200 PostgreSQL roles and their grants,
tectum vs Ansible's ``community.postgresql`` (issue 14: "≥ 10× faster"), in one run.

Setup (untimed): a PostgreSQL cluster of the benchmark's own (``tests.backends.conftest``'s
``Cluster``: ``initdb`` into a temporary directory, a server on a free 127.0.0.1 port, trust
authentication; removed at the end), a database ``bench_db`` with 5 tables in ``public``, and
the same objects for both tools: N roles (``--roles``, default 200) ``bench_rNNN`` with
``LOGIN``, each granted ``CONNECT`` on ``bench_db`` and ``SELECT`` on every table of
``public`` in it. tectum makes them (``tectum apply``), then Ansible runs once over them
(untimed) so both start from a settled world.

* tectum: a project of N ``postgresql_role`` + 2N ``postgresql_grant`` resources (``Role``,
  ``Grant(object_type="database")``, ``Grant(object_type="table")``: every table); its read is
  one ``pg_authid`` query, one ``pg_database`` ACL query and one ``aclexplode`` over
  ``pg_class``.
* Ansible: ``community.postgresql`` (the collection of the ``ansible`` 12 package: 4.x, which
  uses psycopg 3 on the controller), one playbook on ``localhost`` (local connection, no
  facts): ``postgresql_user`` looping over the N roles (``role_attr_flags: LOGIN``), and two
  ``postgresql_privs`` tasks granting to all N roles at once (``roles: r1,r2,...`` — the
  batching the module allows): ``CONNECT`` on the database, ``SELECT`` on ``ALL_IN_SCHEMA``
  tables. The collection is used as installed when ``ansible-galaxy collection list`` has it;
  otherwise it is extracted from the ``ansible`` wheel (``pip download --no-deps
  "ansible>=12,<13"`` into ``/var/cache/tectum-bench/wheels``, only
  ``ansible_collections/community/postgresql`` into ``/var/cache/tectum-bench/collections``,
  found through ``ANSIBLE_COLLECTIONS_PATH``).

Phases, each the wall time of the whole tool process: ``tectum plan`` and ``tectum apply
-auto-approve`` with nothing to change (``--repeat`` runs, default 5; "No changes" checked),
``ansible-playbook`` with nothing to change (``--ansible-repeat``, default 2; its recap's
``changed`` is printed). Reported: medians, and the ratio Ansible / tectum apply. Role
passwords are left out: Ansible's ``postgresql_user`` cannot compare a SCRAM verifier with a
password without setting it (``update_password: on_create`` would skip the comparison), and
tectum's check costs one PBKDF2 per role (about 1 ms).

Run alone as root from the checkout: ``python3 bench/providers_postgresql.py [--roles N]
[--repeat N] [--ansible-repeat N]``; ``bench/providers.py`` runs it with the other families.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.backends.conftest import Cluster, _pg_bindir  # noqa: E402

CACHE = Path("/var/cache/tectum-bench")
COLLECTIONS = CACHE / "collections"


class BenchError(Exception):
    """A step of the benchmark failed (the message says which)."""


def _sh(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 1800, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])} … exited {proc.returncode}:\n"
                         f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def ensure_collection() -> dict[str, str]:
    """The environment under which ``ansible-playbook`` finds ``community.postgresql`` (see
    the module docstring)."""
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "False",
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable}
    listed = _sh(["ansible-galaxy", "collection", "list", "community.postgresql"], check=False)
    if "community.postgresql" in listed.stdout:
        return env
    marker = COLLECTIONS / "ansible_collections" / "community" / "postgresql" / "MANIFEST.json"
    if not marker.is_file():
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        found = sorted(wheels.glob("ansible-12.*.whl"))
        if not found:
            _sh([sys.executable, "-m", "pip", "download", "--no-deps", "ansible>=12,<13",
                 "-d", str(wheels)], timeout=900)
            found = sorted(wheels.glob("ansible-12.*.whl"))
        with zipfile.ZipFile(found[-1]) as zf:
            zf.extractall(COLLECTIONS, members=[
                n for n in zf.namelist()
                if n.startswith("ansible_collections/community/postgresql/")])
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS)
    return env


def _stack(roles: list[str]) -> str:
    return (
        "from tectum.postgresql import Grant, Role\n"
        f"for name in {roles!r}:\n"
        "    r = Role(name, name=name, login=True)\n"
        "    Grant(name + '_connect', role=r.name, database='bench_db',\n"
        "          object_type='database', privileges=['CONNECT'])\n"
        "    Grant(name + '_tables', role=r.name, database='bench_db', schema='public',\n"
        "          object_type='table', privileges=['SELECT'])\n")


def _playbook(roles: list[str], port: int) -> str:
    login = {"login_host": "127.0.0.1", "login_port": port, "login_user": "postgres"}
    tasks = [
        {"name": "roles", "community.postgresql.postgresql_user": {
            **login, "db": "postgres", "name": "{{ item }}", "role_attr_flags": "LOGIN"},
         "loop": roles},
        {"name": "connect", "community.postgresql.postgresql_privs": {
            **login, "db": "bench_db", "type": "database", "objs": "bench_db",
            "privs": "CONNECT", "roles": ",".join(roles)}},
        {"name": "tables", "community.postgresql.postgresql_privs": {
            **login, "db": "bench_db", "type": "table", "schema": "public",
            "objs": "ALL_IN_SCHEMA", "privs": "SELECT", "roles": ",".join(roles)}},
    ]
    return json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False,
                        "tasks": tasks}], indent=1)


def _timed(argv: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    started = time.monotonic()
    proc = _sh(argv, env=env, cwd=cwd)
    return time.monotonic() - started, proc.stdout + proc.stderr


def run(report: Callable[[str], None], roles_n: int = 200, repeat: int = 5,
        ansible_repeat: int = 2) -> None:
    """Set up, time both tools, report medians and the ratio (see the module docstring)."""
    cluster = Cluster(_pg_bindir())
    work = Path(tempfile.mkdtemp(prefix="tectum-bench-pg-"))
    try:
        cluster.start()
        import psycopg

        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_db")
        with psycopg.connect(cluster.dsn.replace("dbname=tectum_test", "dbname=bench_db"),
                             autocommit=True) as conn:
            for i in range(5):
                conn.execute(f"CREATE TABLE t{i} (id int)")
        roles = [f"bench_r{i:03d}" for i in range(roles_n)]
        project = work / "proj"
        project.mkdir()
        (project / "stack.py").write_text(_stack(roles))
        (project / "tectum.toml").write_text(
            f'[providers.postgresql]\nhost = "127.0.0.1"\nport = {cluster.port}\n'
            'username = "postgres"\ndatabase = "postgres"\nsslmode = "disable"\n')
        env = {**os.environ, "NO_COLOR": "1"}
        tectum = [sys.executable, "-m", "tectum"]
        _sh([*tectum, "apply", "-auto-approve"], env=env, cwd=project)
        plans, applies = [], []
        for _ in range(repeat):
            took, out = _timed([*tectum, "plan"], env, project)
            if "No changes" not in out:
                raise BenchError(f"the no-op plan has changes:\n{out[-2000:]}")
            plans.append(took)
            took, out = _timed([*tectum, "apply", "-auto-approve"], env, project)
            applies.append(took)
        resources = 3 * roles_n
        report(f"postgresql: {roles_n} roles + {2 * roles_n} grants ({resources} resources)")
        report(f"  tectum plan (no-op)   median {statistics.median(plans):.2f} s  "
               f"(min {min(plans):.2f}, {repeat} runs)")
        report(f"  tectum apply (no-op)  median {statistics.median(applies):.2f} s  "
               f"(min {min(applies):.2f})")
        try:
            aenv = ensure_collection()
        except BenchError as exc:
            report(f"  ansible: community.postgresql unavailable ({exc}); tectum alone")
            return
        book = work / "site.json"
        book.write_text(_playbook(roles, cluster.port))
        argv = ["ansible-playbook", "-i", "localhost,", str(book)]
        _sh(argv, env=aenv, cwd=work)  # (settles anything the modules see otherwise)
        runs, changed = [], []
        for _ in range(ansible_repeat):
            took, out = _timed(argv, aenv, work)
            runs.append(took)
            changed.append(out.split("changed=")[-1].split()[0] if "changed=" in out else "?")
        a, t = statistics.median(runs), statistics.median(applies)
        report(f"  ansible-playbook      median {a:.2f} s  (min {min(runs):.2f}, "
               f"{ansible_repeat} runs; changed={','.join(changed)})")
        report(f"  ratio ansible / tectum apply = {a / t:.1f}x; "
               f"ansible / tectum plan = {a / statistics.median(plans):.1f}x")
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--roles", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ansible-repeat", type=int, default=2)
    args = ap.parse_args(argv)
    run(print, args.roles, args.repeat, args.ansible_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
