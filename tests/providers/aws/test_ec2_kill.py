"""kill -9 trials over the EC2 types: ``tectum apply`` (or ``destroy``) SIGKILLs itself just
before or just after its N-th mutating AWS call — between "created" and "recorded" among
others — then the next run finishes the job, and moto is compared with state: every object
moto holds is in state (0 orphans), a plan shows no changes, and a destroy leaves nothing.

33 kill points: the first apply (each of its 11 mutating calls, after; 7 of them before),
an update of both instances (type and tags: 6 points), a destroy (6 points), and a first
apply killed then destroyed instead of finished (3 points: what it made is found by the
client tokens its journal intents hold). The trials
run in parallel, each on a project of its own (its own workspace stack id) with a VPC CIDR of
its own on one moto server, so each trial's objects are told apart by their VPC."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tectum.backends.sqlite import SQLiteBackend
from tests.conftest import Result, tectum_env
from tests.harness.moto import REGION, Moto
from tests.providers.aws.helpers import STACK, an_ami, ec2

pytestmark = [pytest.mark.slow, pytest.mark.aws]

#: ``python KILLER WHEN N COMMAND PROJECT [ARGS]``: ``tectum COMMAND -auto-approve ARGS
#: PROJECT`` that kills itself (SIGKILL) just before / after its N-th mutating AWS call
KILLER = """\
import os, signal, sys
import botocore.client
when, nth, command, project = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
seen = [0]
real = botocore.client.BaseClient._make_api_call
def call(self, operation, params):
    if operation.startswith(("Describe", "Get", "List", "Head")):
        return real(self, operation, params)
    seen[0] += 1
    if seen[0] != nth:
        return real(self, operation, params)
    if when == "after":
        real(self, operation, params)
    os.kill(os.getpid(), signal.SIGKILL)
botocore.client.BaseClient._make_api_call = call
from tectum.cli.main import main
sys.argv = ["tectum", command, "-auto-approve", *sys.argv[5:], project]
main()
"""

#: (phase, before/after, which mutating call): 33 points
POINTS = ([("first", "after", n) for n in range(1, 12)]
          + [("first", "before", n) for n in (1, 3, 5, 7, 9, 10, 11)]
          + [("change", "after", n) for n in (1, 2, 3, 4, 6, 8)]
          + [("destroy", "after", n) for n in (1, 2, 4, 5, 7, 9)]
          # a killed first apply, then destroy: the journal's client tokens find what it made
          + [("abandon", "after", n) for n in (1, 5, 10)])

CHANGE = ("-var", "env=two", "-var", "kind=t3.small")


def stack(ami: str, k: int) -> str:
    return (STACK.replace('env = var("env", str, default="one")',
                          'env = var("env", str, default="one")\n'
                          'kind = var("kind", str, default="t3.micro")')
            .replace('instance_type="t3.micro"', "instance_type=kind")
            .replace('"10.0.0.0/16"', f'"10.{k}.0.0/16"')
            .replace('f"10.0.{i}.0/24"', f'f"10.{k}.{{i}}.0/24"').replace("AMI", ami))


def held(moto: Moto, cidr: str) -> set[str]:
    """Every object in the VPCs of ``cidr`` (with the VPCs), but AWS's defaults."""
    e = ec2(moto)
    vpcs = [v["VpcId"] for v in e.describe_vpcs(Filters=[{"Name": "cidr", "Values": [cidr]}])
            ["Vpcs"]]
    if not vpcs:
        return set()
    flt = [{"Name": "vpc-id", "Values": vpcs}]
    subnets = {s["SubnetId"] for s in e.describe_subnets(Filters=flt)["Subnets"]}
    groups = {g["GroupId"] for g in e.describe_security_groups(Filters=flt)["SecurityGroups"]
              if g["GroupName"] != "default"}
    rules = {r["SecurityGroupRuleId"] for r in e.describe_security_group_rules(
        Filters=[{"Name": "group-id", "Values": sorted(groups)}])["SecurityGroupRules"]
        } if groups else set()
    instances = {i["InstanceId"] for r in e.describe_instances(Filters=[
        {"Name": "vpc-id", "Values": vpcs},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping",
                                                   "stopped"]}])["Reservations"]
        for i in r["Instances"]}
    return set(vpcs) | subnets | groups | rules | instances


class Trial:
    def __init__(self, moto: Moto, root: Path, k: int, point: tuple[str, str, int]) -> None:
        self.moto, self.root, self.point = moto, root, point
        self.cidr = f"10.{k}.0.0/16"
        self.env = tectum_env({key: v for key, v in moto.env().items()
                               if key != "AWS_ENDPOINT_URL"})
        self.log: list[str] = []

    def tectum(self, *args: str) -> Result:
        proc = subprocess.run([sys.executable, "-m", "tectum", *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, check=False)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        self.log.append(f"$ tectum {' '.join(args)} -> {proc.returncode}\n{result.output}")
        return result

    def must(self, *args: str) -> Result:
        result = self.tectum(*args)
        if result.returncode != 0:
            raise AssertionError(f"tectum {' '.join(args)} failed")
        return result

    def killed(self, when: str, nth: int, command: str, *args: str) -> int:
        killer = self.root / "killer.py"
        killer.write_text(KILLER)
        proc = subprocess.run([sys.executable, str(killer), when, str(nth), command,
                               str(self.root), *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL, check=False)
        killer.unlink()
        self.log.append(f"$ killed {command} {when} #{nth} -> {proc.returncode}\n"
                        f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return proc.returncode

    def in_state(self) -> set[str]:
        """The ids state records (read with the project's own backend, in this process)."""
        backend = SQLiteBackend(str(self.root / ".tectum" / "state.db"), "default")
        try:
            records = backend.read().resources.values()
        finally:
            backend.close()
        return {str(r.attributes["id"]) for r in records if r.attributes.get("id")}

    def run(self) -> str | None:
        """The trial; returns what went wrong, or None."""
        phase, when, nth = self.point
        try:
            args: tuple[str, ...] = ()
            if phase in ("change", "destroy"):
                self.must("apply", "-auto-approve")
            if phase == "change":
                args = CHANGE
            command = "destroy" if phase == "destroy" else "apply"
            rc = self.killed(when, nth, command, *args)
            if rc != -9:
                return f"not killed (exit {rc})"
            if phase in ("destroy", "abandon"):
                self.must("destroy", "-auto-approve")
                left = held(self.moto, self.cidr)
                return f"left after destroy: {sorted(left)}" if left else None
            self.must("apply", "-auto-approve", *args)
            plan = self.must("plan", *args)
            if "No changes" not in plan.output:
                return "the plan after the recovery is not empty"
            orphans = held(self.moto, self.cidr) - self.in_state()
            if orphans:
                return f"orphans: {sorted(orphans)}"
            return None
        except AssertionError as exc:
            return str(exc)

    def report(self, problem: str) -> str:
        return f"{self.point}: {problem}\n" + "\n".join(self.log)[-6000:]


def test_kill_9_at_33_points_leaves_no_orphan(tmp_path: Path, moto: Moto) -> None:
    ami = an_ami(moto)
    trials = []
    for k, point in enumerate(POINTS, start=1):
        root = tmp_path / f"t{k}"
        root.mkdir()
        (root / "stack.py").write_text(stack(ami, k))
        (root / "tectum.toml").write_text(
            f'[providers.aws]\nregion = "{REGION}"\nendpoint_url = "{moto.url}"\n')
        trials.append(Trial(moto, root, k, point))
    with ThreadPoolExecutor(max_workers=6) as pool:
        problems: list[Any] = list(pool.map(Trial.run, trials))
    failed = [t.report(p) for t, p in zip(trials, problems, strict=True) if p is not None]
    assert not failed, "\n\n".join(failed)
    # (what the trials made goes with the moto fixture's reset)
