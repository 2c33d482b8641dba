"""Seeded placement problems for the `placement` and `placement-scale` benchmarks, an
independent plan checker, and the naive first-fit baseline.

Instances look like a mixed fleet: DESIGN-like list prices (scheduler/data/list_prices.yaml),
three regions of two zones each, nodes of 8 accelerators (12 for inf2, 4 for some l4 hosts),
some of them partly used already, and deployments with 1–3 options whose replica shapes and
rps come from a bandwidth-bound rule of thumb: a model needs enough accelerators for its
weights (tensor parallel 1/2/4/8 on one node), and serves roughly in proportion to the memory
bandwidth it gets, times a per-deployment affinity (software maturity, kernels) of ±40 %.

`tightness` is the knob: deployments are added until the sum over deployments of the
accelerators of each one's cheapest plan (capacity aside) reaches that share of the fleet's
free accelerators. The cheap-per-rps hardware is then over-asked, so a plan must choose who
gets it.

`python -m bench._placement_instances first-fit FILE` runs the baseline placer on a problem
file and prints its plan in the same JSON as `solve_placement` (no Django, no solver import).
"""

from __future__ import annotations

import json
import math
import random
import sys
from decimal import ROUND_HALF_UP, Decimal

# name → (price per accelerator-hour, effective memory bandwidth TB/s, memory GB, accelerators per node)
# Prices: scheduler/data/list_prices.yaml. Bandwidth: datasheets, discounted where serving
# stacks reach less of it (MI300X, Gaudi 3, Inferentia2) — a rough relative speed, no more.
HARDWARE = {
    "h200-141gb": ("5.00", 4.8, 141, 8),
    "h100-80gb": ("4.50", 3.35, 80, 8),
    "a100-80gb": ("2.50", 2.0, 80, 8),
    "mi300x-192gb": ("1.90", 3.2, 192, 8),
    "gaudi3-128gb": ("2.90", 2.3, 128, 8),
    "l40s-48gb": ("1.80", 0.86, 48, 8),
    "l4-24gb": ("0.80", 0.30, 24, 8),
    "inf2-32gb": ("0.75", 0.45, 32, 12),
}
PREMIUM = "h200-141gb"  # the dearest tier
REGIONS = ("eu-north1", "us-east1", "ap-south1")
# Share of each region's nodes per hardware type (not every type in every region).
FLEET_MIX = {
    "eu-north1": {"h100-80gb": 3, "a100-80gb": 2, "l40s-48gb": 3, "l4-24gb": 2, "mi300x-192gb": 1, "h200-141gb": 1},
    "us-east1": {"h200-141gb": 2, "h100-80gb": 3, "mi300x-192gb": 2, "gaudi3-128gb": 1, "l40s-48gb": 2,
                 "inf2-32gb": 2, "l4-24gb": 1},
    "ap-south1": {"h100-80gb": 2, "a100-80gb": 3, "l40s-48gb": 2, "l4-24gb": 3, "inf2-32gb": 1},
}
# Model weights in GB (bf16 8B, fp8 14B, bf16 14B, fp8 70B, bf16 70B, fp8 MoE) and how often each is deployed.
MODELS = ((16, 30), (15, 10), (30, 15), (70, 20), (140, 15), (400, 5))


def _fleet(rng: random.Random, node_count: int, *, used_share: float, uniform_size: bool) -> list[dict]:
    weights = [(region, hw, share) for region, mix in FLEET_MIX.items() for hw, share in mix.items()]
    total = sum(share for _, _, share in weights)
    nodes = []
    counts = {}
    for index in range(node_count):
        pick = rng.uniform(0, total)
        for region, hw, share in weights:
            pick -= share
            if pick <= 0:
                break
        size = HARDWARE[hw][3]
        if not uniform_size and hw == "l4-24gb" and rng.random() < 0.4:
            size = 4
        if uniform_size:
            size = 8
        used = 0
        if rng.random() < used_share:
            used = rng.randint(1, size)
        zone = f"{region}-{'ab'[index % 2]}"
        counts[(region, hw)] = counts.get((region, hw), 0) + 1
        nodes.append({"id": f"{region}-{hw.split('-')[0]}-{counts[(region, hw)]:04d}", "region": region,
                      "zone": zone, "hardware": hw, "free_accelerators": size - used})
    return nodes


def _shape(hw: str, weights_gb: float, rng: random.Random) -> dict | None:
    """One option for a model of `weights_gb` on `hw`: the smallest tensor-parallel degree whose
    memory holds the weights with room for the KV cache, and a bandwidth-bound rps."""
    _, bandwidth, memory, per_node = HARDWARE[hw]
    tp = next((t for t in (1, 2, 4, 8) if t * memory >= weights_gb * 1.3 and t <= per_node), None)
    if tp is None:
        return None
    rps = 40.0 / weights_gb * bandwidth * tp * tp ** -0.1 * rng.uniform(0.6, 1.4)
    return {"hardware": hw, "accelerators": tp, "rps_per_replica": round(rps, 2)}


class _Witness:
    """A plan built while the instance is generated, so every instance has a feasible plan
    serving every deployment: each deployment is first placed (first fit over shuffled nodes)
    with one of its options, and its demand is what those replicas serve."""

    def __init__(self, rng: random.Random, nodes: list[dict]):
        self.rng = rng
        self.pools: dict[tuple[str, str], list[dict]] = {}
        for node in nodes:
            self.pools.setdefault((node["hardware"], node["region"]), []).append(node)
        self.left = {node["id"]: node["free_accelerators"] for node in nodes}
        self.used = 0  # accelerators
        self.replicas = 0

    def hardware_in(self, regions: list[str]) -> list[str]:
        return sorted({hw for (hw, region), nodes in self.pools.items()
                       if region in regions and any(self.left[n["id"]] for n in nodes)})

    def place_capped(self, option: dict, regions: list[str], wanted: int, per_node: int) -> int:
        """Place up to `wanted` replicas of `option`, at most `per_node` on a node; how many fit."""
        a = option["accelerators"]
        candidates = [n["id"] for region in regions for n in self.pools.get((option["hardware"], region), [])]
        self.rng.shuffle(candidates)
        placed = 0
        for node in candidates:
            here = min(per_node, self.left[node] // a, wanted - placed)
            self.left[node] -= here * a
            placed += here
            if placed == wanted:
                break
        self.used += placed * a
        self.replicas += placed
        return placed


def _deployment(rng: random.Random, witness: _Witness, index: int, *, max_options: int, small_models: bool,
                replicas: tuple[int, int], priorities: bool) -> dict | None:
    regions = rng.sample(REGIONS, rng.choices([1, 2, 3], [6, 3, 1])[0])
    present = witness.hardware_in(regions)
    models = [(16, 70), (15, 30)] if small_models else MODELS  # small: one accelerator per replica anywhere
    weights_gb = rng.choices([m for m, _ in models], [w for _, w in models])[0]
    shapes = [shape for hw in present if (shape := _shape(hw, weights_gb, rng)) is not None]
    if not shapes:
        return None
    rng.shuffle(shapes)
    options = shapes[: rng.randint(1, max_options)]
    per_node = rng.choice([1, 2, 2, 4, 8])
    wanted = rng.randint(*replicas)
    chosen = rng.choice(options)
    placed = witness.place_capped(chosen, regions, wanted, per_node)
    if placed == 0:
        return None
    # Rounded down, so the planted replicas always serve it.
    demand = math.floor(placed * chosen["rps_per_replica"] * rng.uniform(0.75, 1.0) * 10) / 10
    minimum = min(placed, rng.choice([1, 1, 1, 2]))
    return {"id": f"dep-{index:05d}", "demand_rps": demand, "min_replicas": minimum,
            "max_replicas": placed * 2 + 2, "regions": regions, "max_replicas_per_node": per_node,
            "priority": rng.choices([0, 1, 2], [7, 2, 1])[0] if priorities else 0, "options": options}


def _instance(rng: random.Random, fleet: list[dict], *, share: float, small_models: bool, replicas: tuple[int, int],
              max_options: int, priorities: bool, stop_at_replicas: int | None = None) -> dict:
    witness = _Witness(rng, fleet)
    free = sum(n["free_accelerators"] for n in fleet)
    deployments = []
    failures = 0
    planted = 0
    while witness.used < share * free and failures < 200 and (stop_at_replicas is None or planted < stop_at_replicas):
        deployment = _deployment(rng, witness, len(deployments), max_options=max_options, small_models=small_models,
                                 replicas=replicas, priorities=priorities)
        if deployment is None:
            failures += 1
            continue
        deployments.append(deployment)
        planted = witness.replicas
    hardware = [{"name": hw, "price_per_hour": spec[0]} for hw, spec in HARDWARE.items()]
    return {"version": 1, "hardware": hardware, "nodes": fleet, "deployments": deployments, "current": []}


def generate(seed: int, nodes: int, *, tightness: float = 0.85, max_options: int = 3, priorities: bool = True,
             used_share: float = 0.3) -> dict:
    """A capacity-tight problem (version 1 of DESIGN's format) on `nodes` nodes: deployments are
    planted until the witness plan uses `tightness` of the free accelerators."""
    rng = random.Random(f"placement-{seed}-{nodes}-{tightness}")
    fleet = _fleet(rng, nodes, used_share=used_share, uniform_size=False)
    return _instance(rng, fleet, share=tightness, small_models=False, replicas=(1, 12), max_options=max_options,
                     priorities=priorities)


# The planted plan picks options at random; a cost-aware plan of the same demand needs about
# 1/1.3 as many replicas (it favours the faster-per-dollar shapes), measured on these instances.
PLANTED_PER_PLANNED = 1.3


def generate_scale(seed: int, nodes: int = 5000, replicas: int = 25_000) -> dict:
    """The fleet-scale problem: `nodes` nodes of 8 accelerators (a tenth partly used) and
    single-accelerator deployments planted until a cost-aware plan needs about `replicas`
    replicas (the planted plan then fills about 85 % of the free accelerators)."""
    rng = random.Random(f"placement-scale-{seed}-{nodes}-{replicas}")
    fleet = _fleet(rng, nodes, used_share=0.1, uniform_size=True)
    return _instance(rng, fleet, share=1.0, small_models=True, replicas=(2, 14), max_options=3, priorities=True,
                     stop_at_replicas=round(replicas * PLANTED_PER_PLANNED))


def fragmented(problem: dict, plan: dict, seed: int, *, share: float = 0.3) -> dict:
    """The fleet some time after `plan` ran: a seeded `share` of the deployments were deleted and
    left holes; the rest run where the plan put them (`current`), demand unchanged. What
    defragmentation is measured on (`python -m bench placement`)."""
    rng = random.Random(f"fragmented-{seed}-{len(problem['nodes'])}")
    gone = {d["id"] for d in problem["deployments"] if rng.random() < share}
    current = [r for r in plan["replicas"] if r["deployment"] not in gone]
    held: dict[str, int] = {}
    for replica in current:
        held[replica["node"]] = held.get(replica["node"], 0) + replica["accelerators"]
    nodes = [{**node, "free_accelerators": node["free_accelerators"] - held.get(node["id"], 0)}
             for node in problem["nodes"]]
    return {**problem, "nodes": nodes, "deployments": [d for d in problem["deployments"] if d["id"] not in gone],
            "current": current}


# --- Checking a plan, independently of the solver -----------------------------------------------


def plan_violations(problem: dict, plan: dict) -> list[str]:
    """Everything wrong with `plan` (output JSON) for `problem` (input JSON); [] when feasible.

    Checks capacity per node (free plus what current replicas held), hardware and region of
    every replica, replica shapes, per-node caps, served deployments' rps and counts, that
    every deployment is either served or listed unserved, and the cost."""
    problems = []
    nodes = {n["id"]: n for n in problem["nodes"]}
    deployments = {d["id"]: d for d in problem["deployments"]}
    price = {h["name"]: Decimal(str(h["price_per_hour"])) for h in problem["hardware"]}
    capacity = {n["id"]: n["free_accelerators"] for n in problem["nodes"]}
    for replica in problem.get("current", []):
        capacity[replica["node"]] += replica["accelerators"]
    used: dict[str, int] = {}
    per_node: dict[tuple[str, str], int] = {}
    rps: dict[str, float] = {}
    count: dict[str, int] = {}
    cost = Decimal(0)
    for replica in plan["replicas"]:
        d = deployments.get(replica["deployment"])
        node = nodes.get(replica["node"])
        if d is None or node is None:
            problems.append(f"replica on unknown deployment or node: {replica}")
            continue
        if node.get("state", "ready") != "ready" and replica not in problem.get("current", []):
            problems.append(f"new replica on a node that is not ready: {replica}")
        if node["hardware"] != replica["hardware"]:
            problems.append(f"{replica}: node {node['id']} is {node['hardware']}")
        if node["region"] not in d["regions"]:
            problems.append(f"{replica}: region {node['region']} not allowed for {d['id']}")
        option = next((o for o in d["options"] if o["hardware"] == replica["hardware"]
                       and o["accelerators"] == replica["accelerators"]), None)
        if option is None:
            problems.append(f"{replica}: not one of {d['id']}'s options")
            continue
        used[node["id"]] = used.get(node["id"], 0) + replica["accelerators"]
        key = (d["id"], node["id"])
        per_node[key] = per_node.get(key, 0) + 1
        rps[d["id"]] = rps.get(d["id"], 0.0) + option["rps_per_replica"]
        count[d["id"]] = count.get(d["id"], 0) + 1
        cost += price[replica["hardware"]] * replica["accelerators"]
    for node_id, accelerators in used.items():
        if accelerators > capacity[node_id]:
            problems.append(f"node {node_id} over-committed: {accelerators} > {capacity[node_id]}")
    for (deployment_id, node_id), n in per_node.items():
        if n > deployments[deployment_id]["max_replicas_per_node"]:
            problems.append(f"{deployment_id} has {n} replicas on {node_id} "
                            f"(max_replicas_per_node {deployments[deployment_id]['max_replicas_per_node']})")
    unserved = {u["deployment"] for u in plan["unserved"]}
    for d in problem["deployments"]:
        if d["id"] in unserved:
            continue
        n = count.get(d["id"], 0)
        if rps.get(d["id"], 0.0) < d["demand_rps"] - 1e-9 or not d["min_replicas"] <= n <= d["max_replicas"]:
            problems.append(f"{d['id']} not listed unserved but has {n} replicas serving "
                            f"{rps.get(d['id'], 0.0):.2f} of {d['demand_rps']} rps")
    expected = str(cost.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    if plan["cost_per_hour"] != expected:
        problems.append(f"cost_per_hour {plan['cost_per_hour']} but the replicas cost {expected}")
    return problems


def plan_cost(problem: dict, plan: dict) -> float:
    price = {h["name"]: float(h["price_per_hour"]) for h in problem["hardware"]}
    return sum(price[r["hardware"]] * r["accelerators"] for r in plan["replicas"])


# --- The naive baseline ---------------------------------------------------------------------------


def first_fit(problem: dict) -> dict:
    """What a simple scheduler does: each deployment (highest priority first) takes its cheapest
    option per rps, as many replicas as its demand needs, each on the first node (input order) of
    that hardware in an allowed region with room. All or nothing per deployment; no current replicas."""
    price = {h["name"]: Decimal(str(h["price_per_hour"])) for h in problem["hardware"]}
    pools: dict[tuple[str, str], list[list]] = {}
    for node in problem["nodes"]:
        if node.get("state", "ready") == "ready":
            pool = pools.setdefault((node["hardware"], node["region"]), [])
            pool.append([node["id"], node["free_accelerators"], (node["hardware"], node["region"]), len(pool)])
    first_open = {key: 0 for key in pools}  # nodes before this index are full
    replicas, unserved = [], []
    order = sorted(problem["deployments"], key=lambda d: -d.get("priority", 0))
    for d in order:
        option = min(d["options"], key=lambda o: float(price[o["hardware"]]) * o["accelerators"] / o["rps_per_replica"])
        n = max(d["min_replicas"], math.ceil(d["demand_rps"] / option["rps_per_replica"] - 1e-9))
        cap = d.get("max_replicas_per_node", n)
        taken = []
        for _ in range(n):
            spot = None
            for region in d["regions"]:
                key = (option["hardware"], region)
                nodes = pools.get(key, [])
                i = first_open.get(key, 0)
                while i < len(nodes) and nodes[i][1] == 0:
                    i += 1
                if key in first_open:
                    first_open[key] = i
                for node in nodes[i:]:
                    if node[1] >= option["accelerators"] and sum(1 for t in taken if t is node) < cap:
                        spot = node
                        break
                if spot is not None:
                    break
            if spot is None or n > d["max_replicas"]:
                break
            spot[1] -= option["accelerators"]
            taken.append(spot)
        if len(taken) < n or n > d["max_replicas"]:
            for node in taken:  # give back what it took; those nodes are open again
                node[1] += option["accelerators"]
                first_open[node[2]] = min(first_open[node[2]], node[3])
            unserved.append({"deployment": d["id"], "reason": "first fit found no room"})
            continue
        replicas.extend({"deployment": d["id"], "node": node[0], "hardware": option["hardware"],
                         "accelerators": option["accelerators"]} for node in taken)
    cost = sum((price[r["hardware"]] * r["accelerators"] for r in replicas), Decimal(0))
    return {"version": 1, "replicas": replicas, "preempted": [], "unserved": unserved,
            "cost_per_hour": str(cost.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "first-fit":
        print("usage: python -m bench._placement_instances first-fit FILE", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        problem = json.load(handle)
    json.dump(first_fit(problem), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
