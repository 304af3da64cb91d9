"""Benchmark: the etcd provider — a no-op plan of 1,000 etcd keys (issue 14: "under 0.3 s of
reading, one range read").

Setup (untimed): an etcd server of the benchmark's own (``/usr/bin/etcd``, Debian's
``etcd-server``; ``tests.harness.etcd.running_etcd``: free 127.0.0.1 ports, a temporary data
directory, stopped at the end), and a project of 1,000 ``etcd_key`` resources
(``/bench/svcNN/kNNNN``, 20 directories of 50 keys, ~30-byte values) applied once.

Phases:

* ``read`` — the refresh of the plan as the engine runs it for that target:
  ``EtcdProvider.begin_read`` (which fetches every key in one transaction), ``KeyType.read``
  of the 1,000 ``(desired, prior)`` items and ``end_read``, on a connected client, timed in
  process (``--repeat`` runs, default 7; min and median); the client's counters show it is
  **one** round trip: 8 transactions of at most 128 exact-key reads, sent together;
* ``plan`` — the whole ``python3 -m tectum plan`` process (start-up, stack evaluation, state,
  read, diff, output), wall time, with "No changes" checked.

Peer: Ansible's ``community.general.etcd3`` module needs the ``etcd3`` Python package on the
controller, which no longer imports with current protobuf (why tectum uses ``aetcd``); it is
not installed here, so no Ansible figure is given (the run says so).

Run alone as root from the checkout: ``python3 bench/providers_etcd.py [--keys N]
[--repeat N]``; ``bench/providers.py`` runs it with the other families.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.etcd import running_etcd  # noqa: E402

#: the issue's bound on the read of a 1,000-key no-op plan
READ_BUDGET = 0.3


def _stack(keys: int) -> str:
    return f'''
from tectum.etcd import Key
for i in range({keys}):
    Key(f"k{{i:04d}}", key=f"/bench/svc{{i % 20:02d}}/k{{i:04d}}",
        value=f"value-{{i:04d}}-0123456789abcdef")
'''


def _tectum(args: Sequence[str], cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tectum", *args], cwd=cwd,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False, timeout=900)
    took = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"tectum {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return took, proc.stdout + proc.stderr


def _read_times(root: Path, endpoint: str, repeat: int
                ) -> tuple[list[float], int, int, int]:
    """The refresh of every key, in process, as the planner calls it: per run the seconds,
    plus the round trips and transactions of one run and the keys found."""
    from tectum.engine.session import Session
    from tectum.providers.base import ReadItem
    from tectum.providers.etcd.client import EtcdClient
    from tectum.providers.etcd.provider import EtcdProvider
    from tectum.providers.registry import registry

    rt = registry.get("etcd_key")
    assert rt is not None
    session = Session(str(root))  # (state as the plan reads it)
    try:
        state = session.read_state()
    finally:
        session.close()
    items = [ReadItem({"key": r.attributes["key"], "value": r.attributes["value"],
                       "lease_ttl": None}, dict(r.attributes))
             for r in state.resources.values()]
    client = EtcdClient([endpoint])
    provider = EtcdProvider()
    try:
        client.status()  # connected: the timing is of the read alone
        times: list[float] = []
        trips = found = txns = 0
        for _ in range(repeat):
            before, sent = client.round_trips, client.transactions
            started = time.perf_counter()
            provider.begin_read(client, [(rt, items)])
            try:
                got = rt.read(client, items)
            finally:
                provider.end_read(client)
            times.append(time.perf_counter() - started)
            trips = client.round_trips - before
            txns = client.transactions - sent
            found = sum(1 for g in got if g is not None)
    finally:
        client.close()
    return times, trips, txns, found


def run(report: Callable[[str], None], keys: int = 1000, repeat: int = 7) -> None:
    with tempfile.TemporaryDirectory(prefix="tectum-bench-etcd-") as tmp:
        tmpdir = Path(tmp)
        with running_etcd(tmpdir) as server:
            root = tmpdir / "proj"
            root.mkdir()
            (root / "stack.py").write_text(_stack(keys))
            (root / "tectum.toml").write_text(server.toml())
            took, _ = _tectum(["apply", "-auto-approve"], root)
            report(f"etcd: setup: applied {keys} keys in {took:.2f} s")
            times, trips, txns, found = _read_times(root, server.endpoint, repeat)
            assert found == keys, f"the read found {found} of {keys} keys"
            best, median = min(times), statistics.median(times)
            verdict = "within" if median < READ_BUDGET else "OVER"
            report(f"etcd: read of {keys} keys (no-op plan's refresh): min {best * 1000:.0f} ms,"
                   f" median {median * 1000:.0f} ms over {repeat} runs, {trips} round trip(s) of"
                   f" {txns} transaction(s)"
                   f" — {verdict} the {READ_BUDGET:g} s budget")
            plans: list[float] = []
            for _ in range(max(3, repeat // 2)):
                took, out = _tectum(["plan"], root)
                assert "No changes" in out, out
                plans.append(took)
            report(f"etcd: whole `tectum plan` of {keys} keys (no changes): min "
                   f"{min(plans):.2f} s, median {statistics.median(plans):.2f} s (process "
                   "wall time: start-up, stack, state, read, diff)")
            report("etcd: Ansible peer (community.general.etcd3): not run — it needs the "
                   "etcd3 Python package, which does not import with current protobuf")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    run(print, keys=args.keys, repeat=args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
