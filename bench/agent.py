"""Benchmark: an agent's no-op cycle, against a plain ``tectum plan`` and ``ansible-pull``.

The project is ``bench/local_files.py``'s (500 files with distinct content in 10 directories),
committed to a bare git repository that every tool pulls over ``file://``. After a first apply,
each repetition times, on the same files and in the same run:

* ``plan``   — ``tectum plan`` in the agent's clone (state there, nothing to change);
* ``agent``  — ``tectum agent --mode remediate --once``: fetch, plan the last applied
  configuration, nothing to correct, store a run report;
* ``ansible-pull`` — ``ansible-pull -U REPO local.yml``: clone/pull, then one ``copy`` task
  looping over the same 500 files (content and mode), nothing to change (fewer repetitions:
  it is slow).

Targets (issue 15): the agent's no-op cycle within 1.3x the plain plan's wall time, and at
least 10x faster than ansible-pull. Wall times are medians; ratios come from this one run.

Usage::

    python bench/agent.py [--files 500] [--reps 5] [--ansible-reps 1] [--json FILE]

Exit status: 0 when both targets are met (ansible-pull missing: only the first), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from local_files import CONTENT_SRC, DROPPED_ENV, N_DIRS, STACK_TEMPLATE, _content_fn  # noqa: E402

TARGET_PLAN = 1.3
TARGET_ANSIBLE = 10.0

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [files.yml]
  tasks:
    - name: directories
      file: {path: "{{ item }}", state: directory, mode: "0755"}
      loop: "{{ dirs }}"
    - name: files
      copy: {dest: "{{ item.path }}", content: "{{ item.content }}", mode: "0644"}
      loop: "{{ files }}"
      loop_control: {label: "{{ item.path }}"}
"""


def sh(*args: str, cwd: str | None = None, env: dict[str, str] | None = None) -> float:
    """Run ``args``; its wall time in seconds. Raises on failure (with its output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ansible-reps", type=int, default=1)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)

    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.update(GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.org",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.org",
               ANSIBLE_NOCOWS="1", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    work = tempfile.mkdtemp(prefix="tectum-bench-agent-")
    try:
        src, bare = os.path.join(work, "src"), os.path.join(work, "repo.git")
        target, ansible_target = os.path.join(work, "target"), os.path.join(work, "ansible")
        os.makedirs(src)
        with open(os.path.join(src, "stack.py"), "w", encoding="utf-8") as fh:
            fh.write(STACK_TEMPLATE.format(n=args.files, n_dirs=N_DIRS, root=target,
                                           content_src=CONTENT_SRC))
        content = _content_fn()
        files = [{"path": f"{ansible_target}/d{i % N_DIRS}/f{i}.txt", "content": content(i)}
                 for i in range(args.files)]
        with open(os.path.join(src, "files.yml"), "w", encoding="utf-8") as fh:
            json.dump({"dirs": [f"{ansible_target}/d{j}" for j in range(N_DIRS)],
                       "files": files}, fh)  # (JSON is YAML)
        with open(os.path.join(src, "local.yml"), "w", encoding="utf-8") as fh:
            fh.write(PLAYBOOK)
        sh("git", "init", "-q", "-b", "main", cwd=src, env=env)
        sh("git", "add", "-A", cwd=src, env=env)
        sh("git", "commit", "-q", "-m", "bench", cwd=src, env=env)
        sh("git", "clone", "-q", "--bare", src, bare, env=env)
        url = f"file://{bare}"
        workdir = os.path.join(work, "agent")
        agent = [sys.executable, "-m", "tectum", "agent", "--repo", url, "--workdir", workdir,
                 "--interval", "1h", "--once"]
        first = sh(*agent, "--mode", "apply", env=env)
        project = os.path.join(workdir, "repo")
        sh(sys.executable, "-m", "tectum", "plan", project, env=env)  # (warm caches)
        times: dict[str, list[float]] = {"plan": [], "agent": [], "ansible-pull": []}
        for _ in range(args.reps):
            times["plan"].append(sh(sys.executable, "-m", "tectum", "plan", project, env=env))
            times["agent"].append(sh(*agent, "--mode", "remediate", env=env))
        ansible = shutil.which("ansible-pull")
        if ansible:
            pull = [ansible, "-U", url, "-C", "main", "-d", os.path.join(work, "pull"),
                    "-i", "localhost,", "local.yml"]
            sh(*pull, env=env)  # the first run makes the files
            for _ in range(args.ansible_reps):
                times["ansible-pull"].append(sh(*pull, env=env))
        median = {k: statistics.median(v) for k, v in times.items() if v}
        result: dict[str, Any] = {"files": args.files, "first_apply_s": first,
                                  "median_s": median, "times_s": times}
        ratio_plan = median["agent"] / median["plan"]
        result["agent_over_plan"] = ratio_plan
        print(f"{args.files} files; medians of {args.reps} (ansible-pull: "
              f"{args.ansible_reps}); first apply by the agent {first:.2f} s")
        print(f"  tectum plan           {median['plan']:7.2f} s")
        print(f"  tectum agent (no-op)  {median['agent']:7.2f} s   {ratio_plan:.2f}x the plan "
              f"(target <= {TARGET_PLAN}x)")
        ok = ratio_plan <= TARGET_PLAN
        if "ansible-pull" in median:
            speedup = median["ansible-pull"] / median["agent"]
            result["ansible_over_agent"] = speedup
            print(f"  ansible-pull (no-op)  {median['ansible-pull']:7.2f} s   the agent is "
                  f"{speedup:.1f}x faster (target >= {TARGET_ANSIBLE}x)")
            ok = ok and speedup >= TARGET_ANSIBLE
        else:
            print("  ansible-pull: not installed, not compared")
        if args.json_path:
            with open(args.json_path, "w", encoding="utf-8") as fh:
                json.dump(result, fh, indent=2)
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
