"""Benchmark: the aws, postgresql and etcd providers side by side with their peers, in one run
(issue 14). Runs each family's benchmark in turn and prints their figures together:

* ``bench/providers_aws.py`` — a no-op of about 25 AWS resources against one moto server:
  tectum vs Ansible's ``amazon.aws`` modules; API calls per type counted through a proxy;
* ``bench/providers_postgresql.py`` — 200 PostgreSQL roles and their grants, no-op: tectum vs
  Ansible's ``community.postgresql``;
* ``bench/providers_etcd.py`` — 1,000 etcd keys, no-op plan: the time of its read (one round
  trip of 8 transactions).

Each family's module documents its setup (servers it starts, collections it installs, its
phases); each can also run alone. Run as root from the checkout: ``python3 bench/providers.py``
(``--only aws,postgresql,etcd`` picks families). Figures are one run's; the machine is shared,
so compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

FAMILIES = ("aws", "postgresql", "etcd")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(FAMILIES),
                        help="families to run, comma-separated (default: all)")
    args = parser.parse_args()
    lines: list[str] = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent))
    failed = False
    for family in [f.strip() for f in args.only.split(",") if f.strip()]:
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r} (one of {', '.join(FAMILIES)})")
        spec = importlib.util.spec_from_file_location(f"providers_{family}",
                                                      here / f"providers_{family}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        report(f"== {family}")
        started = time.monotonic()
        try:
            module.run(report)
        except Exception as exc:  # noqa: BLE001 - one family failing still reports the others
            failed = True
            report(f"{family}: FAILED: {type(exc).__name__}: {exc}")
        report(f"({family}: {time.monotonic() - started:.0f} s)")
    print("\n== summary")
    for line in lines:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
