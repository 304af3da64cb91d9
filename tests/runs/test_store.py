"""Run reports in their stores — SQLite (``.tectum/runs.db``) and the real PostgreSQL state
database — and the spool that keeps them while the store is down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tectum.diagnostics import DiagnosticError
from tectum.masking import REDACTOR
from tectum.runs import (
    PostgresRunStore,
    RunReport,
    RunStore,
    Spool,
    SQLiteRunStore,
    masked,
    unreported,
)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunStore]:
    made: RunStore
    if request.param == "sqlite":
        made = SQLiteRunStore(str(tmp_path / ".tectum" / "runs.db"))
    else:
        made = PostgresRunStore(request.getfixturevalue("pg_dsn"))
    try:
        yield made
    finally:
        made.close()


def report(host: str, at: float, status: str = "unchanged", **kw: object) -> RunReport:
    return RunReport(workspace="default", host=host, mode="remediate", status=status,
                     started_at=at, duration=1.5, interval=10.0, **kw)  # type: ignore[arg-type]


def test_put_get_list_latest(store: RunStore) -> None:
    now = time.time()
    a1 = report("a", now - 100, corrective=2, drift=("file.x",), errors=())
    a2 = report("a", now - 50, status="failed", errors=("plan failed",))
    b1 = report("b", now - 70, status="drift-found", drifted=3)
    for r in (a1, a2, b1):
        store.put(r)
    assert store.get(a1.id) == a1
    assert store.get(a2.id[:10]) == a2
    assert store.get("f" * 32 + "x") is None
    assert [r.id for r in store.recent()] == [a2.id, b1.id, a1.id]
    assert [r.id for r in store.recent(host="a")] == [a2.id, a1.id]
    assert [r.id for r in store.recent(status="drift-found")] == [b1.id]
    assert [r.id for r in store.recent(limit=1)] == [a2.id]
    assert [r.id for r in store.latest()] == [a2.id, b1.id]
    # a report stored again (an approval) replaces the first
    store.put(a2.with_(status="approved", approved_by="me@here"))
    got = store.get(a2.id)
    assert got is not None and got.status == "approved" and got.approved_by == "me@here"


def test_an_ambiguous_prefix_is_a_diagnostic(store: RunStore) -> None:
    now = time.time()
    store.put(report("a", now).with_(id="abc1" + "0" * 28))
    store.put(report("a", now + 1).with_(id="abc2" + "0" * 28))
    with pytest.raises(DiagnosticError, match="Ambiguous run id"):
        store.get("abc")


def test_unreported_after_twice_the_interval() -> None:
    now = 1_000_000.0
    fresh = report("a", now - 15)          # finished 13.5 s ago: within 2 × 10 s
    stale = report("b", now - 40)          # finished 38.5 s ago
    manual = report("c", now - 4000).with_(interval=None)
    assert unreported([fresh, stale, manual], now) == [stale]


def test_masked_hides_secrets_in_errors() -> None:
    REDACTOR.add("s3cr3t-canary-value")
    got = masked(report("a", 0, status="failed",
                        errors=("login as app:s3cr3t-canary-value failed",)))
    assert "s3cr3t-canary-value" not in got.errors[0]


def test_spool_keeps_reports_until_the_store_answers(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"))
    first, second = report("a", 100.0), report("a", 200.0)
    spool.add(second)
    spool.add(first)
    (tmp_path / "spool" / "junk.json").write_text("{not json")
    down = PostgresRunStore("host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2")
    with pytest.raises(DiagnosticError, match="Cannot reach the run reports"):
        spool.flush(down)
    assert len(spool.waiting()) == 3  # (nothing sent, nothing lost)
    up = SQLiteRunStore(str(tmp_path / "runs.db"))
    assert spool.flush(up) == 2
    assert spool.waiting() == []
    assert [r.id for r in up.recent()] == [second.id, first.id]
    assert (tmp_path / "spool" / "junk.json.bad").exists()
    up.close()


def test_a_damaged_row_is_left_out(tmp_path: Path) -> None:
    store = SQLiteRunStore(str(tmp_path / "runs.db"))
    store.put(report("a", 1.0))
    store._conn().execute("INSERT INTO runs VALUES ('x', 'default', 'h', 'apply', 'failed', "
                          "2.0, 3.0, NULL, '{broken')")
    assert [r.host for r in store.recent()] == ["a"]
    store.close()
