"""kill -9 trials: ``tectum apply`` (or ``destroy``) SIGKILLs itself just before or just after
its N-th changing call to PostgreSQL (a transaction: a CREATE, a RENAME, a REVOKE + GRANT,
a DROP), the next run finishes the job, and then nothing is left that state does not know
(0 unreported orphans): the roles and databases named with the test's prefix are exactly the
configured ones, state lists every resource, and a plan shows no change.

The trials cycle through three runs over the same six resources (two roles, a database, a
schema, a database grant and a schema grant): creating them all, changing them all (a new
``n``: connection limits, the schema's owner, the grants' privileges) and destroying them
all — 36 kill points in all, each interrupted run followed by the run that recovers."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ok, run_tectum
from tests.providers.postgresql.conftest import Pg, hooked

pytestmark = pytest.mark.slow

STACK = '''
from tectum import var
from tectum.postgresql import Database, Grant, Role, Schema
n = var("n", int)
P = "{prefix}"
owner = Role("owner", name=P + "own", login=True, connection_limit=n)
reader = Role("reader", name=P + "rd", connection_limit=n + 1)
db = Database("db", name=P + "db", owner=owner.name, connection_limit=n + 2)
sch = Schema("sch", name="s", database=db.name, owner=owner.name if n % 2 else reader.name)
Grant("conn", role=reader.name, database=db.name, object_type="database",
      privileges=["CONNECT"] if n % 2 else ["CONNECT", "TEMPORARY"])
Grant("usage", role=reader.name, database=db.name, schema=sch.name, object_type="schema",
      privileges=["USAGE"] if n % 2 else ["USAGE", "CREATE"])
'''

#: (run, changing calls it makes): kill points 1..N, before and after each
RUNS = {"create": 6, "change": 6, "destroy": 6}


def _trials() -> list[tuple[str, int, str]]:
    out: list[tuple[str, int, str]] = []
    points = {run: itertools.cycle([(n, w) for n in range(1, calls + 1)
                                    for w in ("before", "after")])
              for run, calls in RUNS.items()}
    while len(out) < 36:
        for run in ("create", "change", "destroy"):
            n, when = next(points[run])
            out.append((run, n, when))
    return out


def test_kill_9_at_36_points_leaves_no_orphan(project: Callable[..., Path], pg: Pg,
                                              prefix: str) -> None:
    root = project(STACK.format(prefix=prefix))
    n = 0

    def env() -> dict[str, str]:
        return {"TECTUM_VAR_n": str(n)}

    def converged(present: bool) -> None:
        if present:
            plan = run_tectum("plan", "-detailed-exitcode", cwd=root, env=env())
            assert plan.returncode == 0, plan.output
        state = ok(run_tectum("state", "list", cwd=root, env=env())).stdout.split()
        if present:
            assert len(state) == 6, state
            assert pg.roles(prefix) == sorted([f"{prefix}own", f"{prefix}rd"])
            assert pg.databases(prefix) == [f"{prefix}db"]
            assert pg.rows("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s",
                           [f"{prefix}rd"]) == [(n + 1,)]
            owner = pg.rows("SELECT pg_get_userbyid(nspowner) FROM pg_namespace "
                            "WHERE nspname = 's'", db=f"{prefix}db")
            assert owner == [(f"{prefix}own" if n % 2 else f"{prefix}rd",)]
        else:
            assert state == [], state
            assert pg.roles(prefix) == [] and pg.databases(prefix) == []

    kills = 0
    for run, nth, when in _trials():
        if run == "change":
            n += 1
        args = ("destroy", "-auto-approve") if run == "destroy" else ("apply", "-auto-approve")
        killed = hooked(root, "kill", when, nth, *args, env=env())
        assert killed.returncode == -9, f"{run} not killed at {when} {nth}:\n{killed.output}"
        kills += 1
        again = run_tectum(*args, cwd=root, env=env())
        assert again.returncode == 0, f"after {run} killed {when} call {nth}:\n{again.output}"
        converged(present=run != "destroy")
    assert kills >= 30
