"""placement-scale: replicas placed per second by `manage.py solve_placement` on 5,000 nodes, process start included.

A seeded fleet of 5,000 nodes of 8 accelerators (40,000 accelerators, a tenth of the nodes
partly used) and deployments whose cost-aware plan needs about 25,000 replicas
(bench/_placement_instances.py; a plan serving all of them is planted, so one exists). The
problem is written to a temporary file and each command runs as a subprocess, timed from
start to exit, best of `--repeat`:

- `python manage.py solve_placement FILE` — the figure (DESIGN: "Benchmarks time
  `solve_placement` as a whole command, process start included"); Django's start-up is part
  of it, and is measured separately on an empty problem;
- `python -m scheduler.placement FILE` — the same solver and output without Django (reported);
- the baseline, naive first fit (cheapest option per rps, first node with room; no Django):
  `python -m bench._placement_instances first-fit FILE`.

Every plan is re-checked from its JSON output by an independent checker (capacity per node,
hardware, regions, per-node caps, served deployments' rps and counts, cost). Then, in process,
one deployment at a time is added to the placed fleet with `scheduler.placement.add_deployment`
(and removed again, untimed): the median of `--adds` additions against the 10 ms target.

Anchor: kube-scheduler's own performance tests gate scheduling throughput at 5,000 nodes
at about 680–810 pods/s (kubernetes/kubernetes, test/integration/scheduler_perf thresholds).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._placement_instances import generate_scale, plan_cost, plan_violations
from bench.common import (
    EXIT_FAILED,
    PROJECT_ROOT,
    Target,
    exit_status,
    machine_facts,
    print_header,
    print_table,
    print_verdict,
)

TARGET_RATE = Target(">=", 8000)
TARGET_ADD_MS = Target("<=", 10)
KUBE_SCHEDULER_PODS_PER_S = "680–810"


def add_arguments(parser) -> None:
    parser.add_argument("--nodes", type=int, default=5000, help="fleet size (default: 5000)")
    parser.add_argument("--replicas", type=int, default=25_000, help="about how many replicas to place (default: 25000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; the best counts (default: 3)")
    parser.add_argument("--adds", type=int, default=200, help="incremental additions timed (default: 200)")


def _timed(command: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} exited {completed.returncode}: {completed.stderr.strip()[-500:]}")
    return seconds, json.loads(completed.stdout)


def _best(command: list[str], repeat: int) -> tuple[float, dict]:
    runs = [_timed(command) for _ in range(repeat)]
    return min(seconds for seconds, _ in runs), runs[0][1]


def _same_elsewhere(before, after, added: str) -> bool:
    def key(r):
        return r.deployment, r.node, r.hardware, r.accelerators

    return sorted(map(key, before.replicas)) == sorted(key(r) for r in after.replicas if r.deployment != added)


def run(args) -> int:
    problem = generate_scale(args.seed, args.nodes, args.replicas)
    accelerators = sum(n["free_accelerators"] for n in problem["nodes"])
    total = args.nodes * 8
    facts = machine_facts()
    facts["instance"] = (f"{args.nodes} nodes, {total:,} accelerators ({accelerators:,} free), "
                         f"{len(problem['deployments']):,} deployments, seed {args.seed}")
    print_header("placement-scale", facts)
    with tempfile.TemporaryDirectory(prefix="switchyard-placement-") as folder:
        path = Path(folder) / "problem.json"
        path.write_text(json.dumps(problem))
        empty = Path(folder) / "empty.json"
        empty.write_text(json.dumps({"version": 1, "hardware": [], "nodes": [], "deployments": []}))
        python = sys.executable
        try:
            start_up, _ = _best([python, "manage.py", "solve_placement", str(empty)], args.repeat)
            ours_s, ours = _best([python, "manage.py", "solve_placement", str(path)], args.repeat)
            bare_s, bare = _best([python, "-m", "scheduler.placement", str(path)], args.repeat)
            naive_s, naive = _best([python, "-m", "bench._placement_instances", "first-fit", str(path)], args.repeat)
        except RuntimeError as error:
            print(f"FAILED: {error}")
            return EXIT_FAILED
    if ours != bare:
        print("FAILED: manage.py solve_placement and python -m scheduler.placement gave different plans")
        return EXIT_FAILED
    rows = []
    problems = {}
    for label, seconds, plan in (("manage.py solve_placement", ours_s, ours),
                                 ("python -m scheduler.placement", bare_s, bare),
                                 ("naive first fit (baseline)", naive_s, naive)):
        problems[label] = plan_violations(problem, plan)
        placed = len(plan["replicas"])
        rows.append([label, f"{seconds:.2f}", f"{placed:,}", f"{placed / seconds:,.0f}", str(len(plan["unserved"])),
                     f"{plan_cost(problem, plan):,.2f}", "yes" if not problems[label] else f"NO ({len(problems[label])})"])
    print_table(["command (process start included)", "best s", "replicas", "replicas/s", "unserved", "$/h",
                 "feasible"], rows)
    print(f"Django start-up (manage.py solve_placement on an empty problem, best of {args.repeat}): {start_up:.2f} s")
    for label, found in problems.items():
        for line in found[:3]:
            print(f"  {label}: {line}")
    rate = len(ours["replicas"]) / ours_s
    naive_rate = len(naive["replicas"]) / naive_s
    print(f"ours ÷ naive first fit, replicas/s: {rate / naive_rate:.2f}  (first fit leaves "
          f"{len(naive['unserved'])} deployments unserved, we leave {len(ours['unserved'])}; cost "
          f"{plan_cost(problem, ours) / max(plan_cost(problem, naive), 1e-9):.3f}× its cost, serving more)")
    print(f"Anchor: kube-scheduler gates at {KUBE_SCHEDULER_PODS_PER_S} pods/s at 5,000 nodes; ours ÷ 810 = "
          f"{rate / 810:.1f}×\n")

    # Incremental: one deployment added to the placed fleet, in process.
    from scheduler.placement import add_deployment, parse_problem, remove_deployment, solve

    plan = solve(parse_problem(problem))
    rng = random.Random(args.seed)
    timings, moved, served = [], 0, 0
    for index in range(args.adds):
        template = rng.choice(problem["deployments"])
        deployment = {**template, "id": f"bench-added-{index}"}
        started = time.perf_counter()
        after = add_deployment(plan, deployment)
        timings.append((time.perf_counter() - started) * 1000)
        served += all(u.deployment != deployment["id"] for u in after.unserved)
        if not after.preempted and not _same_elsewhere(plan, after, deployment["id"]):
            moved += 1
        plan = remove_deployment(after, deployment["id"])
    timings.sort()
    median = statistics.median(timings)
    print(f"add_deployment on the placed fleet, {args.adds} additions (each removed again, untimed): median "
          f"{median:.2f} ms, p90 {timings[int(0.9 * len(timings))]:.2f} ms, max {timings[-1]:.2f} ms; "
          f"{served}/{args.adds} added deployments served; additions that moved another deployment's replica "
          f"without preempting: {moved}")
    add_met = TARGET_ADD_MS.met(median)
    print(f"adding one deployment, median = {median:.2f} ms   target {TARGET_ADD_MS} ms (DESIGN.md)   "
          f"{'PASS' if add_met else 'MISS'}\n")
    feasible = not problems["manage.py solve_placement"] and not ours["unserved"]
    met = print_verdict(
        figure_name="replicas placed per second (manage.py solve_placement, process start included)", figure=rate,
        target=TARGET_RATE,
        how_to_read=f"placed replicas ÷ wall time of the whole command, best of {args.repeat}; the baseline in "
                    f"the same run is naive first fit at {naive_rate:,.0f}/s (no Django start-up, no choice of "
                    f"hardware). Every deployment served and the plan feasible: {'yes' if feasible else 'NO'}.")
    return exit_status(met and add_met and feasible, args)
