"""Benchmark: tectum's podman provider, ``podman build`` and Ansible's containers.podman collection
on the same podman storage, side by side in one run (issue 13).

Everything runs against one podman storage of the benchmark's own
(``tests.harness.images.PodmanStore``: ``--root``/``--runroot``/``--tmpdir`` in a temporary
directory, runc, cgroupfs, explicit ulimits; removed at the end, with every container and image
in it), with the test fleet's Debian bookworm root filesystem tarball as the base (no
registry: nothing is pulled). tectum runs as ``python3 -m tectum apply --auto-approve DIR`` in
a temporary project whose ``tectum.toml`` holds the store's ``[providers.podman]`` settings; the
peers reach the same storage through a wrapper script ``podman`` that adds the same global
options (``--root --runroot --tmpdir --runtime runc --cgroup-manager cgroupfs``).

Workloads and phases, each timed as the wall time of the whole tool process (and its CPU time,
from ``wait4``):

1. **containers** — N containers per tool (``--containers``, default 20), tectum's
   ``bench-ctr-tectum-00`` … and Ansible's ``bench-ctr-ansible-00`` …, all alike: the base
   image (by id), command ``sleep infinity``, env ``BENCH_INDEX=i`` and ``BENCH_ROLE=worker``,
   network ``none``, ulimits ``nofile=1024:20000`` and ``nproc=4096:4096``, restart policy
   ``no``, label ``tectum.managed=true`` (tectum's own label, declared by Ansible too),
   running. Both sets exist side by side during the no-op rounds (the same podman storage
   holding 2N containers for both tools' reads).

   * tectum: ``podman_container`` resources (``Container(...)``) in a generated ``stack.py``;
     its read is one ``podman container inspect`` of all of them and one ``podman image
     inspect``.
   * Ansible: ``bench/containers/containers.yml``: one ``containers.podman.podman_container``
     task looping over its containers on ``localhost`` (local connection, no facts), with the
     wrapper as ``executable``.

   Why one set per tool rather than both tools keeping the same containers: Ansible's module
   compares against the container's ``CreateCommand``; tectum passes the environment as
   ``--env NAME`` with the value in podman's own environment (never on a command line), so to
   Ansible a container tectum made has no ``env`` values — it recreates it. Each tool's no-op
   therefore runs over the containers that tool made; that both sets are the same containers
   is checked from ``podman container inspect`` (below).

   Phases: ``ctr-first`` — first apply, the tool's containers removed (and tectum's state)
   before every run (``--first-repeat``, default 3; informational); ``ctr-noop`` — the same
   apply again with nothing to change (``--repeat``, default 5).

2. **bake** — an image of 100 files (``--files``; ``/srv/bench/fNNN.txt``, mode 0644, ~280
   bytes of distinct content each, in directory ``/srv/bench`` 0755) and 1 package (``tree``:
   not in the base, no dependencies beyond libc). The base has no apt package lists (the
   harness removes them), so every tool runs ``apt-get update`` then installs the package over
   the build container's host network (the machine's own mirror, which the fleet's rootfs was
   written with; checked once in the setup).

   * tectum: a ``podman_image`` (``Image(..., base_tarball=TARBALL, role=bench_role,
     keep=2)``) whose role declares a ``Directory``, the ``File`` resources and
     ``Package("tree", update_cache=True)``; build network ``host`` (its default).
   * ``podman build`` (``bench/containers/Containerfile``): ``FROM`` the base tectum imported
     from the same tarball (by id), ``COPY files/ /srv/bench/``, ``RUN apt-get update &&
     apt-get install -y tree``; ``--layers=false`` (one commit at the end, as tectum makes, and
     no layer cache to hit), ``--network host``, the same ulimits, ``--format oci``.
   * Ansible (``bench/containers/bake.yml``): ``podman run -d`` a build container (network
     host), then over its podman connection (``ansible_connection=containers.podman.podman``)
     ``file`` the directory, ``copy`` the files in a loop, ``apt`` (``update_cache``), then
     ``podman commit``. Ansible's modules need Python in the target, so its build container
     starts from the base + ``python3`` + ``python3-apt`` (made once, untimed, apt lists removed
     again): its prerequisites are not timed.

   Every repetition is a real rebuild: the files' content carries the repetition (``rev``), so
   tectum's role hash and tag change and the ``COPY`` differs; and the peers' images of the
   previous repetition are removed (untimed) before the next, so nothing is reused. The first
   untimed ``warm`` bake by tectum imports the base tarball (``podman import``, once per
   digest), which the other tools then build on. Phase ``bake`` (``--bake-repeat``, default 3).

3. **rebake** — tectum's apply of the same bake project again with the role unchanged
   (``--repeat``): no build at all. Its wall time is reported (target under 1 s), and its
   ``TECTUM_COMMAND_LOG`` must show no mutating podman call.

Profile (``--profile``): after the bake rounds, one more tectum bake (not in the figures) with
``[providers.podman] podman`` pointed at a wrapper that logs each podman process's start, end and
arguments; the report lists the podman processes by kind (``exec`` split into file writes, the
reads back after them, apt-get) with their summed time, and the rest of the wall time as tectum's
own. The bake runs its steps one after the other, so the sums add up to the wall time.

Order: interleaved — within each phase the tools run round-robin (tectum, peers, then again),
so a noisy period of the shared machine falls on every tool alike. For each phase and tool the
report gives the median wall time, the spread (min–max) and the ratio peer median / tectum
median (how many times faster tectum is), with the range of the per-round ratios (peer's run k /
tectum's run k). Fewer than 3 repetitions are accepted (quick checks) with a warning.

Checks (untimed, every run): after every containers run, every container runs with exactly the
desired image id, command, env, network, ulimits, restart policy and labels (from one
``podman container inspect``); after every no-op run, no container's id or start time changed;
tectum's no-op runs logged no mutating podman call; Ansible's no-op recap says ``changed=0``.
After every bake, the image made (by each tool) is run once (``--network none``): SHA-256 and
mode of every file, the directory's mode and ``dpkg-query`` status of the package must be the
desired ones — the same end state for every tool.

Targets (issue 13): containers no-op ≥ 10× faster than Ansible; bake ≤ 1.5× ``podman build``'s
time and ≥ 5× faster than Ansible; no-op rebake under 1 s with no mutating podman call.

Usage (as root)::

    python3 bench/containers.py [--containers 20] [--files 100] [--repeat 5]
                                [--first-repeat 3] [--bake-repeat 3]
                                [--tools tectum,podman-build,ansible] [--phases containers,bake]
                                [--profile] [--json results.json] [--keep-logs DIR]

Ansible: ``ansible-playbook`` of the ansible-core beside this Python (``containers.podman``
must be there: when ``ansible-galaxy collection list`` lacks it, the collection is taken from
the ``ansible`` package on PyPI — ``pip download ansible<13`` (the release for ansible-core
2.19), only ``ansible_collections/containers/podman`` extracted into
``/var/cache/tectum-bench/collections`` — and found through ``ANSIBLE_COLLECTIONS_PATH``).

Exit status: 0 when every run succeeded, every check held and every target was met, else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness.images import PodmanStore, base_tarball  # noqa: E402

PEERS_DIR = REPO / "bench" / "containers"
CACHE = Path("/var/cache/tectum-bench")
COLLECTIONS = CACHE / "collections"
PACKAGE = "tree"
ULIMITS = {"nofile": "1024:20000", "nproc": "4096:4096"}
CTR_PREFIX = "bench-ctr-"
TECTUM_IMAGE = "localhost/bench-tectum"
BUILD_IMAGE = "localhost/bench-build"
ANSIBLE_IMAGE = "localhost/bench-ansible"
ANSIBLE_BASE = "localhost/bench-ansible-base:python3"
MANAGED_LABEL = "tectum.managed"
BAKE_DIR = "/srv/bench"
TARGETS = {"ctr-noop/ansible": 10.0, "bake/ansible": 5.0}
#: tectum's bake may take at most this many times podman build's
BUILD_FACTOR = 1.5
REBAKE_LIMIT = 1.0


class BenchError(Exception):
    """A run failed or a check did not hold."""


@dataclass
class Run:
    """One timed run: wall and CPU seconds, and for tectum its podman calls."""

    tool: str
    phase: str
    rep: int
    wall: float
    cpu: float
    podman_calls: int = 0
    #: entries of TECTUM_COMMAND_LOG (podman calls and the connector's operations in a
    #: container), and how many of them changed something
    logged: int = 0
    mutating: int = 0


@dataclass
class Results:
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def walls(self, phase: str, tool: str) -> list[float]:
        return [r.wall for r in self.runs if r.phase == phase and r.tool == tool]

    def by_rep(self, phase: str, tool: str) -> dict[int, float]:
        return {r.rep: r.wall for r in self.runs if r.phase == phase and r.tool == tool}


# ------------------------------------------------------------------------------- utilities

def _sh(argv: Sequence[str], *, check: bool = True, timeout: float = 900,
        env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:6])} … exited {proc.returncode}:\n"
                         f"{(proc.stderr or proc.stdout)[-2000:]}")
    return proc


def ensure_collection() -> dict[str, str]:
    """The environment under which ``ansible-playbook`` finds ``containers.podman``: as
    installed, else extracted from the ``ansible`` package of PyPI (see the docstring)."""
    env = {**os.environ}
    listed = _sh(["ansible-galaxy", "collection", "list", "containers.podman"], check=False)
    if "containers.podman" in listed.stdout:
        return env
    env["ANSIBLE_COLLECTIONS_PATH"] = str(COLLECTIONS)
    marker = COLLECTIONS / "ansible_collections" / "containers" / "podman" / "MANIFEST.json"
    if not marker.is_file():
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        _sh([sys.executable, "-m", "pip", "download", "--no-deps", "ansible>=12,<13", "-d",
             str(wheels)], timeout=900)
        wheel = sorted(wheels.glob("ansible-12.*.whl"))[-1]
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(COLLECTIONS, members=[
                n for n in zf.namelist()
                if n.startswith("ansible_collections/containers/podman/")])
    return env


def _ansible_recap(text: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+"
                         r"failed=(\d+)", text, re.M):
        out[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)),
                           "unreachable": int(m.group(4)), "failed": int(m.group(5))}
    return out


# ------------------------------------------------------------------------------- the bench

class Bench:
    """The store, the projects and the tools; every timed run goes through :meth:`timed`."""

    def __init__(self, args: argparse.Namespace, store: PodmanStore, work: Path) -> None:
        self.args = args
        self.store = store
        self.work = work
        self.tools: list[str] = args.tools.split(",")
        self.results = Results()
        self.logs = Path(args.keep_logs) if args.keep_logs else work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.wrapper = work / "podman"
        self.wrapper.write_text("#!/bin/sh\nexec podman "
                                + " ".join(f"'{a}'" for a in store.podman.global_args())
                                + ' "$@"\n')
        self.wrapper.chmod(0o755)
        self.ansible_env = ensure_collection() if "ansible" in self.tools else dict(os.environ)
        self.ansible_env.update({"ANSIBLE_RETRY_FILES_ENABLED": "0",
                                 "ANSIBLE_LOCALHOST_WARNING": "0",
                                 "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
                                 "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
                                 "ANSIBLE_NOCOLOR": "1"})
        self.base_id = ""
        self.tarball = str(base_tarball())

    # -- podman helpers --------------------------------------------------------------------
    def podman(self, args: Sequence[str], *, check: bool = True,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return _sh([str(self.wrapper), *args], check=check, timeout=timeout)

    def inspect(self, kind: str, names: Sequence[str]) -> list[dict[str, Any]]:
        if not names:
            return []
        proc = self.podman([kind, "inspect", "--format", "json", *names], check=False)
        data = json.loads(proc.stdout or "[]")
        return data if isinstance(data, list) else []

    # -- timing ----------------------------------------------------------------------------
    def timed(self, tool: str, phase: str, rep: int, argv: Sequence[str], env: dict[str, str],
              cwd: Path, label: str) -> tuple[Run, str]:
        log = self.logs / f"{phase}-{tool}-{label}.log"
        cmdlog = self.logs / f"{phase}-{tool}-{label}.commands.jsonl"
        env = dict(env)
        if tool == "tectum":
            cmdlog.unlink(missing_ok=True)
            env["TECTUM_COMMAND_LOG"] = str(cmdlog)
        with open(log, "wb") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, cwd=cwd)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        text = log.read_text(errors="replace")
        run = Run(tool, phase, rep, wall, usage.ru_utime + usage.ru_stime)
        if tool == "tectum" and cmdlog.is_file():
            entries = [json.loads(line) for line in cmdlog.read_text().splitlines() if line]
            run.podman_calls = sum(1 for e in entries if e.get("op") == "podman")
            run.logged = len(entries)
            run.mutating = sum(1 for e in entries if e.get("mutating"))
        if code != 0:
            raise BenchError(f"{tool} {phase} {label} exited {code} after {wall:.1f}s "
                             f"({log}):\n{text[-3000:]}")
        print(f"  {phase:<10} {tool:<13} {label:<8} {wall:7.2f} s  (cpu {run.cpu:.2f} s"
              + (f", podman calls {run.podman_calls}, logged ops {run.logged}, "
                 f"mutating {run.mutating})"
                 if tool == "tectum" else ")"), flush=True)
        return run, text

    def record(self, run: Run) -> None:
        self.results.runs.append(run)
        if self.args.json:
            Path(self.args.json).write_text(json.dumps(
                {"runs": [r.__dict__ for r in self.results.runs],
                 "notes": self.results.notes, "failures": self.results.failures}, indent=1))

    def tectum_argv(self, project: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "tectum", "apply", "--auto-approve", "--no-color",
                *extra, str(project)]

    def project(self, name: str, stack: str, workload: dict[str, Any]) -> Path:
        path = self.work / name
        path.mkdir(exist_ok=True)
        (path / "tectum.toml").write_text(f'[project]\nname = "{name}"\n\n' + self.store.toml())
        (path / "workload.json").write_text(json.dumps(workload, indent=1))
        (path / "stack.py").write_text(stack.replace("WORKLOAD", str(path / "workload.json")))
        return path

    def reset_state(self, project: Path) -> None:
        for sub in (".tectum", "terraform.tfstate", "state"):
            target = project / sub
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    # ================================================================ phase 1: containers
    def containers_workload(self, tool: str) -> dict[str, Any]:
        ctrs = []
        for i in range(self.args.containers):
            ctrs.append({"name": f"{CTR_PREFIX}{tool}-{i:02d}", "image": self.base_id,
                         "command": ["sleep", "infinity"],
                         "env": {"BENCH_INDEX": str(i), "BENCH_ROLE": "worker"},
                         "ulimits": ULIMITS,
                         "ulimit": [f"{k}={v}" for k, v in sorted(ULIMITS.items())],
                         "labels": {MANAGED_LABEL: "true"}})
        return {"containers": ctrs}

    def remove_containers(self, tool: str) -> None:
        names = [n for n in self.store.containers() if n.startswith(f"{CTR_PREFIX}{tool}-")]
        if names:
            self.podman(["rm", "-f", "-t", "0", *names])

    def check_containers(self, workload: dict[str, Any]) -> dict[str, tuple[str, str]]:
        """Every container exactly as desired (one ``podman container inspect``): image id,
        command, env, network, ulimits, restart policy, label, running. Returns name → (id,
        start time); raises :class:`BenchError` naming what differs."""
        want = {c["name"]: c for c in workload["containers"]}
        found = {str(d.get("Name", "")).lstrip("/"): d
                 for d in self.inspect("container", sorted(want))}
        problems = []
        out: dict[str, tuple[str, str]] = {}
        for name, c in want.items():
            d = found.get(name)
            if d is None:
                problems.append(f"{name}: missing")
                continue
            cfg, host, state = d.get("Config") or {}, d.get("HostConfig") or {}, \
                d.get("State") or {}
            env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
            limits = {u["Name"].removeprefix("RLIMIT_").lower(): f"{u['Soft']}:{u['Hard']}"
                      for u in host.get("Ulimits") or []}
            own_env = {k: v for k, v in env.items() if k.startswith("BENCH_")}
            got = {
                "image": d.get("Image"), "command": cfg.get("Cmd"), "env": own_env,
                "network": host.get("NetworkMode"),
                "ulimits": {k: limits.get(k) for k in ULIMITS},
                "restart": (host.get("RestartPolicy") or {}).get("Name") or "no",
                "label": (cfg.get("Labels") or {}).get(MANAGED_LABEL),
                "running": state.get("Running"),
            }
            expect = {"image": c["image"], "command": c["command"], "env": c["env"],
                      "network": "none", "ulimits": ULIMITS, "restart": "no", "label": "true",
                      "running": True}
            for key, value in expect.items():
                if got[key] != value:
                    problems.append(f"{name}: {key} is {got[key]!r}, not {value!r}")
            out[name] = (str(d.get("Id")), str(state.get("StartedAt")))
        if problems:
            raise BenchError("containers not as desired:\n  " + "\n  ".join(problems[:20]))
        return out

    def phase_containers(self) -> None:
        tools = [t for t in self.tools if t in ("tectum", "ansible")]
        stack = (
            "import json\n"
            "from tectum.podman import Container\n\n"
            "for c in json.load(open('WORKLOAD'))['containers']:\n"
            "    Container(c['name'], image=c['image'], command=c['command'], env=c['env'],\n"
            "              network='none', ulimits=c['ulimits'], restart_policy='no')\n")
        workloads = {t: self.containers_workload(t) for t in tools}
        project = self.project("containers", stack, workloads["tectum"])
        ansible_wl = project / "ansible-workload.json"
        ansible_wl.write_text(json.dumps(workloads.get("ansible", {}), indent=1))
        argv = {"tectum": self.tectum_argv(project),
                "ansible": ["ansible-playbook", "-i", "localhost,", str(PEERS_DIR /
                            "containers.yml"), "-e", f"workload={ansible_wl}", "-e",
                            f"podman={self.wrapper}"]}
        env = {"tectum": dict(os.environ), "ansible": self.ansible_env}
        print(f"\ncontainers: {self.args.containers} containers per tool, tools {tools}")
        for rep in range(self.args.first_repeat):
            for tool in tools:
                self.remove_containers(tool)
                if tool == "tectum":
                    self.reset_state(project)
                run, text = self.timed(tool, "ctr-first", rep, argv[tool], env[tool], project,
                                       f"r{rep + 1}")
                self.check_containers(workloads[tool])
                self.record(run)
        before = {t: self.check_containers(workloads[t]) for t in tools}
        for rep in range(self.args.repeat):
            for tool in tools:
                run, text = self.timed(tool, "ctr-noop", rep, argv[tool], env[tool], project,
                                       f"r{rep + 1}")
                after = self.check_containers(workloads[tool])
                if after != before[tool]:
                    changed = sorted(n for n in after if after[n] != before[tool].get(n))
                    self.results.failures.append(
                        f"ctr-noop {tool} r{rep + 1}: containers recreated or restarted: "
                        f"{changed[:5]}")
                    before[tool] = after
                if tool == "tectum" and run.mutating:
                    self.results.failures.append(
                        f"ctr-noop tectum r{rep + 1}: {run.mutating} mutating podman calls")
                if tool == "ansible":
                    recap = _ansible_recap(text).get("localhost", {})
                    if recap.get("changed") != 0:
                        self.results.failures.append(
                            f"ctr-noop ansible r{rep + 1}: recap {recap} (not a no-op)")
                self.record(run)
        for tool in tools:
            self.remove_containers(tool)

    # ======================================================================= phase 2: bake
    def bake_files(self, root: Path, rev: str) -> list[dict[str, str]]:
        """The files of repetition REV under ROOT/files (mode 0644): [{src, dest, content}]."""
        files = root / "files"
        if files.exists():
            shutil.rmtree(files)
        files.mkdir(parents=True)
        out = []
        for i in range(self.args.files):
            seed = hashlib.sha256(f"{rev}/{i}".encode()).hexdigest()
            content = (f"# bench file {i:03d}, revision {rev}\n"
                       + "".join(f"{seed[k:k + 60]}\n" for k in range(0, 60, 15))
                       + f"{seed * 2}\n"[:80] + "end\n")
            src = files / f"f{i:03d}.txt"
            src.write_text(content)
            src.chmod(0o644)
            out.append({"src": str(src), "dest": f"{BAKE_DIR}/f{i:03d}.txt",
                        "content": content})
        return out

    def check_image(self, ref: str, files: list[dict[str, str]]) -> None:
        """The image REF holds exactly the files (content, mode 0644), the directory (0755)
        and the package."""
        script = (f"stat -c '%a %n' {BAKE_DIR} {BAKE_DIR}/*; cd {BAKE_DIR} && sha256sum *; "
                  f"dpkg-query -W -f='${{db:Status-Abbrev}}' {PACKAGE}")
        proc = self.podman(["run", "--rm", "--network", "none",
                            *self.store.podman.ulimit_args(), "--entrypoint", "", ref, "sh",
                            "-c", script])
        want = [f"755 {BAKE_DIR}"] + [f"644 {f['dest']}" for f in files] + [
            f"{hashlib.sha256(f['content'].encode()).hexdigest()}  {Path(f['dest']).name}"
            for f in files]
        got = proc.stdout.splitlines()
        status = got[-1] if got else ""
        if got[:-1] != want or not status.startswith("ii"):
            missing = [w for w in want if w not in got][:5]
            raise BenchError(f"image {ref}: not the desired end state (package status "
                             f"{status!r}; first lines missing: {missing})")

    def phase_bake(self) -> None:
        tools = [t for t in self.tools if t in ("tectum", "podman-build", "ansible")]
        stack = (
            "import json\n"
            "from tectum.host import Directory, File, Package\n"
            "from tectum.podman import Image\n\n"
            "w = json.load(open('WORKLOAD'))\n\n\n"
            "def bench_role(host, files):\n"
            "    d = Directory('bench', path=w['dir'], mode='0755')\n"
            "    for i, f in enumerate(files):\n"
            "        File(f'f{i:03d}', path=f['dest'], content=f['content'], mode='0644',\n"
            "             depends_on=[d])\n"
            "    Package(w['package'], update_cache=True)\n\n\n"
            "Image('bench', name=w['image'], base_tarball=w['tarball'], role=bench_role,\n"
            "      role_args={'files': w['files']}, keep=2)\n")
        root = self.work / "bake"
        root.mkdir(exist_ok=True)

        def workload(rev: str) -> dict[str, Any]:
            return {"image": TECTUM_IMAGE, "tarball": self.tarball, "dir": BAKE_DIR,
                    "package": PACKAGE, "files": self.bake_files(root, rev),
                    "base": self.base_id, "ansible_base": ANSIBLE_BASE,
                    "ansible_image": f"{ANSIBLE_IMAGE}:{rev}", "builder": f"bench-build-{rev}",
                    "ulimit_args": self.store.podman.ulimit_args()}

        wl = workload("warm")
        project = self.project("bake", stack, wl)
        print(f"\nbake: {self.args.files} files + {PACKAGE}, tools {tools}")
        run, _ = self.timed("tectum", "warm", 0, self.tectum_argv(project), dict(os.environ),
                            project, "warm")
        self.check_image(f"{TECTUM_IMAGE}:latest", wl["files"])
        digest = hashlib.sha256(Path(self.tarball).read_bytes()).hexdigest()
        imported = f"localhost/tectum-base:{digest[:16]}"
        base = self.inspect("image", [imported])
        if not base:
            raise BenchError(f"tectum's imported base {imported} is not there")
        self.results.notes.append(f"bake base: {imported} (id {str(base[0]['Id'])[:12]}), "
                                  "imported by tectum's untimed warm bake")
        build_base = str(base[0]["Id"])
        if "ansible" in tools:
            self.make_ansible_base(build_base)
        for rep in range(self.args.bake_repeat):
            rev = f"r{rep + 1}"
            wl = workload(rev)
            (project / "workload.json").write_text(json.dumps(wl, indent=1))
            for tool in tools:
                if tool == "tectum":
                    run, _ = self.timed(tool, "bake", rep, self.tectum_argv(project),
                                        dict(os.environ), project, rev)
                    ref = f"{TECTUM_IMAGE}:latest"
                elif tool == "podman-build":
                    ref = f"{BUILD_IMAGE}:{rev}"
                    run, _ = self.timed(tool, "bake", rep, [
                        str(self.wrapper), "build", "--layers=false", "--network", "host",
                        *self.store.podman.ulimit_args(), "--format", "oci", "--build-arg",
                        f"BASE={build_base}", "-f", str(PEERS_DIR / "Containerfile"), "-t",
                        ref, str(root)], dict(os.environ), root, rev)
                else:
                    ref = f"{ANSIBLE_IMAGE}:{rev}"
                    run, text = self.timed(tool, "bake", rep, [
                        "ansible-playbook", "-i", "localhost,", str(PEERS_DIR / "bake.yml"),
                        "-e", f"workload={project / 'workload.json'}", "-e",
                        f"podman={self.wrapper}"], self.ansible_env, root, rev)
                self.check_image(ref, wl["files"])
                self.record(run)
            # the peers' images of this repetition go (untimed): nothing is reused
            self.podman(["rmi", "-i", f"{BUILD_IMAGE}:{rev}", f"{ANSIBLE_IMAGE}:{rev}"],
                        check=False)
            self.podman(["image", "prune", "-f"], check=False)
        if self.args.profile:
            self.profile_bake(project, workload("prof"))
        # phase 3: the no-op rebake
        print("\nrebake: tectum, role unchanged")
        for rep in range(self.args.repeat):
            run, _ = self.timed("tectum", "rebake", rep, self.tectum_argv(project),
                                dict(os.environ), project, f"r{rep + 1}")
            if run.mutating:
                self.results.failures.append(
                    f"rebake r{rep + 1}: {run.mutating} mutating podman calls")
            self.record(run)

    def profile_bake(self, project: Path, wl: dict[str, Any]) -> None:
        """One more tectum bake (``rev`` "prof", not in the report's figures) with
        ``[providers.podman] podman`` pointed at a wrapper that logs every podman process's
        start, end and arguments; prints where the time goes: the podman processes by kind
        (the bake runs them one after the other, so their sum is most of the wall time), and
        what is left for tectum itself. (cProfile sees little here: the work is in the
        engine's worker threads, waiting for those processes.)"""
        timing = self.logs / "profile-podman-times.log"
        timing.unlink(missing_ok=True)
        timer = self.work / "podman-timer"
        timer.write_text(
            "#!/bin/sh\ns=$(date +%s.%N)\npodman \"$@\"\nrc=$?\ne=$(date +%s.%N)\n"
            f"printf '%s %s %s ' \"$s\" \"$e\" \"$rc\" >> '{timing}'\n"
            f"printf '%s ' \"$@\" | tr '\\n' ' ' | cut -c1-2000 >> '{timing}'\n"
            f"echo >> '{timing}'\nexit $rc\n")
        timer.chmod(0o755)
        (project / "workload.json").write_text(json.dumps(wl, indent=1))
        env = {**os.environ, "TECTUM_PROVIDER_PODMAN_PODMAN": str(timer)}
        run, _ = self.timed("tectum", "profile", 0, self.tectum_argv(project), env, project,
                            "prof")
        self.check_image(f"{TECTUM_IMAGE}:latest", wl["files"])
        kinds: dict[str, list[float]] = {}
        for line in timing.read_text().splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            args = parts[3:]
            while args and args[0].startswith("--"):
                args = args[2:]  # the global options
            kind = " ".join(args[:1])
            if kind == "exec":
                script = " ".join(args)
                kind = ("exec: apt-get" if "apt-get" in script
                        else "exec: stat (read back)" if "xargs -0 -r stat" in script
                        else "exec: write a file" if "d=$2 b=$3" in script
                        else "exec: other")
            kinds.setdefault(kind, []).append(float(parts[1]) - float(parts[0]))
        total = sum(sum(t) for t in kinds.values())
        lines = [f"profile: tectum bake of {len(wl['files'])} files + {PACKAGE}: "
                 f"{run.wall:.2f} s wall; podman processes by kind (count, seconds summed, "
                 "median):"]
        for kind, times in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
            lines.append(f"  {kind:<24} {len(times):4d}  {sum(times):7.2f} s  "
                         f"({statistics.median(times) * 1000:.0f} ms)")
        lines.append(f"  {'tectum itself (rest)':<24}       {run.wall - total:7.2f} s")
        print("\n".join(lines))
        self.results.notes += lines

    def make_ansible_base(self, base_id: str) -> None:
        """The base + python3 + python3-apt for Ansible's modules (untimed), lists removed."""
        name = "bench-ansible-prep"
        self.podman(["run", "--name", name, "--network", "host",
                     *self.store.podman.ulimit_args(), "--entrypoint", "", base_id, "sh", "-c",
                     "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                     "--no-install-recommends python3 python3-apt && apt-get clean && "
                     "rm -rf /var/lib/apt/lists/*"], timeout=1200)
        self.podman(["commit", "--format", "oci", name, ANSIBLE_BASE])
        self.podman(["rm", "-f", name])
        self.results.notes.append(f"ansible base: {ANSIBLE_BASE} = base + python3 python3-apt "
                                  "(untimed; apt lists removed)")

    # ============================================================================== setup
    def setup(self) -> None:
        self.base_id = self.store.import_base()
        self.base_id = str(self.inspect("image", [self.base_id])[0]["Id"])
        # the base's apt reaches its mirror over the host network (the bake needs it)
        proc = self.podman(["run", "--rm", "--network", "host",
                            *self.store.podman.ulimit_args(), "--entrypoint", "", self.base_id,
                            "sh", "-c", "apt-get update -q >/dev/null && apt-cache policy "
                            f"{PACKAGE} | head -3"], timeout=600)
        self.results.notes.append(f"apt in the base over --network host: "
                                  f"{' '.join(proc.stdout.split())}")


# ------------------------------------------------------------------------------ report

def _fmt(x: float) -> str:
    return f"{x:.2f}"


def report(results: Results, tools: list[str], args: argparse.Namespace) -> list[str]:
    """The report's lines; also appends missed targets to results.failures."""
    lines = ["", "=" * 78, "tectum podman provider vs peers — wall seconds: median [min–max], "
             "ratio = peer / tectum", "=" * 78]
    missed: list[str] = []
    for phase, peers in (("ctr-first", ["ansible"]), ("ctr-noop", ["ansible"]),
                         ("bake", ["podman-build", "ansible"]), ("rebake", [])):
        t = results.walls(phase, "tectum")
        if not t:
            continue
        tm = statistics.median(t)
        lines.append(f"{phase:<10} tectum       {_fmt(tm):>7} [{_fmt(min(t))}–{_fmt(max(t))}]"
                     f"  n={len(t)}")
        calls = [r.podman_calls for r in results.runs if r.phase == phase and r.tool == "tectum"]
        muts = [r.mutating for r in results.runs if r.phase == phase and r.tool == "tectum"]
        logged = [r.logged for r in results.runs if r.phase == phase and r.tool == "tectum"]
        lines.append(f"{'':<10} tectum per run (median): podman calls "
                     f"{statistics.median(calls):g}, logged operations "
                     f"{statistics.median(logged):g}, mutating {statistics.median(muts):g}")
        for peer in peers:
            p = results.walls(phase, peer)
            if not p or peer not in tools:
                continue
            pm = statistics.median(p)
            tr, pr = results.by_rep(phase, "tectum"), results.by_rep(phase, peer)
            per = [pr[k] / tr[k] for k in tr if k in pr and tr[k] > 0]
            lines.append(f"{'':<10} {peer:<12} {_fmt(pm):>7} [{_fmt(min(p))}–{_fmt(max(p))}]"
                         f"  ratio {peer}/tectum = {pm / tm:.2f}x  (per round "
                         f"{min(per):.2f}–{max(per):.2f})")
            key = f"{phase}/{peer}"
            if key in TARGETS:
                ok = pm / tm >= TARGETS[key]
                lines.append(f"{'':<10}   target ≥ {TARGETS[key]:g}x faster than {peer}: "
                             f"{'met' if ok else 'MISSED'}")
                if not ok:
                    missed.append(f"{key}: {pm / tm:.2f}x, target {TARGETS[key]:g}x")
            if phase == "bake" and peer == "podman-build":
                ok = tm <= BUILD_FACTOR * pm
                lines.append(f"{'':<10}   target tectum ≤ {BUILD_FACTOR:g}x podman build "
                             f"(tectum/podman-build = {tm / pm:.2f}x): "
                             f"{'met' if ok else 'MISSED'}")
                if not ok:
                    missed.append(f"bake: tectum is {tm / pm:.2f}x podman build, target "
                                  f"≤ {BUILD_FACTOR:g}x")
        if phase == "rebake":
            ok = tm < REBAKE_LIMIT and not any(muts)
            lines.append(f"{'':<10}   target < {REBAKE_LIMIT:g} s, no mutating podman call: "
                         f"{'met' if ok else 'MISSED'}")
            if not ok:
                missed.append(f"rebake: {tm:.2f} s, mutating {sum(muts)}")
    if any(len(results.walls(ph, "tectum")) < 3 for ph in ("ctr-noop", "bake")):
        lines.append("warning: fewer than 3 repetitions in a phase: no spread worth the name")
    lines += ["", "notes:"] + [f"  {n}" for n in results.notes]
    lines.append(f"  load average at the end: {os.getloadavg()}, CPUs {os.cpu_count()}")
    results.failures += [f"target missed: {m}" for m in missed]
    lines += ["", "failures:" if results.failures else "all checks held, all targets met"]
    lines += [f"  {f}" for f in results.failures]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--containers", type=int, default=20)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5, help="no-op and rebake repetitions")
    ap.add_argument("--first-repeat", type=int, default=3)
    ap.add_argument("--bake-repeat", type=int, default=3)
    ap.add_argument("--tools", default="tectum,podman-build,ansible")
    ap.add_argument("--phases", default="containers,bake",
                    help="containers and/or bake (bake includes the no-op rebake)")
    ap.add_argument("--profile", action="store_true",
                    help="after the bake rounds, one more tectum bake with every podman "
                         "process timed (where tectum's time goes)")
    ap.add_argument("--json", help="write the runs here (rewritten after every run)")
    ap.add_argument("--keep-logs", help="keep the tools' output and command logs here")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run as root (podman with its own storage)", file=sys.stderr)
        return 2
    if not args.tools.startswith("tectum"):
        ap.error("--tools starts with tectum (the ratios are against it)")
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="tectum-bench-containers-"))
        stack.callback(shutil.rmtree, work, True)
        store = stack.enter_context(PodmanStore())
        bench = Bench(args, store, work)
        try:
            bench.setup()
            if "containers" in args.phases.split(","):
                bench.phase_containers()
            if "bake" in args.phases.split(","):
                bench.phase_bake()
        except BenchError as exc:
            bench.results.failures.append(f"aborted: {exc}")
        except KeyboardInterrupt:
            bench.results.failures.append("interrupted")
        lines = report(bench.results, bench.tools, args)
        print("\n".join(lines))
        left = store.containers()
        if left:
            print(f"(removing {len(left)} containers and every image with the store)")
        return 1 if bench.results.failures else 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
