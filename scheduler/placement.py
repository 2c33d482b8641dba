"""Placement solver: which option (hardware shape), how many replicas, on which nodes. Pure: no Django.

The contract is DESIGN.md, "File formats → Placement problem": `parse_problem(raw)` turns
a version-1 problem dict into dataclasses (a `ValueError` names what is wrong), `solve(problem)`
returns a `Plan`, and `plan_to_dict(plan)` gives the output JSON. `add_deployment(plan, …)`
and `remove_deployment(plan, …)` re-plan one deployment against a placed fleet without moving
anyone else's replicas (what the reconcile loop calls between full passes).
`python -m scheduler.placement FILE` is `manage.py solve_placement FILE` without Django.

How it decides (docs/placement.md has the long form):

1. Current replicas on ready nodes stay, unless their deployment no longer needs them (surplus
   rps, above `max_replicas` or `max_replicas_per_node`, a region or shape no longer allowed);
   those are dropped first, so their accelerators are free for everyone.
2. A deployment's replica mix (how many replicas of each option) is the cheapest one covering
   its demand within the capacity free now: an exact branch and bound over option counts
   (`best_mix`), since a deployment has a handful of options.
3. Construction: deployments pick in order of *regret per accelerator* — how much more a
   deployment pays, per accelerator, to do without one of the hardware types of its best mix.
   Those with a single hardware type go first, then those that cannot do without one now;
   ties: larger replicas first (fewer fragments). Optionally, scarcity prices per (hardware,
   region) from subgradient steps on the capacity-free relaxation are added to list prices
   while choosing (deployments that save little on scarce hardware then keep off it).
4. Packing is best fit: the node of the right hardware with the fewest free accelerators that
   takes a replica group, through per-(hardware, region) buckets indexed by free count — O(1)
   per placement whatever the fleet's size; per-node caps respected.
5. Repair of the unserved: ejection chains (a holder of the capacity it lacks moves elsewhere,
   or displaces another), several holders stepping aside at once (those that lose least now
   first), and clearing the nodes nearest to fitting; a move is kept only if all are served.
6. Improvement while the total cost drops: each deployment alone, in pairs with holders of
   cheaper hardware, node clearing, and a large-neighbourhood search that rebuilds a
   deployment together with the holders of the hardware it would rather use.
7. Still unserved: lower-priority replicas on its nodes are evicted (`preempted` when they
   were running), the fewest nodes first; their deployments get what fits elsewhere.

Where it is cheap (small fleets) several constructions compete (with and without scarcity
prices, and "squeaky wheel" restarts that let the deployments left unserved pick first); the
plan with the fewest unserved deployments (highest priority first), then the lowest cost, wins.
Budgets are counted in work, not time: the same problem always gives the same plan.

Invariants of every plan: no node holds more than its free accelerators plus what its current
replicas held, every replica sits on one ready node of its option's hardware in an allowed
region, no deployment exceeds `max_replicas_per_node` on a node, and every deployment is
either served (Σ rps ≥ demand, count within bounds) or listed as unserved with a reason.
"""

from __future__ import annotations

import gc
import heapq
import json
import math
import random
import sys
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

FORMAT_VERSION = 1
NODE_STATES = ("ready", "cordoned", "draining", "down")
CENT = Decimal("0.01")
EPS = 1e-9  # rps and cost comparisons: demand 7.5 is met by 3 × 2.5 despite binary floats
INFINITY = math.inf
# Search budgets at effort 1.0, in deployments re-planned; they shrink as the problem grows, so
# a fleet-scale solve is construction plus light repair, and a small one searches hard.
IMPROVE_WORK = 12_000  # single, pair and clearing moves: this minus 3 per deployment…
IMPROVE_MIN = 300  # …but at least this
REBUILD_WORK = 12_000  # large-neighbourhood rebuilds: this minus 4 per deployment
NEIGHBOURHOOD = 14  # deployments rebuilt together at most
PRICE_STEPS = 30  # subgradient steps of the scarcity prices
# Constructions tried where there is budget: without scarcity prices, then with prices whose
# first step is this share of the mean list price (which works best varies by instance).
PRICE_RATES = (0.0, 0.1, 0.3, 1.0)


# --- Problem --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HardwareType:
    name: str
    price_per_hour: Decimal  # per accelerator


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    region: str
    zone: str
    hardware: str
    free_accelerators: int  # not counting what current replicas hold
    state: str = "ready"


@dataclass(frozen=True, slots=True)
class Option:
    """One replica shape: `accelerators` of `hardware` on one node serve `rps_per_replica`."""

    hardware: str
    accelerators: int
    rps_per_replica: float


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    demand_rps: float
    min_replicas: int
    max_replicas: int
    regions: tuple[str, ...]
    max_replicas_per_node: int
    priority: int
    options: tuple[Option, ...]


@dataclass(frozen=True, slots=True)
class Replica:
    deployment: str
    node: str
    hardware: str
    accelerators: int


@dataclass(frozen=True, slots=True)
class Problem:
    hardware: tuple[HardwareType, ...]
    nodes: tuple[Node, ...]
    deployments: tuple[Deployment, ...]
    current: tuple[Replica, ...] = ()


# --- Plan -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unserved:
    deployment: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChosenOption:
    option: Option
    replicas: int  # kept + new
    cost_per_hour: Decimal  # of these replicas


@dataclass(frozen=True, slots=True)
class Alternative:
    option: Option
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """Why a served deployment's replicas are what they are (DESIGN: PlacementDecision).

    Every replica of the deployment is explained by the `chosen` line of its option; nodes are
    picked best-fit (fewest free accelerators that still take the replica), spread over the
    zones of its regions where its option has room in more than one (`zones`: where its
    replicas run)."""

    deployment: str
    chosen: tuple[ChosenOption, ...]
    kept: int  # current replicas left where they were
    cost_per_hour: Decimal
    rejected: tuple[Alternative, ...]
    note: str = ""
    zones: tuple[str, ...] = ()


@dataclass(eq=False)
class Plan:
    """A solved placement. `decisions` are rendered on first access (they cost time at fleet scale).

    `_solver` is the fleet state the plan was read from; `add_deployment` / `remove_deployment`
    move it forward, after which only the plan they return can be used for the next call."""

    replicas: tuple[Replica, ...]
    preempted: tuple[Replica, ...]
    unserved: tuple[Unserved, ...]
    cost_per_hour: Decimal
    _solver: _Solver | None = field(default=None, repr=False)
    _generation: int = field(default=0, repr=False)
    _facts: tuple = field(default=(), repr=False)
    _decisions: tuple[Decision, ...] | None = field(default=None, repr=False)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        if self._decisions is None:
            self._decisions = tuple(decision for fact in self._facts
                                    if (decision := _render_decision(self._solver, fact)) is not None)
        return self._decisions


# --- Parsing --------------------------------------------------------------------------------


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}" if where else message)


def _check_keys(raw: dict, where: str, required: set[str], optional: set[str]) -> None:
    if not isinstance(raw, dict):
        raise _fail(where, f"expected an object, got {type(raw).__name__}")
    missing = sorted(required - raw.keys())
    if missing:
        raise _fail(where, f"missing {', '.join(repr(key) for key in missing)}")
    unknown = sorted(raw.keys() - required - optional)
    if unknown:
        raise _fail(where, f"unknown field {', '.join(repr(key) for key in unknown)} "
                           f"(known: {', '.join(sorted(required | optional))})")


def _text(raw: dict, key: str, where: str) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value:
        raise _fail(where, f"{key!r} must be a non-empty string, got {value!r}")
    return value


def _whole(raw: dict, key: str, where: str, *, minimum: int | None = None) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"{key!r} must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise _fail(where, f"{key!r} must be at least {minimum}, got {value}")
    return value


def _number(raw: dict, key: str, where: str, *, positive: bool = False) -> float:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, f"{key!r} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise _fail(where, f"{key!r} must be {'greater than 0' if positive else 'at least 0'}, got {value!r}")
    return float(value)


def _price(raw: dict, where: str) -> Decimal:
    value = raw["price_per_hour"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _fail(where, f"'price_per_hour' must be a decimal string such as \"2.95\", got {value!r}")
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise _fail(where, f"'price_per_hour' must be a decimal string such as \"2.95\", got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise _fail(where, f"'price_per_hour' must be a finite amount of at least 0, got {value!r}")
    return price


def parse_deployment(raw: dict, hardware_names: set[str] | frozenset[str], where: str = "deployment") -> Deployment:
    """One entry of `deployments` (also the argument of `add_deployment`)."""
    _check_keys(raw, where, {"id", "demand_rps", "min_replicas", "max_replicas", "regions", "options"},
                {"max_replicas_per_node", "priority"})
    ident = _text(raw, "id", where)
    where = f"{where} ({ident})"
    minimum = _whole(raw, "min_replicas", where, minimum=0)
    maximum = _whole(raw, "max_replicas", where, minimum=0)
    if minimum > maximum:
        raise _fail(where, f"min_replicas {minimum} > max_replicas {maximum}")
    regions = raw["regions"]
    if not isinstance(regions, list) or not regions or not all(isinstance(r, str) and r for r in regions):
        raise _fail(where, f"'regions' must be a non-empty list of region names, got {regions!r}")
    per_node = _whole(raw, "max_replicas_per_node", where, minimum=1) if "max_replicas_per_node" in raw \
        else max(maximum, 1)
    priority = _whole(raw, "priority", where) if "priority" in raw else 0
    options_raw = raw["options"]
    if not isinstance(options_raw, list) or not options_raw:
        raise _fail(where, f"'options' must be a non-empty list, got {options_raw!r}")
    options = []
    for index, option in enumerate(options_raw):
        at = f"{where}: options[{index}]"
        _check_keys(option, at, {"hardware", "accelerators", "rps_per_replica"}, set())
        name = _text(option, "hardware", at)
        if name not in hardware_names:
            raise _fail(at, f"unknown hardware {name!r} (the problem's hardware: {', '.join(sorted(hardware_names))})")
        shape = Option(name, _whole(option, "accelerators", at, minimum=1),
                       _number(option, "rps_per_replica", at, positive=True))
        twin = next((i for i, other in enumerate(options)
                     if (other.hardware, other.accelerators) == (shape.hardware, shape.accelerators)), None)
        if twin is not None:
            # A replica names only its hardware and accelerators: two such options could not be told apart.
            raise _fail(at, f"same hardware and accelerators as options[{twin}] ({name} × {shape.accelerators}); "
                            f"list each replica shape once")
        options.append(shape)
    return Deployment(ident, _number(raw, "demand_rps", where), minimum, maximum, tuple(dict.fromkeys(regions)),
                      per_node, priority, tuple(options))


def parse_problem(raw: dict) -> Problem:
    """A version-1 problem dict → `Problem`. Raises ValueError naming the first thing wrong."""
    if isinstance(raw, dict) and "version" in raw and (raw["version"] != FORMAT_VERSION
                                                       or isinstance(raw["version"], bool)):
        raise ValueError(f"'version' must be {FORMAT_VERSION}, got {raw['version']!r}")
    _check_keys(raw, "", {"version", "hardware", "nodes", "deployments"}, {"current"})
    for key in ("hardware", "nodes", "deployments", "current"):
        if not isinstance(raw.get(key, []), list):
            raise ValueError(f"{key!r} must be a list, got {type(raw[key]).__name__}")

    hardware = []
    for index, entry in enumerate(raw["hardware"]):
        where = f"hardware[{index}]"
        _check_keys(entry, where, {"name", "price_per_hour"}, set())
        hardware.append(HardwareType(_text(entry, "name", where), _price(entry, where)))
    names = [h.name for h in hardware]
    if len(set(names)) != len(names):
        raise ValueError(f"hardware: {_first_duplicate(names)!r} is listed twice")
    hardware_names = frozenset(names)

    nodes = []
    for index, entry in enumerate(raw["nodes"]):
        where = f"nodes[{index}]"
        _check_keys(entry, where, {"id", "region", "hardware", "free_accelerators"}, {"zone", "state"})
        ident = _text(entry, "id", where)
        where = f"{where} ({ident})"
        name = _text(entry, "hardware", where)
        if name not in hardware_names:
            raise _fail(where, f"unknown hardware {name!r} (the problem's hardware: {', '.join(sorted(hardware_names))})")
        state = entry.get("state", "ready")
        if state not in NODE_STATES:
            raise _fail(where, f"'state' must be one of {', '.join(NODE_STATES)}, got {state!r}")
        zone = _text(entry, "zone", where) if "zone" in entry else ""
        nodes.append(Node(ident, _text(entry, "region", where), zone, name,
                          _whole(entry, "free_accelerators", where, minimum=0), state))
    ids = [n.id for n in nodes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"nodes: node id {_first_duplicate(ids)!r} is listed twice")

    deployments = tuple(parse_deployment(entry, hardware_names, f"deployments[{index}]")
                        for index, entry in enumerate(raw["deployments"]))
    ids = [d.id for d in deployments]
    if len(set(ids)) != len(ids):
        raise ValueError(f"deployments: deployment id {_first_duplicate(ids)!r} is listed twice")

    node_by_id = {n.id: n for n in nodes}
    deployment_ids = set(ids)
    current = []
    for index, entry in enumerate(raw.get("current", [])):
        where = f"current[{index}]"
        _check_keys(entry, where, {"deployment", "node", "hardware", "accelerators"}, set())
        replica = Replica(_text(entry, "deployment", where), _text(entry, "node", where),
                          _text(entry, "hardware", where), _whole(entry, "accelerators", where, minimum=1))
        if replica.deployment not in deployment_ids:
            raise _fail(where, f"unknown deployment {replica.deployment!r}")
        node = node_by_id.get(replica.node)
        if node is None:
            raise _fail(where, f"unknown node {replica.node!r} (list a node that went away with "
                               f"\"state\": \"down\" so its replicas are moved)")
        if node.hardware != replica.hardware:
            raise _fail(where, f"hardware {replica.hardware!r} but node {node.id!r} is {node.hardware!r}")
        current.append(replica)
    return Problem(tuple(hardware), tuple(nodes), deployments, tuple(current))


def _first_duplicate(values: list[str]) -> str:
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return ""


def load_problem(text: str, source: str = "input") -> Problem:
    """Problem JSON text → `Problem`; ValueError (one line, naming `source`) when it is not valid."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not JSON: {error}") from None
    try:
        return parse_problem(raw)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


# --- Output ---------------------------------------------------------------------------------


def _money(amount: Decimal) -> str:
    # The one rounding of a plan's cost: to the cent, half up, when it is written out.
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def _replica_dict(replica: Replica) -> dict:
    return {"deployment": replica.deployment, "node": replica.node, "hardware": replica.hardware,
            "accelerators": replica.accelerators}


def _option_dict(option: Option) -> dict:
    return {"hardware": option.hardware, "accelerators": option.accelerators,
            "rps_per_replica": option.rps_per_replica}


def plan_to_dict(plan: Plan, *, explain: bool = False) -> dict:
    """DESIGN's output JSON; with `explain`, a `decisions` list is added."""
    out = {
        "version": FORMAT_VERSION,
        "replicas": [_replica_dict(r) for r in plan.replicas],
        "preempted": [_replica_dict(r) for r in plan.preempted],
        "unserved": [{"deployment": u.deployment, "reason": u.reason} for u in plan.unserved],
        "cost_per_hour": _money(plan.cost_per_hour),
    }
    if explain:
        out["decisions"] = [{
            "deployment": d.deployment,
            "cost_per_hour": _money(d.cost_per_hour),
            "kept": d.kept,
            "chosen": [{**_option_dict(c.option), "replicas": c.replicas, "cost_per_hour": _money(c.cost_per_hour)}
                       for c in d.chosen],
            "rejected": [{**_option_dict(a.option), "reason": a.reason} for a in d.rejected],
            **({"note": d.note} if d.note else {}),
            "zones": list(d.zones),
        } for d in plan.decisions]
    return out


# --- The replica mix: exact search over option counts ---------------------------------------


def best_mix(costs: list[float], rps: list[float], available: list[int], need_rps: float, min_count: int,
             max_count: int, accelerators: list[int] | None = None, groups: list[int] | None = None,
             budgets: list[int] | None = None) -> tuple[float, list[int]] | None:
    """The cheapest replica counts n[o]: Σ n·rps ≥ need_rps, min_count ≤ Σ n ≤ max_count,
    n[o] ≤ available[o], and (when given) Σ over options of group g of n·accelerators ≤ budgets[g]
    (options on the same hardware share its free accelerators); (cost, counts), or None.

    Branch and bound over options in order of cost per rps. The bound is the fractional cover
    of what is left by the remaining options; it only grows as fewer of the current (cheapest
    per rps) option are taken, which ends each loop early. Exact."""
    k = len(costs)
    counts = [0] * k
    if max_count < 0 or min_count > max_count:
        return None
    if need_rps <= EPS and min_count <= 0:
        return 0.0, counts
    order = sorted((o for o in range(k) if available[o] > 0), key=lambda o: (costs[o] / rps[o], costs[o], o))
    if not order:
        return None
    last = len(order) - 1
    best_cost = INFINITY
    best: list[int] | None = None
    spent = [0] * len(budgets) if budgets is not None else None

    def fractional(start: int, need: float) -> float:
        cost = 0.0
        for o in order[start:]:
            if need <= EPS:
                return cost
            take = min(available[o] * rps[o], need)
            cost += take * costs[o] / rps[o]
            need -= take
        return cost if need <= EPS else INFINITY

    def search(i: int, need: float, used: int, cost: float) -> None:
        nonlocal best_cost, best
        o = order[i]
        c, r = costs[o], rps[o]
        limit = available[o]
        if spent is not None:
            limit = min(limit, (budgets[groups[o]] - spent[groups[o]]) // accelerators[o])
        if i == last:
            n = max(math.ceil(need / r - EPS) if need > EPS else 0, min_count - used)
            if n <= limit and used + n <= max_count and cost + n * c < best_cost - EPS:
                best_cost = cost + n * c
                counts[o] = n
                best = counts.copy()
                counts[o] = 0
            return
        enough = math.ceil(need / r - EPS) if need > EPS else 0
        for n in range(min(limit, max_count - used, max(enough, min_count - used)), -1, -1):
            rest = need - n * r
            if cost + n * c + fractional(i + 1, rest) >= best_cost - EPS:
                if rest > EPS:
                    break  # fewer of the cheapest-per-rps option can only cost more
                continue
            counts[o] = n
            if spent is not None:
                spent[groups[o]] += n * accelerators[o]
            search(i + 1, rest, used + n, cost + n * c)
            if spent is not None:
                spent[groups[o]] -= n * accelerators[o]
        counts[o] = 0

    search(0, need_rps, 0, 0.0)
    return None if best is None else (best_cost, best)


# --- The solver's state ---------------------------------------------------------------------


class _Pool:
    """Ready nodes of one hardware type in one zone, bucketed by free accelerators (a zone lies in
    one region; nodes without a zone form one zone per region)."""

    __slots__ = ("hardware", "region", "zone", "buckets", "top", "free", "holders")

    def __init__(self, hardware: str, region: str, zone: int):
        self.hardware = hardware
        self.region = region
        self.zone = zone  # index into _Solver.zone_names
        self.buckets: list[dict[int, None]] = []  # buckets[f]: ordered set of node indices with f free
        self.top = 0
        self.free = 0  # Σ free accelerators of its nodes
        self.holders: dict[int, int] = {}  # deployment index → accelerators of new replicas here


class _Dep:
    """One deployment's working state."""

    __slots__ = ("spec", "index", "costs", "choice", "rps", "accs", "hws", "pools", "groups", "shared", "kept", "placed",
                 "on_node", "zones", "spreads", "spreading", "served", "ideal", "regret", "block", "tier", "reason",
                 "avail_seen", "note", "summary", "dropped")

    def __init__(self, spec: Deployment, index: int, solver: _Solver):
        self.spec = spec
        self.index = index
        self.accs = [o.accelerators for o in spec.options]
        self.rps = [o.rps_per_replica for o in spec.options]
        self.hws = [o.hardware for o in spec.options]
        self.costs = [o.accelerators * solver.price[o.hardware] for o in spec.options]
        self.choice = self.costs  # what a mix is chosen by: the price, plus scarcity while constructing
        self.pools = [[pool for region in spec.regions for pool in solver.region_pools.get((o.hardware, region), ())]
                      for o in spec.options]
        hardware = list(dict.fromkeys(self.hws))
        self.groups = [hardware.index(h) for h in self.hws]  # options on one hardware share its capacity
        self.shared = len(hardware) < len(self.hws)
        self.kept: list[tuple[int, int, Replica]] = []  # (node, option, the current replica)
        self.placed: list[tuple[int, int, int]] = []  # (node, option, count) new replicas
        self.on_node: dict[int, int] = {}
        self.zones: dict[int, int] = {}  # zone index → replicas of d there (kept and new)
        # An option spreads when its pools lie in more than one zone (one pool per zone and hardware).
        self.spreads = [solver.spread and len(pools) > 1 for pools in self.pools]
        self.spreading = True  # off for one `_serve` attempt when spreading left a mix unpacked
        self.served = False
        self.ideal = 0.0  # cost of the cheapest mix for the remaining need, capacity aside
        self.regret = 0.0
        self.block = 0  # accelerators of the largest replica of its best mix (larger blocks pack first)
        # 2: every usable option is on one hardware type (it has no alternative at all);
        # 1: it could not do without one of its hardware types when last asked; 0: it could.
        self.tier = 2 if len({self.hws[o] for o, pools in enumerate(self.pools) if pools}) <= 1 else 0
        self.avail_seen: list[int] | None = None  # availability when the mix was chosen (for decisions)
        self.note = ""
        self.summary: tuple | None = None  # cached (replicas, fact) for plans; None when changed
        self.reason: str | None = None  # why it is unserved, as of its last planning
        self.dropped: list[tuple[Replica, str]] = []  # current replicas it no longer runs, and why

    # Totals over kept and new replicas.
    def count(self) -> int:
        return len(self.kept) + sum(n for _, _, n in self.placed)

    def rps_total(self) -> float:
        return sum(self.rps[o] for _, o, _ in self.kept) + sum(self.rps[o] * n for _, o, n in self.placed)

    def new_cost(self) -> float:
        return sum(self.costs[o] * n for _, o, n in self.placed)

    def is_served(self) -> bool:
        count = self.count()
        spec = self.spec
        return self.rps_total() >= spec.demand_rps - EPS and spec.min_replicas <= count <= spec.max_replicas


class _Solver:
    def __init__(self, problem: Problem, *, effort: float = 1.0, boost: dict[int, int] | None = None,
                 spread: bool = True):
        self.problem = problem
        self.spread = spread  # spread each deployment's replicas over zones (`_pack_spread`)
        self.effort = effort
        self.boost = boost or {}  # deployment index → rounds it ended unserved (it picks earlier)
        self.price = {h.name: float(h.price_per_hour) for h in problem.hardware}
        self.price_exact = {h.name: h.price_per_hour for h in problem.hardware}
        nodes = problem.nodes
        self.nodes = nodes
        self.node_index = {n.id: i for i, n in enumerate(nodes)}
        self.free = [n.free_accelerators for n in nodes]
        self.ready = [n.state == "ready" for n in nodes]
        held = [0] * len(nodes)
        for replica in problem.current:
            held[self.node_index[replica.node]] += replica.accelerators
        self.capacity = [n.free_accelerators + h for n, h in zip(nodes, held, strict=True)]  # static
        zones: dict[tuple[str, str], int] = {}
        self.zone_of = [zones.setdefault((n.region, n.zone), len(zones)) for n in nodes]
        self.zone_names = [zone or region for region, zone in zones]
        self.pools: dict[tuple[str, int], _Pool] = {}  # (hardware, zone index) → pool
        self.region_pools: dict[tuple[str, str], list[_Pool]] = {}  # (hardware, region) → its zones' pools
        self.pool_of: list[_Pool | None] = [None] * len(nodes)
        for i, node in enumerate(nodes):
            if not self.ready[i]:
                continue
            pool = self.pools.get((node.hardware, self.zone_of[i]))
            if pool is None:
                pool = self.pools[(node.hardware, self.zone_of[i])] = _Pool(node.hardware, node.region, self.zone_of[i])
                self.region_pools.setdefault((node.hardware, node.region), []).append(pool)
            self.pool_of[i] = pool
            pool.top = max(pool.top, node.free_accelerators + held[i])
        for pool in self.pools.values():
            pool.buckets = [{} for _ in range(pool.top + 1)]
        for i, pool in enumerate(self.pool_of):
            if pool is not None:
                pool.buckets[self.free[i]][i] = None
                pool.free += self.free[i]
        self.used = {h.name: 0 for h in problem.hardware}  # accelerators held by planned replicas
        self.deps = [_Dep(spec, i, self) for i, spec in enumerate(problem.deployments)]
        self.dep_by_id = {d.spec.id: d for d in self.deps}
        self.preempted: list[Replica] = []
        self.generation = 0
        self.incremental = False  # set by add/remove: every replica of the last plan then counts as running
        self.kept_count = len(problem.current)  # an upper bound, to skip a scan when nothing is kept
        self.work = 0  # mix searches done in the improvement phase (the effort budget counts them)

    # -- capacity bookkeeping

    def _take(self, node: int, accelerators: int) -> None:
        pool = self.pool_of[node]
        f = self.free[node]
        del pool.buckets[f][node]
        f -= accelerators
        pool.buckets[f][node] = None
        pool.free -= accelerators
        self.free[node] = f

    def _give(self, node: int, accelerators: int) -> None:
        pool = self.pool_of[node]
        f = self.free[node]
        if pool is None:  # a node that is not ready: what it frees is not offered to anyone
            self.free[node] = f + accelerators
            return
        del pool.buckets[f][node]
        f += accelerators
        pool.buckets[f][node] = None
        pool.free += accelerators
        self.free[node] = f

    def _put(self, d: _Dep, node: int, o: int, n: int) -> None:
        accelerators = d.accs[o] * n
        self._take(node, accelerators)
        on, zones, zone = d.on_node, d.zones, self.zone_of[node]  # `_count`, inline: the hot path
        on[node] = on.get(node, 0) + n
        zones[zone] = zones.get(zone, 0) + n
        d.placed.append((node, o, n))
        pool = self.pool_of[node]
        pool.holders[d.index] = pool.holders.get(d.index, 0) + accelerators
        self.used[d.hws[o]] += accelerators
        d.summary = None

    def _release(self, d: _Dep, start: int = 0) -> list[tuple[int, int, int]]:
        """Take back d's new replicas (from its `start`-th placement on); returns them, so
        `_restore` can put them back."""
        placed = d.placed[start:]
        for node, o, n in placed:
            accelerators = d.accs[o] * n
            self._give(node, accelerators)
            self._count(d, node, -n)
            pool = self.pool_of[node]
            held = pool.holders[d.index] - accelerators
            if held:
                pool.holders[d.index] = held
            else:
                del pool.holders[d.index]
            self.used[d.hws[o]] -= accelerators
        d.placed = d.placed[:start]
        d.summary = None
        return placed

    def _restore(self, d: _Dep, placed: list[tuple[int, int, int]], served: bool, avail_seen) -> None:
        for node, o, n in placed:
            self._put(d, node, o, n)
        d.served = served
        d.avail_seen = avail_seen

    def _count(self, d: _Dep, node: int, n: int) -> None:
        """d has n more (or, negative, fewer) replicas on `node` (and in its zone)."""
        left = d.on_node.get(node, 0) + n
        if left:
            d.on_node[node] = left
        else:
            del d.on_node[node]
        zone = self.zone_of[node]
        left = d.zones.get(zone, 0) + n
        if left:
            d.zones[zone] = left
        else:
            del d.zones[zone]

    def _keep(self, d: _Dep, node: int, o: int, replica: Replica) -> None:
        d.kept.append((node, o, replica))
        self._count(d, node, 1)
        self.used[replica.hardware] += replica.accelerators
        d.summary = None

    def _unkeep(self, d: _Dep, entry: tuple[int, int, Replica]) -> None:
        node, _, replica = entry
        d.kept.remove(entry)
        self._count(d, node, -1)
        self._give(node, replica.accelerators)
        self.used[replica.hardware] -= replica.accelerators
        d.summary = None

    # -- availability and the mix

    def _available(self, d: _Dep, o: int) -> int:
        """Replicas of option o that fit in free capacity now, alone (per-node cap included)."""
        a = d.accs[o]
        cap = d.spec.max_replicas_per_node
        total = 0
        for pool in d.pools[o]:
            if pool.free < a:
                continue  # not one replica fits on any of its nodes
            if a == 1 and cap >= pool.top:
                total += pool.free  # every free accelerator takes a replica
                continue
            buckets = pool.buckets
            for f in range(a, pool.top + 1):
                if buckets[f]:
                    total += len(buckets[f]) * min(f // a, cap)
        if d.on_node:  # nodes where d already runs replicas take fewer more
            pools = d.pools[o]
            for node, here in d.on_node.items():
                if self.pool_of[node] in pools:
                    f = self.free[node]
                    total -= min(f // a, cap) - min(f // a, max(0, cap - here))
        return total

    def _budgets(self, d: _Dep) -> list[int]:
        """Free accelerators per hardware of d's options, over d's regions."""
        budgets = [0] * (max(d.groups) + 1)
        seen = set()
        for o, pools in enumerate(d.pools):
            g = d.groups[o]
            for pool in pools:
                if id(pool) in seen:
                    continue
                seen.add(id(pool))
                budgets[g] += pool.free
        return budgets

    def _remaining(self, d: _Dep) -> tuple[float, int, int]:
        spec = d.spec
        count = d.count()
        return spec.demand_rps - d.rps_total(), spec.min_replicas - count, spec.max_replicas - count

    def _mix(self, d: _Dep, available: list[int]) -> tuple[float, list[int]] | None:
        need, low, high = self._remaining(d)
        return best_mix(d.choice, d.rps, available, need, low, high)

    def _regret(self, d: _Dep) -> float:
        """Regret per accelerator (see the module docstring): the most d would pay extra, per
        accelerator, to do without one of the hardware types of its best mix; INFINITY when d has no
        alternative, -INFINITY when nothing fits now."""
        available = [self._available(d, o) for o in range(len(d.accs))]
        first = self._mix(d, available)
        if first is None:
            return -INFINITY
        cost, counts = first
        d.block = max((d.accs[o] for o, n in enumerate(counts) if n), default=0)
        per_hardware: dict[str, int] = {}
        for o, n in enumerate(counts):
            if n:
                per_hardware[d.hws[o]] = per_hardware.get(d.hws[o], 0) + n * d.accs[o]
        if not per_hardware:
            return INFINITY  # nothing to place (kept replicas suffice)
        # The density that matters is that of the hardware d would miss most per accelerator
        # (when the cheap hardware is nearly gone, the mix holds more of the fallback than of it).
        regret = -INFINITY
        for hardware, accelerators in per_hardware.items():
            second = self._mix(d, [0 if d.hws[o] == hardware else a for o, a in enumerate(available)])
            if second is None:
                return INFINITY
            regret = max(regret, (second[0] - cost) / accelerators)
        return regret

    def _ideal(self, d: _Dep) -> float:
        need, low, high = self._remaining(d)
        static = [high if pools else 0 for pools in d.pools]
        found = best_mix(d.costs, d.rps, static, need, low, high)
        return found[0] if found else INFINITY

    # -- packing

    def _pack(self, d: _Dep, o: int, k: int) -> int:
        """Place up to k replicas of option o best-fit; returns how many were placed."""
        if d.spreading and d.spreads[o]:
            return self._pack_spread(d, o, k)
        a = d.accs[o]
        cap = d.spec.max_replicas_per_node
        on = d.on_node
        placed = 0
        pools = d.pools[o]
        while k > 0:
            want = min(k, cap)
            need = want * a
            choice = None  # (takes all `want`, -free or free, node, n)
            for pool in pools:
                found = _fit(pool, a, want, need, cap, on)
                if found is None:
                    continue
                n, f, node = found
                # Prefer a node that takes the whole group, the tightest such; else the most replicas.
                key = (0, f) if n == want else (1, -n, f)
                if choice is None or key < choice[0]:
                    choice = (key, node, n)
            if choice is None:
                return placed
            _, node, n = choice
            self._put(d, node, o, n)
            placed += n
            k -= n
        return placed

    def _pack_spread(self, d: _Dep, o: int, k: int) -> int:
        """Place up to k replicas of option o over the zones of its pools, so one zone's failure
        takes as few of d's replicas as possible: each group goes to the zone with the fewest
        replicas of d that has room for one (ties: the tighter fit), and is as large as brings
        that zone up to the level all zones with room would share; best fit within the zone.

        Every node of one hardware type costs the same, so spreading never changes what a
        replica costs; what it can cost is packing (a zone's tightest node instead of the
        fleet's), which `_serve` undoes when it leaves the mix unpacked."""
        a = d.accs[o]
        cap = d.spec.max_replicas_per_node
        on, zones = d.on_node, d.zones
        placed = 0
        while k > 0:
            best = None  # (replicas of d in the zone, free on its tightest fit for one) of the pick
            pool = None
            total = rooms = 0
            for candidate in d.pools[o]:
                found = _fit(candidate, a, 1, a, cap, on)
                if found is None:
                    continue
                here = zones.get(candidate.zone, 0)
                rooms += 1
                total += here
                if best is None or (here, found[1]) < best:
                    best, pool = (here, found[1]), candidate
            if pool is None:
                return placed
            level = -(-(k + total) // rooms)  # ceil: each zone's count once all with room are level
            want = max(1, min(k, cap, level - best[0]))
            n, _, node = _fit(pool, a, want, want * a, cap, on)  # a node there takes at least one
            self._put(d, node, o, n)
            placed += n
            k -= n
        return placed

    def _serve(self, d: _Dep) -> bool:
        """Give d the new replicas it still needs, cheapest mix first; all or nothing (what d
        already had stays, whatever happens).

        The availability of an option is counted as if it were alone; when options share
        hardware or fragments, a pack can fall short. Then what each option really got is a
        new upper bound for it, and the mix is chosen again from scratch."""
        d.reason = None
        d.spreading = True
        k = len(d.accs)
        start = len(d.placed)
        learned = [INFINITY] * k
        order = sorted(range(k), key=lambda o: -d.accs[o])  # pack the largest replicas first
        for _ in range(8):
            need, low, high = self._remaining(d)
            if need <= EPS and low <= 0 and high >= 0:
                d.served = True
                return True
            available = [min(self._available(d, o), learned[o]) for o in range(k)]
            if d.shared:
                found = best_mix(d.choice, d.rps, available, need, low, high, d.accs, d.groups, self._budgets(d))
            else:
                found = best_mix(d.choice, d.rps, available, need, low, high)
            if found is None:
                break
            d.avail_seen = available
            counts = found[1]
            short = []
            for o in order:
                n = counts[o]
                if n:
                    got = self._pack(d, o, n)
                    if got < n:
                        short.append((o, got))
            if not short:
                d.served = True
                return True
            self._release(d, start)
            if d.spreading and any(d.spreads[o] for o, _ in short):
                d.spreading = False  # the same mix again, plain best fit: spreading never costs service
                continue
            for o, got in short:
                learned[o] = got
        self._release(d, start)
        d.served = d.is_served()
        return d.served

    def _serve_replacing_kept(self, d: _Dep) -> bool:
        """When d cannot be served around its current replicas (e.g. max_replicas reached with
        slow ones), try again from scratch: its current replicas move (they are not preempted)."""
        if self._serve(d):
            return True
        if not d.kept:
            return False
        kept = list(d.kept)
        for entry in kept:
            self._unkeep(d, entry)
        if self._serve(d):
            why = "replaced: the current replicas could not serve the demand within max_replicas"
            d.dropped.extend((replica, why) for _, _, replica in kept)
            return True
        for node, o, replica in kept:
            self._take(node, replica.accelerators)
            self._keep(d, node, o, replica)
        d.served = False
        return False

    # -- a full solve

    def solve(self, *, price_rate: float = 0.0) -> None:
        self._keep_current()
        deps = self.deps
        if price_rate:
            scarcity = self._scarcity_prices(deps, price_rate)
            for d in deps:
                d.choice = [d.costs[o] + d.accs[o] * min((scarcity[id(p)] for p in pools), default=0.0)
                            for o, pools in enumerate(d.pools)]
        self._construct(deps)
        for d in deps:
            d.choice = d.costs
        for d in deps:
            if not d.served and not self._repair(d) and not self._repair_together(d):
                self._repair_evicting(d)
        self._improve(deps)
        self._rebuild_neighbourhoods(deps)
        for d in deps:
            if not d.served:
                self._serve_replacing_kept(d)
        # Capacity is short: the highest priority goes first, evicting lower-priority replicas.
        by_priority = sorted(deps, key=lambda d: (-d.spec.priority, d.index))
        for d in by_priority:
            if not d.served:
                self._serve_preempting(d)
        # A victim that could not be served elsewhere gave up all it held: others may fit now.
        for d in by_priority:
            if not d.served:
                self._serve_replacing_kept(d)

    def _scarcity_prices(self, deps: list[_Dep], first_step: float) -> dict[int, float]:
        """A price per accelerator for each pool, on top of the list price, from subgradient steps
        on the capacity-free relaxation: while deployments' cheapest mixes ask a pool for more
        than it has free, its price rises (and falls back while it has room). Deployments that
        save little on scarce hardware then choose something else from the start."""
        pools = list(self.pools.values())
        free = {id(p): p.free for p in pools}
        scarcity = {id(p): 0.0 for p in pools}
        reference = sum(self.price.values()) / max(len(self.price), 1)
        work = [(d, *self._remaining(d)) for d in deps]
        for step in range(PRICE_STEPS):
            asked = dict.fromkeys(scarcity, 0.0)
            for d, need, low, high in work:
                if need <= EPS and low <= 0:
                    continue
                where = []
                choice = []
                for o, options_pools in enumerate(d.pools):
                    if not options_pools:
                        where.append(None)
                        choice.append(d.costs[o])
                        continue
                    cheapest = min(scarcity[id(p)] for p in options_pools)
                    tied = [p for p in options_pools if scarcity[id(p)] <= cheapest + 1e-12]
                    where.append(tied)
                    choice.append(d.costs[o] + d.accs[o] * cheapest)
                found = best_mix(choice, d.rps, [high if w else 0 for w in where], need, low, high)
                if found is None:
                    continue
                for o, n in enumerate(found[1]):
                    if n:
                        total = sum(free[id(p)] for p in where[o]) or 1
                        for p in where[o]:  # spread over tied pools by their free capacity
                            asked[id(p)] += n * d.accs[o] * (free[id(p)] or 1) / total
            rate = first_step / (1 + step / 4)
            for key, demand in asked.items():
                excess = (demand - free[key]) / max(free[key], 1)
                scarcity[key] = max(0.0, scarcity[key] + rate * reference * max(-1.0, min(1.0, excess)))
        return scarcity

    def _keep_current(self) -> None:
        """Current replicas on ready nodes stay, except those their deployment no longer needs."""
        for replica in self.problem.current:
            d = self.dep_by_id[replica.deployment]
            node = self.node_index[replica.node]
            option = next((o for o, opt in enumerate(d.spec.options)
                           if opt.hardware == replica.hardware and opt.accelerators == replica.accelerators), None)
            region_allowed = self.nodes[node].region in d.spec.regions
            crowded = d.on_node.get(node, 0) >= d.spec.max_replicas_per_node
            if not self.ready[node] or option is None or not region_allowed or crowded:
                # Its node is not ready, its region is no longer allowed, or its shape is no
                # longer an option: it moves, and what it held is given back to the node.
                self.free[node] += replica.accelerators
                d.dropped.append((replica, f"its node is {self.nodes[node].state}" if not self.ready[node]
                                  else "its region is no longer allowed" if not region_allowed
                                  else "its shape is no longer one of the deployment's options" if option is None
                                  else "above max_replicas_per_node on its node"))
                continue
            d.kept.append((node, option, replica))
            self._count(d, node, 1)
            self.used[replica.hardware] += replica.accelerators
        for d in self.deps:
            self._trim(d)
        # Nodes' free counts changed above; re-bucket the pools once.
        for pool in self.pools.values():
            pool.free = 0
            for bucket in pool.buckets:
                bucket.clear()
        for i, pool in enumerate(self.pool_of):
            if pool is not None:
                pool.buckets[self.free[i]][i] = None
                pool.free += self.free[i]

    def _trim(self, d: _Dep) -> None:
        """Drop d's kept replicas beyond max_replicas, then any whose rps d does not need, dearest first."""
        if not d.kept:
            return
        spec = d.spec
        surplus = sorted(d.kept, key=lambda e: (-d.costs[e[1]], d.rps[e[1]]))
        rps = sum(d.rps[o] for _, o, _ in d.kept)
        count = len(d.kept)
        for entry in surplus:
            node, o, replica = entry
            if count > spec.max_replicas or (count - 1 >= spec.min_replicas
                                             and rps - d.rps[o] >= spec.demand_rps - EPS):
                d.kept.remove(entry)
                self._count(d, node, -1)
                self.free[node] += replica.accelerators
                self.used[replica.hardware] -= replica.accelerators
                d.dropped.append((replica, "not needed: the others serve the demand" if count <= spec.max_replicas
                                  else "above max_replicas"))
                count -= 1
                rps -= d.rps[o]

    def _construct(self, deps: list[_Dep], noise: random.Random | None = None) -> None:
        """Serve `deps` in order of regret per accelerator (ties: larger replicas first, so
        fragments are left by the small ones); `noise` perturbs the regrets by up to ±25 %."""
        boost = self.boost
        jitter = (lambda: 1.0 + noise.uniform(-0.25, 0.25)) if noise is not None else (lambda: 1.0)

        def key(d: _Dep) -> tuple:
            d.regret = self._regret(d)
            if d.tier != 2:
                d.tier = 1 if d.regret == INFINITY else 0
            return -boost.get(d.index, 0), -d.tier, -d.regret * jitter(), -d.block

        heap = []
        for d in deps:
            d.ideal = self._ideal(d)
            heap.append((*key(d), d.index, d))
        heapq.heapify(heap)
        rechecked: set[int] = set()
        while heap:
            entry = heapq.heappop(heap)
            d = entry[-1]
            if heap and d.index not in rechecked:
                # Regrets change as capacity is taken: check d's once more before it picks (lazily).
                rechecked.add(d.index)
                fresh = key(d)
                if fresh > heap[0][:4]:
                    heapq.heappush(heap, (*fresh, d.index, d))
                    continue
            self._serve(d)

    def _holders(self, d: _Dep, options) -> list[_Dep]:
        """Deployments (other than d) holding new replicas in the pools of d's `options`."""
        found: dict[int, None] = {}
        for o in options:
            for pool in d.pools[o]:
                for index in pool.holders:
                    found[index] = None
        deps = self.deps
        return [deps[i] for i in found if i != d.index]

    @staticmethod
    def _flexibility(d: _Dep) -> tuple:
        """Sort key, most flexible first: the lower its tier and regret, the easier d moves
        (a regret of -INFINITY means nothing fitted when it was last asked: not flexible)."""
        return d.tier, d.regret if d.regret > -INFINITY else INFINITY, d.index

    def _lacking(self, d: _Dep) -> list[int]:
        """d's options that could not cover its remaining need alone with the capacity free now
        (the holders worth moving are in their pools)."""
        need, low, high = self._remaining(d)
        lacking = [o for o in range(len(d.accs))
                   if self._available(d, o) < min(high, max(low, math.ceil(max(need, 0.0) / d.rps[o] - EPS)))]
        return lacking or list(range(len(d.accs)))

    def _repair(self, d: _Dep, depth: int = 2, chain: frozenset[int] = frozenset()) -> bool:
        """d is unserved: an ejection chain. A holder B of capacity d could use steps aside, d
        is served, and B is served again elsewhere — or, `depth` allowing, B in turn displaces
        one of its own holders. Kept only if everyone is served; otherwise all is as it was."""
        if d.served:
            return True
        limit = max(3, int((10 if depth > 1 else 6) * self.effort))
        chain = chain | {d.index}
        holders = [b for b in self._holders(d, self._lacking(d)) if b.index not in chain]
        holders.sort(key=self._flexibility)
        for other in holders[:limit]:
            saved, avail = self._release(other), other.avail_seen
            other.served = other.is_served()
            self.work += 1
            if self._serve(d):
                if self._serve(other) or (depth > 1 and self._repair(other, depth - 1, chain)):
                    return True
                self._release(d)
                d.served = d.is_served()
            self._release(other)
            self._restore(other, saved, True, avail)
        return False

    def _displacement(self, b: _Dep, banned: set[int]) -> float:
        """What moving all of b's new replicas out of the `banned` pools would cost it extra now
        (INFINITY when it could not be served without them)."""
        need = b.spec.demand_rps - sum(b.rps[o] for _, o, _ in b.kept)
        low = b.spec.min_replicas - len(b.kept)
        high = b.spec.max_replicas - len(b.kept)
        available = [0 if any(id(p) in banned for p in b.pools[o]) else self._available(b, o)
                     for o in range(len(b.accs))]
        found = best_mix(b.costs, b.rps, available, need, low, high)
        return INFINITY if found is None else found[0] - b.new_cost()

    def _repair_together(self, d: _Dep) -> bool:
        """d is unserved and no single holder frees enough: holders step aside one by one (those
        that lose least by going elsewhere now, first) until d can be served, then each is served
        again wherever it fits. Kept only if everyone is served."""
        if d.served:
            return True
        lacking = self._lacking(d)
        banned = {id(p) for o in lacking for p in d.pools[o]}
        ranked = []
        for b in self._holders(d, lacking):
            cost = self._displacement(b, banned)
            if cost < INFINITY:
                ranked.append((cost, b.index, b))
        self.work += len(ranked) // 8
        ranked.sort()
        limit = max(8, int(48 * self.effort))
        aside: list[tuple[_Dep, list, list | None]] = []
        for _, _, other in ranked[:limit]:
            aside.append((other, self._release(other), other.avail_seen))
            other.served = other.is_served()
            self.work += 1
            if not self._serve(d):
                continue
            back = sorted((b for b, _, _ in aside), key=self._flexibility, reverse=True)
            if all(self._serve(b) or self._repair(b, 1, frozenset({d.index})) for b in back):
                return True
            for b in back:
                self._release(b)
                b.served = b.is_served()
            self._release(d)
            d.served = d.is_served()
            break  # d took what it needed and the others did not fit around it: give up
        for b, saved, avail in reversed(aside):
            self._restore(b, saved, True, avail)
        return False

    def _repair_evicting(self, d: _Dep) -> bool:
        """d is unserved though capacity may exist in fragments: clear nodes for it (see `_clear_and_serve`)."""
        if d.served:
            return False
        return self._clear_and_serve(d, range(len(d.accs)), max(16, int(64 * self.effort)), improve=False)

    def _clear_and_serve(self, d: _Dep, options, node_limit: int, *, improve: bool) -> bool:
        """Take the new replicas of others off the nodes of d's `options` nearest to fitting a
        full group of d (at most `node_limit` per option), serve d, put back every evicted
        replica that still fits on its node, and plan again the deployments left short.

        Kept only if everyone is served and, with `improve`, the total cost of those involved
        drops; otherwise everything is as it was."""
        occupants: dict[int, list[tuple[_Dep, tuple[int, int, int]]]] = {}
        for other in self._holders(d, options):
            for entry in other.placed:
                occupants.setdefault(entry[0], []).append((other, entry))
        need, _, _ = self._remaining(d) if not d.placed else (d.spec.demand_rps - sum(
            d.rps[o] for _, o, _ in d.kept), 0, 0)
        chosen: dict[int, None] = {}
        cap = d.spec.max_replicas_per_node
        for o in options:
            a = d.accs[o]
            group = a * min(cap, max(1, math.ceil(need / d.rps[o] - EPS)))
            nodes = [node for pool in d.pools[o] for bucket in pool.buckets for node in bucket
                     if node in occupants and self.free[node] < group and self.capacity[node] >= a]
            # Nearest to fitting a whole group first: the least to evict.
            nodes.sort(key=lambda node: (max(0, group - self.free[node]), node))
            chosen.update(dict.fromkeys(nodes[:node_limit]))
        victims = [(other, entry) for node in chosen for other, entry in occupants[node]]
        self.work += len(occupants) // 32  # the scan above
        if not victims:
            return False
        touched = {other.index: other for other, _ in victims}
        touched.pop(d.index, None)
        before = d.new_cost() + sum(other.new_cost() for other in touched.values())
        snapshot = {other.index: (list(other.placed), other.avail_seen) for other in (*touched.values(), d)}
        self._release(d)
        for other, entry in victims:
            if other is not d:
                self._evict(other, "placed", entry)
        self.work += 1 + len(touched)
        if self._serve(d):
            for other, entry in victims:
                node, o, n = entry
                if other is not d and self.free[node] >= other.accs[o] * n and \
                        other.on_node.get(node, 0) + n <= other.spec.max_replicas_per_node:
                    self._put(other, node, o, n)
            if all(self._serve(other) for other in sorted(touched.values(), key=self._flexibility, reverse=True)):
                after = d.new_cost() + sum(other.new_cost() for other in touched.values())
                if not improve or after < before - 1e-6:
                    return True
        for other in (*touched.values(), d):
            self._release(other)
        for index, (placed, avail) in snapshot.items():
            dep = self.deps[index]
            self._restore(dep, placed, bool(placed) or dep.is_served(), avail)
        if not improve:
            d.served = d.is_served()
        return False

    def _improve(self, deps: list[_Dep]) -> None:
        """Move deployments off dear options while the total cost drops (single and pair moves)."""
        budget = int(self.effort * max(IMPROVE_MIN, IMPROVE_WORK - 3 * len(deps)))
        self.work = 0
        for _ in range(4):
            improved = False
            candidates = sorted((d for d in deps if d.served and d.placed and d.new_cost() > d.ideal + 1e-6),
                                key=lambda d: (d.ideal - d.new_cost(), d.index))
            for d in candidates:
                if self.work > budget:
                    return
                if self._try_alone(d) or self._try_pairs(d) or self._try_clearing(d):
                    improved = True
            if not improved:
                return

    def _rebuild_neighbourhoods(self, deps: list[_Dep]) -> None:
        """Large-neighbourhood search: a deployment paying more than its ideal mix, with every
        holder of the hardware it would rather use, is taken off and served again in regret
        order (then with seeded noise on the regrets, for other orders); a rebuild is kept only
        if all of them are served and their total cost drops. Deterministic for a given problem."""
        rebuilds = int(self.effort * max(0, REBUILD_WORK - 4 * len(deps)))
        if rebuilds <= 0:
            return
        rng = random.Random(len(deps))
        stale = 0
        tries: dict[int, int] = {}
        while rebuilds > 0 and stale < 3:
            candidates = sorted((d for d in deps if d.served and d.placed and d.new_cost() > d.ideal + 1e-6
                                 and tries.get(d.index, 0) < 6), key=lambda d: (d.ideal - d.new_cost(), d.index))
            if not candidates:
                return
            improved = False
            for d in candidates:
                if rebuilds <= 0:
                    return
                attempt = tries.get(d.index, 0)
                tries[d.index] = attempt + 1
                rate = d.new_cost() / max(sum(d.rps[o] * n for _, o, n in d.placed), EPS)
                better = [o for o in range(len(d.accs)) if d.costs[o] / d.rps[o] < rate - 1e-9]
                group = [d, *self._holders(d, better)]
                if len(group) > NEIGHBOURHOOD:
                    group = [d, *rng.sample(group[1:], NEIGHBOURHOOD - 1)]
                rebuilds -= len(group)
                # First the deployment in focus picks, the others fit around it; then plain
                # regret order; then regret order with noise.
                if self._rebuild(group, rng if attempt > 1 else None, focus_first=attempt == 0):
                    improved = True
            stale = 0 if improved else stale + 1

    def _rebuild(self, group: list[_Dep], noise: random.Random | None, focus_first: bool) -> bool:
        """Take `group` off and serve it again; kept only if all are served and their total
        cost drops. With `focus_first`, its first member picks first and the others put back
        every replica that still fits where it was, topping up what they lack; otherwise all
        are served again in regret order."""
        before = sum(d.new_cost() for d in group)
        snapshot = [(d, d.placed, d.avail_seen, d.regret) for d in group]
        for d in group:
            self._release(d)
            d.served = d.is_served()
        if focus_first:
            if self._serve(group[0]):
                others = sorted(snapshot[1:], key=lambda entry: self._flexibility(entry[0]), reverse=True)
                for d, placed, _, _ in others:
                    self._refit(d, placed)
                for d, _, _, _ in others:
                    self._serve(d)
        else:
            self._construct(group, noise)
        if all(d.served for d in group) and sum(d.new_cost() for d in group) < before - 1e-6:
            return True
        for d in group:
            self._release(d)
        for d, placed, avail, regret in snapshot:
            self._restore(d, placed, True, avail)
            d.regret = regret
        return False

    def _refit(self, d: _Dep, placed: list[tuple[int, int, int]]) -> None:
        """Put back as many of d's former replicas as still fit on their nodes, up to its need."""
        cap = d.spec.max_replicas_per_node
        for node, o, n in placed:
            need, _, high = self._remaining(d)
            if need <= EPS or high <= 0:
                return
            fits = min(n, self.free[node] // d.accs[o], cap - d.on_node.get(node, 0), high)
            if fits > 0:
                self._put(d, node, o, fits)

    def _try_alone(self, d: _Dep) -> bool:
        before = d.new_cost()
        saved, saved_avail = self._release(d), d.avail_seen
        self.work += 1
        if self._serve(d) and d.new_cost() < before - 1e-6:
            return True
        self._release(d)
        self._restore(d, saved, True, saved_avail)
        return False

    def _try_clearing(self, d: _Dep) -> bool:
        """d pays more than its ideal mix: clear a few nodes of the options cheaper per rps than
        what it pays now (the fragments of the cheap hardware may be in others' way)."""
        rate = d.new_cost() / max(sum(d.rps[o] * n for _, o, n in d.placed), EPS)
        better = [o for o in range(len(d.accs)) if d.costs[o] / d.rps[o] < rate - 1e-9]
        if not better:
            return False
        need = d.spec.demand_rps - sum(d.rps[o] for _, o, _ in d.kept)
        cap = d.spec.max_replicas_per_node
        nodes = max(math.ceil(math.ceil(need / d.rps[o] - EPS) / cap) for o in better) + 1
        return self._clear_and_serve(d, better, min(nodes, max(2, int(8 * self.effort))), improve=True)

    def _try_pairs(self, d: _Dep) -> bool:
        """d pays more than its ideal mix: let each holder B of the hardware d would rather use
        step aside, serve d first and B after; keep the first pair that costs less in total."""
        current = d.new_cost()
        # Options cheaper per rps than what d pays on average now.
        rate = current / max(sum(d.rps[o] * n for _, o, n in d.placed), EPS)
        better = [o for o in range(len(d.accs)) if d.costs[o] / d.rps[o] < rate - 1e-9]
        if not better:
            return False
        holders = sorted(self._holders(d, better), key=self._flexibility)
        limit = max(3, int(12 * self.effort))
        for other in holders[:limit]:
            if not other.served or not other.placed:
                continue
            before = current + other.new_cost()
            saved_d, avail_d = self._release(d), d.avail_seen
            saved_o, avail_o = self._release(other), other.avail_seen
            self.work += 2
            if self._serve(d) and self._serve(other) and d.new_cost() + other.new_cost() < before - 1e-6:
                return True
            self._release(d)
            self._release(other)
            self._restore(other, saved_o, True, avail_o)
            self._restore(d, saved_d, True, avail_d)
        return False

    # -- preemption

    def _serve_preempting(self, d: _Dep) -> bool:
        """Serve d by evicting lower-priority replicas: from the nodes of d's pools that give the
        most room, in doubling batches, until d fits; then every evicted replica that still fits
        goes back onto its node, a running one that does not is preempted, and a deployment left
        short is planned again (topped up) wherever it fits. If d cannot be served even so,
        nothing changes."""
        priority = d.spec.priority
        pools = {id(pool) for option_pools in d.pools for pool in option_pools}
        on_node: dict[int, list[tuple[_Dep, str, tuple]]] = {}
        candidates = {i: self.deps[i] for option_pools in d.pools for pool in option_pools for i in pool.holders}
        if self.kept_count:
            candidates.update({other.index: other for other in self.deps if other is not None and other.kept})
        for other in candidates.values():
            if other.spec.priority >= priority:
                continue
            for entry in other.kept:
                if id(self.pool_of[entry[0]]) in pools:
                    on_node.setdefault(entry[0], []).append((other, "kept", entry))
            for entry in other.placed:
                if id(self.pool_of[entry[0]]) in pools:
                    on_node.setdefault(entry[0], []).append((other, "placed", entry))
        if not on_node:
            return False

        def room(node: int) -> int:
            return self.free[node] + sum(other.accs[entry[1]] * (1 if kind == "kept" else entry[2])
                                         for other, kind, entry in on_node[node])

        nodes = sorted(on_node, key=lambda node: (-room(node), node))
        evicted: list[tuple[_Dep, str, tuple]] = []
        batch, done = 1, 0
        served = False
        while done < len(nodes):
            for node in nodes[done:done + batch]:
                for victim in on_node[node]:
                    self._evict(*victim)
                    evicted.append(victim)
            done += batch
            batch *= 2
            if self._serve_replacing_kept(d):
                served = True
                break
        if not served:
            for victim in reversed(evicted):
                self._readmit(*victim)
            return False
        short: dict[int, _Dep] = {}
        # Highest priority first back where it was, while its node has room.
        for other, kind, entry in sorted(evicted, key=lambda v: -v[0].spec.priority):
            node, o = entry[0], entry[1]
            n = 1 if kind == "kept" else entry[2]
            if self.free[node] >= other.accs[o] * n and \
                    other.on_node.get(node, 0) + n <= other.spec.max_replicas_per_node:
                self._readmit(other, kind, entry)
                continue
            if kind == "kept":
                self.preempted.append(entry[2])
            elif self.incremental:  # the previous plan's replicas are running: this one is preempted
                option = other.spec.options[o]
                self.preempted.extend([Replica(other.spec.id, self.nodes[node].id, option.hardware,
                                               option.accelerators)] * n)
            other.note = f"replicas preempted by higher-priority {d.spec.id}"
            short[other.index] = other
        for other in sorted(short.values(), key=lambda b: (-b.spec.priority, b.index)):
            if not self.incremental:
                self._release(other)  # nothing of it runs yet: plan it again from scratch
            other.served = other.is_served()
            if not other.served:
                self._serve(other)
        return True

    def _evict(self, d: _Dep, kind: str, entry) -> None:
        if kind == "kept":
            self._unkeep(d, entry)
            return
        placed = list(d.placed)
        placed.remove(entry)
        self._release(d)
        for node, o, n in placed:
            self._put(d, node, o, n)

    def _readmit(self, d: _Dep, kind: str, entry) -> None:
        if kind == "kept":
            node, o, replica = entry
            self._take(node, replica.accelerators)
            self._keep(d, node, o, replica)
        else:
            self._put(d, *entry)

    # -- incremental

    def add(self, spec: Deployment) -> None:
        self.incremental = True
        d = _Dep(spec, len(self.deps), self)
        self.deps.append(d)
        self.dep_by_id[spec.id] = d
        d.ideal = self._ideal(d)
        # Preemption plans its victims again itself; nobody else is touched.
        if not self._serve(d):
            self._serve_preempting(d)

    def remove(self, deployment_id: str) -> None:
        self.incremental = True
        d = self.dep_by_id.pop(deployment_id)
        self._release(d)
        for entry in list(d.kept):
            self._unkeep(d, entry)
        self.deps[d.index] = None  # indices of the others stay valid
        self._reserve_victims()

    def _reserve_victims(self) -> None:
        """Deployments short of replicas (preempted, or unserved before) get what fits now,
        highest priority first, without moving anyone."""
        waiting = sorted((d for d in self.deps if d is not None and not d.served),
                         key=lambda d: (-d.spec.priority, d.index))
        for d in waiting:
            self._serve(d)

    # -- the plan

    def score(self) -> tuple:
        """Smaller is better: unserved deployments counted per priority, highest first, then cost."""
        levels = sorted({d.spec.priority for d in self.deps}, reverse=True)
        unserved = [sum(1 for d in self.deps if d.spec.priority == level and not d.served) for level in levels]
        return (*unserved, sum(self.price[h] * n for h, n in self.used.items()))

    def plan(self) -> Plan:
        self.generation += 1
        replicas: list[Replica] = []
        facts = []
        unserved = []
        for d in self.deps:
            if d is None:
                continue
            if d.summary is None:
                d.summary = (self._replicas_of(d), self._fact(d))
            # An unserved deployment keeps the replicas it runs (they still serve part of its
            # demand) and gets no new ones.
            replicas.extend(d.summary[0])
            if d.served:
                facts.append(d.summary[1])
            else:
                if d.reason is None:
                    d.reason = self._reason(d)
                unserved.append(Unserved(d.spec.id, d.reason))
        cost = sum((self.price_exact[h] * n for h, n in self.used.items() if n), Decimal(0))
        return Plan(tuple(replicas), tuple(self.preempted), tuple(unserved), cost, self, self.generation,
                    tuple(facts))

    def _replicas_of(self, d: _Dep) -> tuple[Replica, ...]:
        out = [replica for _, _, replica in d.kept]
        ident = d.spec.id
        nodes = self.nodes
        for node, o, n in d.placed:
            option = d.spec.options[o]
            replica = Replica(ident, nodes[node].id, option.hardware, option.accelerators)
            out.extend([replica] * n)
        return tuple(out)

    def _fact(self, d: _Dep) -> tuple:
        counts = [0] * len(d.accs)
        for _, o, _ in d.kept:
            counts[o] += 1
        for _, o, n in d.placed:
            counts[o] += n
        notes = [d.note] if d.note else []
        why: dict[str, list[str]] = {}
        for replica, reason in d.dropped:
            why.setdefault(reason, []).append(replica.node)
        notes += [f"{_count(len(nodes), 'current replica')} removed ({', '.join(sorted(set(nodes)))}): {reason}"
                  for reason, nodes in why.items()]
        return (d, tuple(counts), len(d.kept), tuple(d.avail_seen) if d.avail_seen else None, "; ".join(notes),
                tuple(d.on_node))

    # -- reasons

    def _reason(self, d: _Dep) -> str:
        spec = d.spec
        regions = ", ".join(spec.regions)
        hardware = ", ".join(dict.fromkeys(d.hws))
        if not any(d.pools):
            return f"no ready node of any option's hardware ({hardware}) in {regions}"
        sizes = [max((pool.top for pool in pools), default=0) for pools in d.pools]
        if any(sizes) and all(d.accs[o] > sizes[o] for o in range(len(d.accs))):
            largest = ", ".join(f"{d.hws[o]}: {sizes[o]}" for o in range(len(d.accs)) if d.pools[o])
            return (f"every option needs more accelerators on one node than any ready node of its hardware in "
                    f"{regions} can offer (most on one node: {largest})")
        best_rps = max(d.rps)
        if spec.max_replicas * best_rps < spec.demand_rps - EPS:
            return (f"needs {_rps(spec.demand_rps)} rps but max_replicas {spec.max_replicas} × "
                    f"{_rps(best_rps)} rps (the fastest option) serves {_rps(spec.max_replicas * best_rps)}")
        eligible = {node for o, pools in enumerate(d.pools) for pool in pools for bucket in pool.buckets
                    for node in bucket if self.capacity[node] >= d.accs[o]}
        if eligible and spec.min_replicas > spec.max_replicas_per_node * len(eligible):
            return (f"min_replicas {spec.min_replicas} > max_replicas_per_node × eligible nodes "
                    f"({spec.max_replicas_per_node} × {len(eligible)})")
        available = [self._available(d, o) for o in range(len(d.accs))]
        higher = sorted({self.deps[i].spec.id for pools in d.pools for pool in pools for i in pool.holders
                         if self.deps[i] is not None and self.deps[i].spec.priority > spec.priority})
        by_whom = (f" (capacity held by higher-priority {', '.join(higher[:3])}{' …' if len(higher) > 3 else ''})"
                   if higher else "")
        if not d.kept and not any(available):
            return f"no capacity for any option in {regions}{by_whom}"
        fits = self._largest_fit(d)
        if fits < spec.demand_rps - EPS:
            return f"needs {_rps(spec.demand_rps)} rps; the largest plan that fits serves {_rps(fits)}{by_whom}"
        return (f"min_replicas {spec.min_replicas} replicas do not fit with max_replicas_per_node "
                f"{spec.max_replicas_per_node} in the capacity left")

    def _largest_fit(self, d: _Dep) -> float:
        """rps of the largest plan that fits now: fastest options first, packed, then taken back."""
        saved, saved_avail, served = self._release(d), d.avail_seen, d.served
        budget = d.spec.max_replicas - len(d.kept)
        for o in sorted(range(len(d.accs)), key=lambda o: -d.rps[o]):
            if budget <= 0:
                break
            budget -= self._pack(d, o, budget)
        fits = d.rps_total()
        self._release(d)
        self._restore(d, saved, served, saved_avail)
        return fits


def _fit(pool: _Pool, a: int, want: int, need: int, cap: int, on: dict[int, int]):
    """Best-fit node in `pool` for up to `want` (≤ cap) replicas of `a` accelerators: (n, free, node) or None.

    First the node with the fewest free accelerators that takes all `want` (of those, one where
    the deployment has no replica yet); failing that, the one with the most free that takes at
    least one."""
    if pool.free < a:
        return None  # no node of the pool has room for one
    buckets = pool.buckets
    top = pool.top
    for f in range(need, top + 1):
        # Among equally tight nodes, one without d's replicas first (spread over nodes at no cost).
        crowded = None
        for node in buckets[f]:
            here = on.get(node, 0)
            if not here:
                return want, f, node
            if crowded is None and cap - here >= want:
                crowded = node
        if crowded is not None:
            return want, f, crowded
    for f in range(min(need - 1, top), a - 1, -1):
        for node in buckets[f]:
            allowed = cap - on.get(node, 0)
            if allowed > 0:
                return min(f // a, allowed), f, node
    for f in range(need, top + 1):  # nodes skipped above because d already has replicas there
        for node in buckets[f]:
            allowed = cap - on.get(node, 0)
            if allowed > 0:
                return min(allowed, want), f, node
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _rps(value: float) -> str:
    return repr(round(value, 2))


def _render_decision(solver: _Solver, fact: tuple) -> Decision | None:
    d, counts, kept, available, note, nodes = fact
    zones = tuple(sorted({solver.zone_names[solver.zone_of[node]] for node in nodes}))
    spec = d.spec
    prices = solver.price_exact
    chosen = tuple(ChosenOption(option, n, prices[option.hardware] * option.accelerators * n)
                   for option, n in zip(spec.options, counts, strict=True) if n)
    if not chosen and spec.demand_rps <= EPS:
        return Decision(spec.id, (), 0, Decimal(0), (), note or "no demand: no replicas", zones)
    total = sum((c.cost_per_hour for c in chosen), Decimal(0))
    regions = ", ".join(spec.regions)
    chosen_cost = float(total)
    rejected = []
    for o, option in enumerate(spec.options):
        if counts[o]:
            continue
        where = f"{option.hardware} in {regions}"
        if not d.pools[o]:
            reason = f"no ready {option.hardware} node in {regions}"
        elif 0 < (most := max(pool.top for pool in d.pools[o])) < option.accelerators:
            reason = (f"needs {option.accelerators} accelerators on one node; the most a {option.hardware} node "
                      f"in {regions} offers is {most}")
        else:
            alone = best_mix([d.costs[o]], [d.rps[o]], [spec.max_replicas], spec.demand_rps, spec.min_replicas,
                             spec.max_replicas)
            if alone is None:
                reason = f"max_replicas {spec.max_replicas} of it cannot serve {_rps(spec.demand_rps)} rps"
            else:
                replicas = alone[1][0]
                alone_cost = alone[0]
                fits = available[o] if available is not None else None
                if alone_cost < chosen_cost - 1e-6 and fits is not None and fits < replicas:
                    reason = (f"cheaper (${alone_cost:.2f}/h for {_count(replicas, 'replica')}) but "
                              + (f"no free capacity for it in {where}" if fits == 0 else
                                 f"capacity for only {fits} in {where}"))
                elif alone_cost < chosen_cost - 1e-6:
                    reason = f"cheaper alone (${alone_cost:.2f}/h) but its capacity went to other deployments"
                else:
                    reason = f"{_count(replicas, 'replica')} would cost ${alone_cost:.2f}/h (chosen: ${chosen_cost:.2f}/h)"
        rejected.append(Alternative(option, reason))
    rejected.sort(key=lambda a: a.option.accelerators * prices[a.option.hardware] / Decimal(str(a.option.rps_per_replica)))
    if not note and kept and kept == sum(counts):
        note = "current replicas kept: they serve the demand"
    return Decision(spec.id, chosen, kept, total, tuple(rejected[:3]), note, zones)


# --- Public entry points --------------------------------------------------------------------


# Restarts cost a whole construction each; they are spent where it is cheap (small fleets).
RESTART_WORK = 3_000  # deployments × extra constructions: none at fleet scale, a dozen on small fleets
MAX_RESTARTS = 4  # constructions per variant, at most
# The most a plan that spreads replicas over zones may cost above the same plan packed without
# spreading, as a share of the latter's cost, where both are made (docs/placement.md).
SPREAD_PREMIUM = 0.005


def solve(problem: Problem, *, effort: float = 1.0) -> Plan:
    """Plan the whole problem. `effort` scales the search budgets (1.0: the default).

    Where it is cheap (small fleets), several constructions compete — by regret alone, and with
    scarcity prices of a few step sizes — and a construction that leaves a deployment unserved runs again with the
    deployments that ended unserved picking first ("squeaky wheel"). The best plan wins:
    fewest unserved, highest priority first, then cost. At fleet scale: one construction, and
    one restart if it left anyone unserved.

    Replicas are spread over zones (`_Solver._pack_spread`). Spreading packs less tightly, so
    the same is also planned without it where it is cheap (small fleets) or where the spread
    plan left a deployment unserved; the plan without spreading wins if it serves more, or
    costs more than SPREAD_PREMIUM less."""
    spare = int(RESTART_WORK * effort / max(len(problem.deployments), 1))  # extra constructions allowed
    spread = _best_construction(problem, effort, spare, spread=True)
    if not any(any(d.spreads) for d in spread.deps):
        return spread.plan()  # one zone per region: nothing was spread
    if spare >= len(PRICE_RATES) - 1 or not all(d.served for d in spread.deps):
        plain = _best_construction(problem, effort, spare, spread=False)
        spread_score, plain_score = spread.score(), plain.score()
        if plain_score[:-1] != spread_score[:-1]:
            if plain_score[:-1] < spread_score[:-1]:
                return plain.plan()
        elif plain_score[-1] * (1 + SPREAD_PREMIUM) < spread_score[-1] - EPS:
            return plain.plan()
    return spread.plan()


def _best_construction(problem: Problem, effort: float, spare: int, *, spread: bool) -> _Solver:
    best, best_score = None, None
    for rate in PRICE_RATES if spare >= len(PRICE_RATES) - 1 else PRICE_RATES[:1]:
        boost: dict[int, int] = {}
        previous: list[int] | None = None
        # One restart at least if anyone ends unserved; more while that changes who does.
        for _ in range(max(2, min(MAX_RESTARTS, spare // len(PRICE_RATES)))):
            solver = _Solver(problem, effort=effort, boost=dict(boost), spread=spread)
            solver.solve(price_rate=rate)
            score = solver.score()
            if best_score is None or score < best_score:
                best, best_score = solver, score
            unserved = [d.index for d in solver.deps if not d.served]
            if not unserved or unserved == previous:
                break
            previous = unserved
            for index in unserved:
                boost[index] = boost.get(index, 0) + 1
    return best


def _solver_of(plan: Plan) -> _Solver:
    solver = plan._solver
    if solver is None:
        raise ValueError("this plan carries no fleet state (it was not made by solve)")
    if plan._generation != solver.generation:
        raise ValueError("this plan is stale: the fleet state has moved on; use the plan the last call returned")
    return solver


def add_deployment(plan: Plan, deployment: Deployment | dict) -> Plan:
    """Place one more deployment on the fleet of `plan` without moving anyone else's replicas
    (lower-priority replicas may be preempted, and their deployments get what fits elsewhere)."""
    solver = _solver_of(plan)
    if isinstance(deployment, dict):
        deployment = parse_deployment(deployment, frozenset(solver.price))
    if deployment.id in solver.dep_by_id:
        raise ValueError(f"deployment {deployment.id!r} is already placed; remove it first")
    unknown = [o.hardware for o in deployment.options if o.hardware not in solver.price]
    if unknown:
        raise ValueError(f"deployment {deployment.id!r}: unknown hardware {unknown[0]!r}")
    solver.preempted = []
    solver.add(deployment)
    return solver.plan()


def remove_deployment(plan: Plan, deployment_id: str) -> Plan:
    """Take one deployment's replicas off the fleet of `plan`; deployments that were short of
    capacity get what fits in the space freed. No other replica moves."""
    solver = _solver_of(plan)
    if deployment_id not in solver.dep_by_id:
        raise ValueError(f"no deployment {deployment_id!r} in this plan")
    solver.preempted = []
    solver.remove(deployment_id)
    return solver.plan()


# --- Defragmentation ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    """Move one running replica, make before break: start `to` (same deployment, possibly another
    of its options), and drain `replica` (one of the problem's `current`) once `to` serves."""

    replica: Replica
    to: Replica
    reason: str  # "defragmentation: …", for the deployment's timeline and the placement decision


def defragment(problem: Problem, max_moves: int, *, frozen: frozenset[str] | set[str] = frozenset()
               ) -> tuple[Move, ...]:
    """At most `max_moves` moves of current replicas, each of which strictly lowers
    `defragmentation_objective` (docs/placement.md, "Defragmentation"), chosen greedily: each
    move is the one that lowers it most. () when no move gains anything.

    Only replicas on ready nodes, of one of their deployment's options, in an allowed region, of
    deployments not in `frozen`, move. Every move keeps every constraint: the target node is ready,
    of the option's hardware, in an allowed region, has the accelerators free *before* any replica
    of this batch leaves its node (make before break: all new replicas can run beside all old
    ones), and the deployment stays within max_replicas_per_node there. A served deployment stays
    served (its rps never drops below its demand), a short one never loses rps, and no
    deployment's replicas end up in fewer zones or on fewer nodes than before (moves never undo
    spreading). A replica started by a move is not moved again in the same batch."""
    if max_moves <= 0:
        return ()
    state = _Defrag(problem, frozenset(frozen))
    moves: list[Move] = []
    while len(moves) < max_moves:
        found = state.best_move()
        if found is None:
            break
        moves.append(state.apply(found))
    return tuple(moves)


def defragmentation_objective(problem: Problem) -> tuple:
    """What defragmentation lowers, compared as a tuple (smaller is better), most important first:

    1. per priority level, highest first: (rps of the demand short deployments could not place in
       the free capacity now, replicas short of min_replicas likewise) — a greedy fastest-option-first
       packing of each short deployment alone, rps rounded to 1e-6;
    2. the cost per hour of the current replicas (exact);
    3. per priority level, highest first: minus how close the next replica of each short deployment
       is to fitting, Σ over them of the largest share of a replica's accelerators free on one
       node that could hold it (after what the packing above placed);
    4. minus the accelerators on ready nodes no current replica uses (whole nodes free);
    5. minus Σ over ready nodes of free accelerators squared (free capacity in fewer, larger blocks)."""
    return _Defrag(problem, frozenset()).objective()


def apply_moves(problem: Problem, moves: tuple[Move, ...] | list[Move]) -> Problem:
    """The problem once `moves` are done: each `replica` replaced by its `to` in `current`, and the
    nodes' free accelerators adjusted (the old node gets its accelerators back, the new one gives)."""
    current = list(problem.current)
    free = {node.id: node.free_accelerators for node in problem.nodes}
    for move in moves:
        current.remove(move.replica)
        current.append(move.to)
        free[move.replica.node] += move.replica.accelerators
        free[move.to.node] -= move.to.accelerators
    nodes = tuple(Node(n.id, n.region, n.zone, n.hardware, free[n.id], n.state) for n in problem.nodes)
    return Problem(problem.hardware, nodes, problem.deployments, tuple(current))


class _Defrag:
    """The fleet as `current` leaves it (every current replica kept: no trimming), and the terms of
    the objective, kept up to date as moves are tried and applied."""

    def __init__(self, problem: Problem, frozen: frozenset[str]):
        solver = self.solver = _Solver(problem)
        # (deployment index, node, option) → how many of d's equal replicas there may not move
        # (equal replicas are interchangeable: which one moves does not matter).
        self.pinned: dict[tuple[int, int, int], int] = {}
        for replica in problem.current:
            d = solver.dep_by_id[replica.deployment]
            node = solver.node_index[replica.node]
            o = next((i for i, option in enumerate(d.spec.options)
                      if (option.hardware, option.accelerators) == (replica.hardware, replica.accelerators)), None)
            if o is None:  # no longer a shape of the deployment: it holds its node and stays
                solver._count(d, node, 1)
                continue
            solver._keep(d, node, o, replica)
            if d.spec.id in frozen or not solver.ready[node] or solver.nodes[node].region not in d.spec.regions:
                self._pin(d, node, o)
        self.frozen = frozen
        self.sources: set[int] = set()  # nodes a move of this batch leaves: not targets (make before break)
        ready = [i for i, pool in enumerate(solver.pool_of) if pool is not None]
        self.squares = sum(solver.free[i] ** 2 for i in ready)
        self.whole = sum(solver.capacity[i] for i in ready if self._is_whole(i))
        self.levels = sorted({d.spec.priority for d in solver.deps}, reverse=True)
        # Short deployments, and which of them each pool concerns (moves touching it re-measure them).
        self.short = {d.index: self._shortfall(d) for d in solver.deps if self._is_short(d)}
        self.watchers: dict[int, list[int]] = {}
        for index in self.short:
            for pools in solver.deps[index].pools:
                for pool in pools:
                    self.watchers.setdefault(id(pool), []).append(index)

    # -- the objective

    def _is_whole(self, node: int) -> bool:
        return self.solver.free[node] == self.solver.capacity[node] > 0

    @staticmethod
    def _is_short(d: _Dep) -> bool:
        return d.rps_total() < d.spec.demand_rps - EPS or d.count() < d.spec.min_replicas

    def _shortfall(self, d: _Dep) -> tuple[float, int, float]:
        """(rps d cannot place now, replicas short of min_replicas it cannot place, closeness of its
        next replica) — packing it alone, fastest option first, then taking the packing back."""
        solver = self.solver
        need = d.spec.demand_rps - d.rps_total()
        missing = d.spec.min_replicas - d.count()
        budget = d.spec.max_replicas - d.count()
        if need <= EPS and missing <= 0:
            return 0.0, 0, 0.0
        d.spreading = False  # what fits, not where: plain best fit
        for o in sorted(range(len(d.accs)), key=lambda o: (-d.rps[o], d.costs[o])):
            if budget <= 0 or (need <= EPS and missing <= 0):
                break
            got = solver._pack(d, o, min(budget, max(math.ceil(max(need, 0.0) / d.rps[o] - EPS), missing)))
            need -= got * d.rps[o]
            missing -= got
            budget -= got
        closeness = 0.0
        if budget > 0 and (need > EPS or missing > 0):
            for o, pools in enumerate(d.pools):
                a = d.accs[o]
                for pool in pools:
                    if pool.top < a:
                        continue  # no node of this pool could ever hold it
                    most = next((f for f in range(pool.top, -1, -1) if pool.buckets[f]), 0)
                    closeness = max(closeness, min(most, a) / a)
        solver._release(d)
        d.spreading = True
        return max(need, 0.0), max(missing, 0), closeness

    def objective(self, short: dict | None = None, squares: int | None = None, whole: int | None = None) -> tuple:
        short = self.short if short is None else short
        deps = self.solver.deps
        shortfalls, closeness = [], []
        for level in self.levels:
            values = [value for index, value in short.items() if deps[index].spec.priority == level]
            shortfalls.append((round(sum(v[0] for v in values), 6), sum(v[1] for v in values)))
            closeness.append(-round(sum(v[2] for v in values), 6))
        prices = self.solver.price_exact
        cost = sum((prices[h] * n for h, n in self.solver.used.items() if n), Decimal(0))
        return (*shortfalls, cost, *closeness, -(self.whole if whole is None else whole),
                -(self.squares if squares is None else squares))

    # -- moves

    def _pin(self, d: _Dep, node: int, o: int) -> None:
        key = (d.index, node, o)
        self.pinned[key] = self.pinned.get(key, 0) + 1

    def _movable(self, d: _Dep) -> list[tuple[int, int, Replica]]:
        """d's kept entries that may move, one per (node, option)."""
        entries: dict[tuple[int, int], list] = {}
        for entry in d.kept:
            entries.setdefault(entry[:2], []).append(entry)
        return [same[0] for (node, o), same in entries.items() if len(same) > self.pinned.get((d.index, node, o), 0)]

    def _target(self, d: _Dep, source: int, pool: _Pool, o: int) -> int | None:
        """The tightest node of `pool` that may take d's replica of option o moved from `source`, or None."""
        solver = self.solver
        on = d.on_node
        zone = solver.zone_of[source]
        if pool.zone != zone and d.zones[zone] == 1 and d.zones.get(pool.zone, 0):
            return None  # d would lose a zone
        alone = on[source] == 1  # then a node without d, or d would lose a node
        cap = d.spec.max_replicas_per_node
        a = d.accs[o]
        sources = self.sources
        for f in range(a, pool.top + 1):
            for node in pool.buckets[f]:
                if node == source or node in sources:
                    continue
                here = on.get(node, 0)
                if here and (alone or here + 1 > cap):
                    continue
                return node
        return None

    def _shift(self, d: _Dep, entry: tuple[int, int, Replica], node: int, o: int
               ) -> tuple[tuple[int, int, Replica], int, int]:
        """Move `entry` of d to (node, option o); returns the new entry and the changes of the
        squares and whole-node terms."""
        solver = self.solver
        source = entry[0]
        before = [(n, solver.free[n], self._is_whole(n)) for n in (source, node)]
        solver._unkeep(d, entry)
        solver._take(node, d.accs[o])
        option = d.spec.options[o]
        new = (node, o, Replica(d.spec.id, solver.nodes[node].id, option.hardware, option.accelerators))
        solver._keep(d, node, o, new[2])
        squares = sum(solver.free[n] ** 2 - f ** 2 for n, f, _ in before)
        whole = sum(solver.capacity[n] * (self._is_whole(n) - was) for n, _, was in before)
        return new, squares, whole

    def _undo(self, d: _Dep, new: tuple[int, int, Replica], entry: tuple[int, int, Replica]) -> None:
        solver = self.solver
        solver._unkeep(d, new)
        solver._take(entry[0], entry[2].accelerators)
        solver._keep(d, entry[0], entry[1], entry[2])

    def _remeasured(self, d: _Dep, nodes: tuple[int, int]) -> dict:
        """The short deployments' shortfalls with the state as it is now (those the two nodes'
        pools concern, and d itself, measured again)."""
        short = self.short
        touched = {index for node in nodes for index in self.watchers.get(id(self.solver.pool_of[node]), ())}
        if d.index in short:
            touched.add(d.index)
        if not touched:
            return short
        return {**short, **{index: self._shortfall(self.solver.deps[index]) for index in touched}}

    def best_move(self) -> tuple | None:
        """(objective after, d, entry, target node, option) of the move that lowers the objective
        most; None when none lowers it."""
        solver = self.solver
        base = self.objective()
        best = None
        for d in solver.deps:
            if d.spec.id in self.frozen:
                continue
            rps, demand = d.rps_total(), d.spec.demand_rps
            for entry in self._movable(d):
                source, o1, _ = entry
                for o2 in range(len(d.accs)):
                    # Without short deployments only a move that costs no more can gain anything.
                    if not self.short and d.costs[o2] > d.costs[o1] + 1e-9:
                        continue
                    if rps - d.rps[o1] + d.rps[o2] < min(demand, rps) - EPS:
                        continue  # d would no longer be served, or would lose rps while short
                    for pool in d.pools[o2]:
                        node = self._target(d, source, pool, o2)
                        if node is None:
                            continue
                        new, squares, whole = self._shift(d, entry, node, o2)
                        short = self._remeasured(d, (source, node))
                        value = self.objective(short, self.squares + squares, self.whole + whole)
                        self._undo(d, new, entry)
                        if value < base and (best is None or value < best[0]):
                            best = (value, d, entry, node, o2)
        return best

    def apply(self, found: tuple) -> Move:
        value, d, entry, node, o = found
        before = self.objective()
        source = entry[0]
        new, squares, whole = self._shift(d, entry, node, o)
        self.squares += squares
        self.whole += whole
        self._pin(d, node, o)  # the new replica is not running yet: not moved again in this batch
        self.sources.add(source)
        previous = self.short
        self.short = self._remeasured(d, (source, node))
        return Move(entry[2], new[2], self._reason(before, value, previous, d, entry, new))

    def _reason(self, before: tuple, after: tuple, previous: dict, d: _Dep, entry, new) -> str:
        """Names the most important term the move lowered."""
        solver = self.solver
        source, node = entry[0], new[0]
        old_replica, new_replica = entry[2], new[2]
        term = next(i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y)
        levels = len(self.levels)
        helped = sorted(solver.deps[i].spec.id for i, value in self.short.items()
                        if value != previous.get(i) and i != d.index)
        whom = ", ".join(helped[:3]) + (" …" if len(helped) > 3 else "")
        if term < levels:
            return f"defragmentation: makes room for {whom or d.spec.id} (capacity it could not use before)"
        if term == levels:
            saved = before[levels] - after[levels]
            return (f"defragmentation: {old_replica.accelerators} × {old_replica.hardware} → "
                    f"{new_replica.accelerators} × {new_replica.hardware} costs ${_money(saved)}/h less")
        if term <= 2 * levels:
            return f"defragmentation: frees accelerators on {solver.nodes[source].id} toward a replica of {whom}"
        if term == 2 * levels + 1:
            return f"defragmentation: empties node {solver.nodes[source].id} ({solver.capacity[source]} accelerators)"
        return (f"defragmentation: packs {old_replica.hardware} tighter ({solver.nodes[source].id} → "
                f"{solver.nodes[node].id}; {solver.nodes[source].id} now has {solver.free[source]} free)")


def main(argv: list[str] | None = None) -> int:
    """`python -m scheduler.placement FILE [--explain]`: the same output as `manage.py solve_placement`,
    without Django's start-up."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m scheduler.placement",
                                     description="Solve a placement problem (DESIGN.md format); prints the plan JSON.")
    parser.add_argument("file", help="problem JSON file, or - for stdin")
    parser.add_argument("--explain", action="store_true", help="add the decisions behind every replica")
    args = parser.parse_args(argv)
    # A one-shot command: parsing and solving allocate hundreds of thousands of small objects and
    # no garbage worth collecting before the process ends, so the cyclic collector (a quarter
    # of a fleet-scale run, walking them again and again) stays off.
    gc.disable()
    try:
        plan = solve(read_problem_file(args.file))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # json.dumps, not json.dump: only the former uses the C encoder for the whole document.
    sys.stdout.write(json.dumps(plan_to_dict(plan, explain=args.explain)) + "\n")
    return 0


def read_problem_file(path: str) -> Problem:
    """Read and parse a problem file (`-`: stdin); ValueError with a one-line message otherwise."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    return load_problem(text, "stdin" if path == "-" else path)


if __name__ == "__main__":
    sys.exit(main())
