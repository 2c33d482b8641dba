"""The placement solver (scheduler/placement.py) and `manage.py solve_placement`: the contract of
DESIGN.md "File formats → Placement problem", bad inputs, and properties on random small fleets."""

import copy
import itertools
import json
import math
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from scheduler.placement import (
    add_deployment,
    apply_moves,
    best_mix,
    defragment,
    defragmentation_objective,
    load_problem,
    parse_problem,
    plan_to_dict,
    remove_deployment,
    solve,
)

DESIGN_EXAMPLE = {
    "version": 1,
    "hardware": [{"name": "h100-80gb", "price_per_hour": "2.95"},
                 {"name": "l40s-48gb", "price_per_hour": "1.10"}],
    "nodes": [{"id": "eu1-a-0001", "region": "eu-north1", "zone": "eu-north1-a",
               "hardware": "h100-80gb", "free_accelerators": 8},
              {"id": "eu1-b-0007", "region": "eu-north1", "zone": "eu-north1-b",
               "hardware": "l40s-48gb", "free_accelerators": 4}],
    "deployments": [{
        "id": "dep-1", "demand_rps": 7.5, "min_replicas": 1, "max_replicas": 40,
        "regions": ["eu-north1"], "max_replicas_per_node": 2, "priority": 0,
        "options": [
            {"hardware": "h100-80gb", "accelerators": 1, "rps_per_replica": 4.0},
            {"hardware": "l40s-48gb", "accelerators": 2, "rps_per_replica": 1.6},
        ],
    }],
    "current": [],
}
DESIGN_OUTPUT = {
    "version": 1,
    "replicas": [{"deployment": "dep-1", "node": "eu1-a-0001", "hardware": "h100-80gb", "accelerators": 1},
                 {"deployment": "dep-1", "node": "eu1-a-0001", "hardware": "h100-80gb", "accelerators": 1}],
    "preempted": [],
    "unserved": [],
    "cost_per_hour": "5.90",
}


def _problem(nodes, deployments, current=(), hardware=(("h100", "4.50"), ("l40s", "1.80"))):
    return {"version": 1, "hardware": [{"name": n, "price_per_hour": p} for n, p in hardware],
            "nodes": list(nodes), "deployments": list(deployments), "current": list(current)}


def _node(ident, hardware="l40s", free=8, region="eu", **extra):
    return {"id": ident, "region": region, "zone": f"{region}-a", "hardware": hardware, "free_accelerators": free,
            **extra}


def _deployment(ident, demand, options, *, regions=("eu",), minimum=1, maximum=10, per_node=8, priority=0):
    return {"id": ident, "demand_rps": demand, "min_replicas": minimum, "max_replicas": maximum,
            "regions": list(regions), "max_replicas_per_node": per_node, "priority": priority,
            "options": [{"hardware": h, "accelerators": a, "rps_per_replica": r} for h, a, r in options]}


def _solve(raw):
    return plan_to_dict(solve(parse_problem(raw)))


def _replica(deployment, node, hardware="l40s", accelerators=1):
    return {"deployment": deployment, "node": node, "hardware": hardware, "accelerators": accelerators}


# --- The contract ---------------------------------------------------------------------------------


def test_the_design_example_round_trips():
    assert _solve(DESIGN_EXAMPLE) == DESIGN_OUTPUT


def test_the_cheapest_mix_may_combine_options():
    # 5 rps: one h100 (4 rps, 4.50) + one l40s (1 rps, 1.80) = 6.30 beats two h100 (9.00) or five l40s (9.00).
    raw = _problem([_node("a", "h100"), _node("b", "l40s")],
                   [_deployment("d", 5.0, [("h100", 1, 4.0), ("l40s", 1, 1.0)])])
    plan = _solve(raw)
    assert plan["cost_per_hour"] == "6.30"
    assert sorted(r["hardware"] for r in plan["replicas"]) == ["h100", "l40s"]


def test_tensor_parallel_replicas_need_their_accelerators_on_one_node():
    # Two nodes with 2 free each: 4 free in all, but a 4-accelerator replica fits on neither.
    raw = _problem([_node("a", free=2), _node("b", free=2)], [_deployment("d", 1.0, [("l40s", 4, 1.0)])])
    plan = _solve(raw)
    assert plan["replicas"] == []
    assert plan["unserved"][0]["deployment"] == "d"


def test_max_replicas_per_node_spreads_replicas():
    raw = _problem([_node("a"), _node("b"), _node("c")], [_deployment("d", 3.0, [("l40s", 1, 1.0)], per_node=1)])
    nodes = [r["node"] for r in _solve(raw)["replicas"]]
    assert sorted(nodes) == ["a", "b", "c"]


def test_nodes_that_are_not_ready_take_no_replicas_and_their_replicas_move():
    raw = _problem([_node("up", free=4), _node("gone", free=8, state="down"), _node("fenced", state="cordoned")],
                   [_deployment("d", 2.0, [("l40s", 1, 1.0)])],
                   current=[_replica("d", "gone")])
    plan = solve(parse_problem(raw))
    assert {r.node for r in plan.replicas} == {"up"}
    assert len(plan.replicas) == 2
    assert "its node is down" in plan.decisions[0].note


def test_current_replicas_stay_where_they_are_even_when_a_cheaper_option_has_room():
    # The h100 replica is dearer than two l40s ones would be, but nothing forces it to move.
    raw = _problem([_node("h", "h100"), _node("l", "l40s")],
                   [_deployment("d", 2.0, [("h100", 1, 2.0), ("l40s", 1, 1.0)])],
                   current=[_replica("d", "h", "h100")])
    plan = solve(parse_problem(raw))
    assert plan_to_dict(plan)["replicas"] == [_replica("d", "h", "h100")]
    assert plan.decisions[0].kept == 1


def test_surplus_current_replicas_are_dropped_dearest_first():
    raw = _problem([_node("h", "h100", free=0), _node("l", "l40s", free=0)],
                   [_deployment("d", 1.0, [("h100", 1, 1.0), ("l40s", 1, 1.0)])],
                   current=[_replica("d", "h", "h100"), _replica("d", "l", "l40s")])
    plan = solve(parse_problem(raw))
    assert plan_to_dict(plan)["replicas"] == [_replica("d", "l", "l40s")]
    assert plan.preempted == ()  # scaling down is not preemption
    assert "not needed" in plan.decisions[0].note


def test_a_higher_priority_deployment_preempts_a_lower_priority_current_replica():
    raw = _problem([_node("a", free=0)],
                   [_deployment("low", 2.0, [("l40s", 4, 1.0)]),
                    _deployment("high", 1.0, [("l40s", 4, 1.0)], priority=5)],
                   current=[_replica("low", "a", accelerators=4), _replica("low", "a", accelerators=4)])
    plan = _solve(raw)
    # One of low's replicas makes way; the other keeps running (low is unserved, not torn down).
    assert [r["deployment"] for r in plan["replicas"]] == ["low", "high"]
    assert plan["preempted"] == [_replica("low", "a", accelerators=4)]
    assert plan["unserved"] == [{"deployment": "low", "reason": "needs 2.0 rps; the largest plan that fits serves "
                                                                "1.0 (capacity held by higher-priority high)"}]


def test_capacity_short_serves_the_higher_priority_first():
    raw = _problem([_node("a", free=4)],
                   [_deployment("low", 4.0, [("l40s", 1, 1.0)]),
                    _deployment("high", 4.0, [("l40s", 1, 1.0)], priority=1)])
    plan = _solve(raw)
    assert {r["deployment"] for r in plan["replicas"]} == {"high"}
    assert plan["unserved"] == [{"deployment": "low", "reason": "no capacity for any option in eu "
                                                                "(capacity held by higher-priority high)"}]


@pytest.mark.parametrize(("raw", "reason"), [
    (_problem([_node("a")], [_deployment("d", 1.0, [("h100", 1, 1.0)], regions=["eu-west1"])]),
     "no ready node of any option's hardware (h100) in eu-west1"),
    (_problem([_node("a", free=0)], [_deployment("d", 1.0, [("l40s", 1, 1.0)])]),
     "no capacity for any option in eu"),
    (_problem([_node("a", free=3)], [_deployment("d", 12.0, [("l40s", 1, 2.5)])]),
     "needs 12.0 rps; the largest plan that fits serves 7.5"),
    (_problem([_node("a"), _node("b")], [_deployment("d", 1.0, [("l40s", 1, 1.0)], minimum=3, per_node=1)]),
     "min_replicas 3 > max_replicas_per_node × eligible nodes (1 × 2)"),
    (_problem([_node("a")], [_deployment("d", 9.0, [("l40s", 1, 4.0)], maximum=2)]),
     "needs 9.0 rps but max_replicas 2 × 4.0 rps (the fastest option) serves 8.0"),
])
def test_unserved_deployments_say_why(raw, reason):
    assert _solve(raw)["unserved"] == [{"deployment": "d", "reason": reason}]


def test_decisions_explain_the_choice_and_the_rejected_options():
    raw = _problem([_node("h", "h100", free=1), _node("l", "l40s")],
                   [_deployment("d", 4.0, [("h100", 1, 4.0), ("l40s", 2, 1.0)])])
    plan = solve(parse_problem(raw))
    (decision,) = plan.decisions
    assert [(c.option.hardware, c.replicas, str(c.cost_per_hour)) for c in decision.chosen] == [("h100", 1, "4.50")]
    (rejected,) = decision.rejected
    assert rejected.option.hardware == "l40s"
    assert rejected.reason == "4 replicas would cost $14.40/h (chosen: $4.50/h)"


def test_a_cheaper_option_without_capacity_is_rejected_for_that_reason():
    raw = _problem([_node("h", "h100"), _node("l", "l40s", free=0)],
                   [_deployment("d", 2.0, [("h100", 1, 1.0), ("l40s", 1, 2.0)])])
    (decision,) = solve(parse_problem(raw)).decisions
    assert decision.rejected[0].reason == "cheaper ($1.80/h for 1 replica) but no free capacity for it in l40s in eu"


def test_no_demand_no_replicas():
    raw = _problem([_node("a")], [_deployment("d", 0.0, [("l40s", 1, 1.0)], minimum=0)])
    assert _solve(raw)["replicas"] == []


def test_min_replicas_holds_even_when_demand_is_lower():
    raw = _problem([_node("a")], [_deployment("d", 0.5, [("l40s", 1, 1.0)], minimum=3)])
    assert len(_solve(raw)["replicas"]) == 3


def test_cost_is_rounded_half_up_to_the_cent_once():
    raw = _problem([_node("a", "x", free=3)], [_deployment("d", 3.0, [("x", 1, 1.0)])], hardware=[("x", "0.335")])
    assert _solve(raw)["cost_per_hour"] == "1.01"  # 3 × 0.335 = 1.005


# --- Bad input ------------------------------------------------------------------------------------


def _with(change):
    raw = copy.deepcopy(DESIGN_EXAMPLE)
    change(raw)
    return raw


@pytest.mark.parametrize(("raw", "message"), [
    (_with(lambda r: r.update(version=2)), "'version' must be 1, got 2"),
    (_with(lambda r: r.pop("nodes")), "missing 'nodes'"),
    (_with(lambda r: r.update(extra=1)), "unknown field 'extra'"),
    (_with(lambda r: r["deployments"][0]["options"][0].update(hardware="h200")),
     "deployments[0] (dep-1): options[0]: unknown hardware 'h200' (the problem's hardware: h100-80gb, l40s-48gb)"),
    (_with(lambda r: r["nodes"][0].update(free_accelerators=-1)),
     "nodes[0] (eu1-a-0001): 'free_accelerators' must be at least 0, got -1"),
    (_with(lambda r: r["nodes"][0].update(free_accelerators=2.5)), "'free_accelerators' must be a whole number"),
    (_with(lambda r: r["deployments"][0].update(demand_rps=-1)), "'demand_rps' must be at least 0, got -1"),
    (_with(lambda r: r["deployments"][0].update(min_replicas=5, max_replicas=2)), "min_replicas 5 > max_replicas 2"),
    (_with(lambda r: r["deployments"][0]["options"][1].update(rps_per_replica=0)),
     "'rps_per_replica' must be greater than 0"),
    (_with(lambda r: r["deployments"][0].update(regions=[])), "'regions' must be a non-empty list"),
    (_with(lambda r: r["deployments"][0]["options"].append(
        {"hardware": "h100-80gb", "accelerators": 1, "rps_per_replica": 9.0})),
     "options[2]: same hardware and accelerators as options[0] (h100-80gb × 1)"),
    (_with(lambda r: r["nodes"][1].update(id="eu1-a-0001")), "node id 'eu1-a-0001' is listed twice"),
    (_with(lambda r: r["deployments"].append(copy.deepcopy(r["deployments"][0]))),
     "deployment id 'dep-1' is listed twice"),
    (_with(lambda r: r["hardware"][0].update(price_per_hour="cheap")), "'price_per_hour' must be a decimal string"),
    (_with(lambda r: r["hardware"][0].update(price_per_hour="-1")), "must be a finite amount of at least 0"),
    (_with(lambda r: r["nodes"][0].update(state="sleeping")), "'state' must be one of ready, cordoned, draining, down"),
    (_with(lambda r: r["current"].append(_replica("dep-1", "nowhere", "h100-80gb"))),
     "current[0]: unknown node 'nowhere'"),
    (_with(lambda r: r["current"].append(_replica("dep-9", "eu1-a-0001", "h100-80gb"))),
     "current[0]: unknown deployment 'dep-9'"),
    (_with(lambda r: r["current"].append(_replica("dep-1", "eu1-a-0001", "l40s-48gb"))),
     "current[0]: hardware 'l40s-48gb' but node 'eu1-a-0001' is 'h100-80gb'"),
])
def test_bad_input_is_a_value_error_naming_what_is_wrong(raw, message):
    with pytest.raises(ValueError) as caught:
        parse_problem(raw)
    assert message in str(caught.value)


def test_load_problem_names_the_source_of_json_errors():
    with pytest.raises(ValueError, match=r"^problem.json is not JSON: "):
        load_problem("{", "problem.json")


# --- The commands ---------------------------------------------------------------------------------


def test_the_command_prints_the_plan(tmp_path, capsys):
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(DESIGN_EXAMPLE))
    call_command("solve_placement", str(path))
    assert json.loads(capsys.readouterr().out) == DESIGN_OUTPUT


def test_the_command_explains_on_request(tmp_path, capsys):
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(DESIGN_EXAMPLE))
    call_command("solve_placement", str(path), "--explain")
    out = json.loads(capsys.readouterr().out)
    assert out["decisions"][0]["deployment"] == "dep-1"
    assert out["decisions"][0]["chosen"][0]["replicas"] == 2
    assert out["decisions"][0]["rejected"][0]["hardware"] == "l40s-48gb"


def test_the_command_rejects_bad_input_with_status_2(tmp_path):
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(_with(lambda r: r["nodes"][0].update(free_accelerators=-1))))
    with pytest.raises(CommandError) as caught:
        call_command("solve_placement", str(path))
    assert caught.value.returncode == 2
    assert "'free_accelerators' must be at least 0" in str(caught.value)


@pytest.mark.parametrize("command", [["manage.py", "solve_placement"], ["-m", "scheduler.placement"]])
def test_the_commands_read_stdin_and_exit_2_with_one_line_on_bad_input(command):
    def run(text):
        return subprocess.run([sys.executable, *command, "-"], input=text, capture_output=True, text=True,
                              cwd=settings.BASE_DIR, timeout=60, check=False)

    good = run(json.dumps(DESIGN_EXAMPLE))
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout) == DESIGN_OUTPUT
    bad = run("{not json")
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1
    assert "stdin is not JSON" in bad.stderr
    assert "Traceback" not in bad.stderr


# --- Incremental planning -------------------------------------------------------------------------


def _keyed(plan, without=None):
    return sorted((r.deployment, r.node, r.hardware, r.accelerators) for r in plan.replicas if r.deployment != without)


def test_adding_a_deployment_places_it_without_moving_others():
    raw = _problem([_node("a", free=4), _node("b", free=4)], [_deployment("d1", 3.0, [("l40s", 1, 1.0)])])
    plan = solve(parse_problem(raw))
    added = add_deployment(plan, _deployment("d2", 4.0, [("l40s", 1, 1.0)]))
    assert _keyed(added, without="d2") == _keyed(plan)
    assert sum(r.deployment == "d2" for r in added.replicas) == 4
    assert added.unserved == ()


def test_removing_a_deployment_frees_room_for_one_that_waited():
    raw = _problem([_node("a", free=2)], [_deployment("first", 2.0, [("l40s", 1, 1.0)]),
                                          _deployment("waiting", 2.0, [("l40s", 1, 1.0)])])
    plan = solve(parse_problem(raw))
    assert [u.deployment for u in plan.unserved] == ["waiting"]
    after = remove_deployment(plan, "first")
    assert after.unserved == ()
    assert {r.deployment for r in after.replicas} == {"waiting"}


def test_an_added_higher_priority_deployment_preempts_running_replicas():
    raw = _problem([_node("a", free=2), _node("b", free=1)], [_deployment("low", 2.0, [("l40s", 1, 1.0)])])
    plan = solve(parse_problem(raw))
    assert {r.node for r in plan.replicas} == {"a"}  # best fit: both on the node they fill
    added = add_deployment(plan, _deployment("high", 1.0, [("l40s", 2, 1.0)], priority=1))
    assert [(r.deployment, r.node) for r in added.replicas] == [("high", "a")]
    assert [(r.deployment, r.node) for r in added.preempted] == [("low", "a"), ("low", "a")]
    assert [u.deployment for u in added.unserved] == ["low"]  # one replica would fit on b: not enough


def test_incremental_calls_refuse_a_stale_plan_and_a_duplicate():
    plan = solve(parse_problem(DESIGN_EXAMPLE))
    newer = remove_deployment(plan, "dep-1")
    with pytest.raises(ValueError, match="stale"):
        add_deployment(plan, DESIGN_EXAMPLE["deployments"][0])
    again = add_deployment(newer, DESIGN_EXAMPLE["deployments"][0])
    with pytest.raises(ValueError, match="already placed"):
        add_deployment(again, DESIGN_EXAMPLE["deployments"][0])
    with pytest.raises(ValueError, match="unknown hardware"):
        add_deployment(again, _deployment("x", 1.0, [("tpu", 1, 1.0)]))


# --- Properties on random small fleets -----------------------------------------------------------


def violations(raw: dict, plan: dict) -> list[str]:
    """Everything infeasible about `plan`; checked here from the JSON alone, not with the solver."""
    found = []
    nodes = {n["id"]: n for n in raw["nodes"]}
    deployments = {d["id"]: d for d in raw["deployments"]}
    capacity = {n["id"]: n["free_accelerators"] for n in raw["nodes"]}
    for replica in raw["current"]:
        capacity[replica["node"]] += replica["accelerators"]
    used, per_node, rps, count = {}, {}, {}, {}
    for replica in plan["replicas"]:
        d, node = deployments[replica["deployment"]], nodes[replica["node"]]
        option = next((o for o in d["options"]
                       if (o["hardware"], o["accelerators"]) == (replica["hardware"], replica["accelerators"])), None)
        if option is None or node["hardware"] != replica["hardware"]:
            found.append(f"wrong shape or hardware: {replica}")
            continue
        if node["region"] not in d["regions"]:
            found.append(f"region not allowed: {replica}")
        if node.get("state", "ready") != "ready":
            found.append(f"on a node that is not ready: {replica}")
        used[node["id"]] = used.get(node["id"], 0) + replica["accelerators"]
        per_node[(d["id"], node["id"])] = per_node.get((d["id"], node["id"]), 0) + 1
        rps[d["id"]] = rps.get(d["id"], 0) + option["rps_per_replica"]
        count[d["id"]] = count.get(d["id"], 0) + 1
    found += [f"node {n} over-committed" for n, u in used.items() if u > capacity[n]]
    found += [f"{d} over max_replicas_per_node on {n}" for (d, n), k in per_node.items()
              if k > deployments[d]["max_replicas_per_node"]]
    unserved = {u["deployment"] for u in plan["unserved"]}
    for d in raw["deployments"]:
        if d["id"] not in unserved and (rps.get(d["id"], 0) < d["demand_rps"] - 1e-9
                                        or not d["min_replicas"] <= count.get(d["id"], 0) <= d["max_replicas"]):
            found.append(f"{d['id']} neither served nor listed unserved")
    return found


HARDWARE = [("h100", "4.50"), ("l40s", "1.80"), ("l4", "0.80")]


@st.composite
def problems(draw):
    kinds = HARDWARE[:draw(st.integers(1, 3))]
    regions = ["eu", "us"][:draw(st.integers(1, 2))]
    nodes = [_node(f"n{i}", draw(st.sampled_from([k for k, _ in kinds])), draw(st.integers(0, 8)),
                   draw(st.sampled_from(regions)),
                   **({"state": "down"} if draw(st.integers(0, 9)) == 0 else {}))
             for i in range(draw(st.integers(1, 6)))]
    deployments = []
    for i in range(draw(st.integers(1, 5))):
        shapes = draw(st.lists(st.tuples(st.sampled_from([k for k, _ in kinds]), st.sampled_from([1, 2, 4])),
                               min_size=1, max_size=3, unique=True))
        options = [(hardware, accelerators, draw(st.sampled_from([0.5, 1.0, 1.6, 2.5, 4.0])))
                   for hardware, accelerators in shapes]
        minimum = draw(st.integers(0, 2))
        deployments.append(_deployment(
            f"d{i}", draw(st.sampled_from([0.0, 0.8, 2.0, 3.5, 7.5, 12.0])), options,
            regions=draw(st.lists(st.sampled_from(regions), min_size=1, max_size=2, unique=True)), minimum=minimum,
            maximum=draw(st.integers(max(minimum, 1), 8)), per_node=draw(st.integers(1, 3)),
            priority=draw(st.integers(0, 2))))
    current = []
    for node in nodes:
        for d in deployments:
            for option in d["options"]:
                if option["hardware"] == node["hardware"] and draw(st.integers(0, 5)) == 0:
                    current.append(_replica(d["id"], node["id"], option["hardware"], option["accelerators"]))
    return _problem(nodes, deployments, current, hardware=kinds)


PROPERTY_SETTINGS = hypothesis_settings(max_examples=150, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(problems())
def test_every_plan_is_feasible_and_costs_what_its_replicas_cost(raw):
    plan = solve(parse_problem(raw))
    out = plan_to_dict(plan)
    assert violations(raw, out) == []
    price = {h["name"]: Decimal(h["price_per_hour"]) for h in raw["hardware"]}
    expected = sum((price[r["hardware"]] * r["accelerators"] for r in out["replicas"]), Decimal(0))
    assert out["cost_per_hour"] == str(expected.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    assert plan.cost_per_hour == expected
    current = [tuple(r.values()) for r in raw["current"]]
    for replica in out["preempted"]:
        assert tuple(replica.values()) in current  # only running replicas are preempted


@PROPERTY_SETTINGS
@given(problems())
def test_an_unserved_deployment_could_not_have_used_lower_priority_capacity(raw):
    """Give an unserved deployment H everything free at the end plus all that lower-priority
    deployments hold, alone: it still cannot be served."""
    plan = plan_to_dict(solve(parse_problem(raw)))
    deployments = {d["id"]: d for d in raw["deployments"]}
    for unserved in plan["unserved"]:
        high = deployments[unserved["deployment"]]
        capacity = {n["id"]: n["free_accelerators"] for n in raw["nodes"]}
        for replica in raw["current"]:
            capacity[replica["node"]] += replica["accelerators"]
        own = []
        for replica in plan["replicas"]:
            holder = deployments[replica["deployment"]]
            if holder["id"] == high["id"]:
                own.append(replica)
            if holder["priority"] >= high["priority"]:
                capacity[replica["node"]] -= replica["accelerators"]
        alone = _problem([{**n, "free_accelerators": capacity[n["id"]]} for n in raw["nodes"]], [high], own,
                         hardware=[(h["name"], h["price_per_hour"]) for h in raw["hardware"]])
        assert [u["deployment"] for u in _solve(alone)["unserved"]] == [high["id"]], unserved


@PROPERTY_SETTINGS
@given(problems(), st.data())
def test_adding_a_deployment_never_moves_anyone_else(raw, data):
    plan = solve(parse_problem(raw))
    new = data.draw(st.sampled_from(raw["deployments"]))
    new = {**new, "id": "added", "priority": data.draw(st.integers(0, 2))}
    after = add_deployment(plan, new)
    before = _keyed(plan)
    kept = _keyed(after, without="added")
    preempted = sorted((r.deployment, r.node, r.hardware, r.accelerators) for r in after.preempted)
    # Everything that ran still runs where it was, except what was preempted; victims may top up.
    remaining = list(before)
    for replica in preempted:
        remaining.remove(replica)
    for replica in remaining:
        assert replica in kept
        kept.remove(replica)
    assert all(replica[0] in {r[0] for r in preempted} for replica in kept)  # only victims got new replicas
    assert violations({**raw, "deployments": [*raw["deployments"], new]}, plan_to_dict(after)) == []


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from([0.5, 0.8, 1.0, 1.6, 2.5, 4.0]), st.integers(0, 6)),
                min_size=1, max_size=3),
       st.sampled_from([0.0, 0.7, 2.0, 5.5, 9.0, 13.0]), st.integers(0, 3), st.integers(0, 9))
def test_best_mix_is_the_exact_optimum(options, need, low, high):
    assume(low <= high)
    costs = [a * 1.5 for a, _, _ in options]
    rps = [r for _, r, _ in options]
    available = [n for _, _, n in options]
    best = None
    for counts in itertools.product(*(range(n + 1) for n in available)):
        if sum(c * r for c, r in zip(counts, rps)) >= need - 1e-9 and low <= sum(counts) <= high:
            cost = sum(c * k for c, k in zip(counts, costs))
            best = cost if best is None else min(best, cost)
    found = best_mix(costs, rps, available, need, low, high)
    if best is None:
        assert found is None
    else:
        assert found is not None and math.isclose(found[0], best, abs_tol=1e-9)


# --- Zone spreading -------------------------------------------------------------------------------


def _zoned(ident, zone, hardware="h100", free=8, region="eu"):
    return _node(ident, hardware, free, region, zone=f"{region}-{zone}")


def test_replicas_of_a_deployment_spread_over_zones_at_equal_cost():
    raw = _problem([_zoned(f"{zone}{i}", zone) for zone in "abc" for i in range(2)],
                   [_deployment("d", 3.0, [("h100", 1, 1.0)])])
    plan = solve(parse_problem(raw))
    zones = {node["id"]: node["zone"] for node in raw["nodes"]}
    assert sorted(zones[r.node] for r in plan.replicas) == ["eu-a", "eu-b", "eu-c"]
    assert plan.cost_per_hour == Decimal("13.50")  # what best fit on one node would cost
    assert plan.decisions[0].zones == ("eu-a", "eu-b", "eu-c")
    assert plan_to_dict(plan, explain=True)["decisions"][0]["zones"] == ["eu-a", "eu-b", "eu-c"]


def test_more_replicas_than_zones_are_spread_evenly():
    raw = _problem([_zoned(f"{zone}0", zone) for zone in "ab"] + [_zoned("c0", "c", free=1)],
                   [_deployment("d", 7.0, [("h100", 1, 1.0)])])
    zones = {node["id"]: node["zone"] for node in raw["nodes"]}
    counts = {}
    for replica in solve(parse_problem(raw)).replicas:
        counts[zones[replica.node]] = counts.get(zones[replica.node], 0) + 1
    assert counts == {"eu-a": 3, "eu-b": 3, "eu-c": 1}


def test_with_capacity_in_one_zone_only_the_deployment_is_still_served_there():
    raw = _problem([_zoned("a0", "a"), _zoned("b0", "b", free=0), _zoned("c0", "c", free=0)],
                   [_deployment("d", 3.0, [("h100", 1, 1.0)])])
    plan = solve(parse_problem(raw))
    assert plan.unserved == () and [r.node for r in plan.replicas] == ["a0"] * 3
    assert plan.decisions[0].zones == ("eu-a",)


def test_spreading_never_trades_a_cheaper_option_for_another_zone():
    # l40s is cheaper per rps and has room in zone a only; h100 has room in b and c.
    raw = _problem([_zoned("a0", "a", "l40s"), _zoned("b0", "b"), _zoned("c0", "c")],
                   [_deployment("d", 3.0, [("h100", 1, 1.0), ("l40s", 1, 1.0)])])
    plan = solve(parse_problem(raw))
    assert [r.node for r in plan.replicas] == ["a0"] * 3 and plan.cost_per_hour == Decimal("5.40")


def test_within_a_zone_an_equally_tight_node_without_the_deployment_is_preferred():
    # a0 and a1 both have 7 free; d already runs on a0 (listed first), so its second replica goes to a1.
    raw = _problem([_zoned("a0", "a", free=7), _zoned("a1", "a", free=7)],
                   [_deployment("d", 2.0, [("h100", 1, 1.0)]), _deployment("other", 1.0, [("h100", 1, 1.0)])],
                   current=[_replica("d", "a0", "h100"), _replica("other", "a1", "h100")])
    assert sorted(r.node for r in solve(parse_problem(raw)).replicas if r.deployment == "d") == ["a0", "a1"]


# --- Defragmentation ------------------------------------------------------------------------------


def _fragmented():
    """Four 8-accelerator nodes, each holding two replicas of its own small deployment; a TP-8
    deployment waits (no node has 8 free)."""
    small = [_deployment(f"d{i}", 2.0, [("h100", 1, 1.0)]) for i in range(4)]
    big = _deployment("big", 1.0, [("h100", 8, 1.0)], maximum=1)
    current = [_replica(f"d{i}", f"n{i}", "h100") for i in range(4) for _ in range(2)]
    return _problem([_node(f"n{i}", "h100", free=6) for i in range(4)], [*small, big], current)


def _defragment_fully(problem, limit=60):
    moves = []
    for _ in range(limit):
        step = defragment(problem, 1)
        if not step:
            return problem, moves
        moves += step
        problem = apply_moves(problem, step)
    raise AssertionError("defragmentation did not settle")


def test_defragmentation_makes_room_for_a_replica_that_fitted_nowhere():
    problem = parse_problem(_fragmented())
    assert [u.deployment for u in solve(problem).unserved] == ["big"]
    settled, moves = _defragment_fully(problem)
    assert all(move.reason.startswith("defragmentation: ") for move in moves)
    assert any("makes room for big" in move.reason for move in moves)
    assert solve(settled).unserved == ()
    assert defragment(settled, 5) == ()  # nothing left to gain: no move


def test_defragmentation_respects_max_moves_and_frozen_deployments():
    problem = parse_problem(_fragmented())
    assert len(defragment(problem, 2)) == 2
    assert defragment(problem, 0) == ()
    moves = defragment(problem, 10, frozen={"d0", "d1"})
    assert moves and all(move.replica.deployment not in {"d0", "d1"} for move in moves)


def test_defragmentation_moves_a_replica_to_a_cheaper_option_with_room_now():
    raw = _problem([_node("h", "h100"), _node("l", "l40s")],
                   [_deployment("d", 1.0, [("h100", 1, 1.0), ("l40s", 1, 1.0)])],
                   current=[_replica("d", "h", "h100")])
    [move] = defragment(parse_problem(raw), 3)
    assert (move.to.node, move.to.hardware) == ("l", "l40s")
    assert move.reason == "defragmentation: 1 × h100 → 1 × l40s costs $2.70/h less"


def test_defragmentation_never_takes_a_deployment_out_of_a_zone():
    # d runs once in zone a and once in zone b: packing both onto b0 would free a0, but d would
    # then live in one zone.
    raw = _problem([_zoned("a0", "a", free=7), _zoned("b0", "b", free=6)],
                   [_deployment("d", 2.0, [("h100", 1, 1.0)]), _deployment("e", 1.0, [("h100", 1, 1.0)])],
                   current=[_replica("d", "a0", "h100"), _replica("d", "b0", "h100"), _replica("e", "b0", "h100")])
    assert all(move.replica.deployment != "d" or move.to.node != "b0" for move in defragment(parse_problem(raw), 5))


@st.composite
def zoned_problems(draw):
    raw = draw(problems())
    for node in raw["nodes"]:
        node["zone"] = f"{node['region']}-{draw(st.sampled_from('ab'))}"
    return raw


def _spread(problem):
    """deployment → (zones, nodes) its current replicas occupy."""
    zone = {n.id: (n.region, n.zone) for n in problem.nodes}
    out = {}
    for replica in problem.current:
        zones, nodes = out.setdefault(replica.deployment, (set(), set()))
        zones.add(zone[replica.node])
        nodes.add(replica.node)
    return {d: (len(z), len(n)) for d, (z, n) in out.items()}


def _served(problem):
    options = {d.id: {(o.hardware, o.accelerators): o.rps_per_replica for o in d.options} for d in problem.deployments}
    rps = {d.id: 0.0 for d in problem.deployments}
    for replica in problem.current:
        rps[replica.deployment] += options[replica.deployment].get((replica.hardware, replica.accelerators), 0.0)
    return rps


@PROPERTY_SETTINGS
@given(zoned_problems(), st.integers(0, 4))
def test_defragmentation_moves_keep_every_constraint(raw, max_moves):
    problem = parse_problem(raw)
    moves = defragment(problem, max_moves)
    assert len(moves) <= max_moves
    nodes = {n.id: n for n in problem.nodes}
    specs = {d.id: d for d in problem.deployments}
    # Make before break: every new replica fits beside every old one.
    free = {n.id: n.free_accelerators for n in problem.nodes}
    for move in moves:
        free[move.to.node] -= move.to.accelerators
        spec, node = specs[move.to.deployment], nodes[move.to.node]
        assert move.to.deployment == move.replica.deployment
        assert node.state == "ready" and node.hardware == move.to.hardware and node.region in spec.regions
        assert (move.to.hardware, move.to.accelerators) in {(o.hardware, o.accelerators) for o in spec.options}
    assert min(free.values(), default=0) >= 0
    running = list(problem.current)
    for move in moves:
        running.remove(move.replica)  # only replicas that ran before the batch move, each once
    after = apply_moves(problem, moves)
    per_node = {}
    for replica in after.current:
        per_node[(replica.deployment, replica.node)] = per_node.get((replica.deployment, replica.node), 0) + 1
    for move in moves:
        assert per_node[(move.to.deployment, move.to.node)] <= specs[move.to.deployment].max_replicas_per_node
    before_rps, after_rps = _served(problem), _served(after)
    for d in problem.deployments:
        assert after_rps[d.id] >= min(before_rps[d.id], d.demand_rps) - 1e-9  # served stays served
    spread_before, spread_after = _spread(problem), _spread(after)
    for ident, (zones, hosts) in spread_before.items():
        assert spread_after[ident][0] >= zones and spread_after[ident][1] >= hosts


@PROPERTY_SETTINGS
@given(zoned_problems())
def test_every_defragmentation_move_strictly_lowers_the_objective_until_none_is_left(raw):
    problem = parse_problem(raw)
    objective = defragmentation_objective(problem)
    for _ in range(60):
        moves = defragment(problem, 1)
        if not moves:
            break
        problem = apply_moves(problem, moves)
        lower = defragmentation_objective(problem)
        assert lower < objective, moves
        objective = lower
    else:
        raise AssertionError("defragmentation did not settle")
    assert defragment(problem, 3) == ()  # idempotent once there is nothing to gain


@PROPERTY_SETTINGS
@given(zoned_problems(), st.integers(1, 4))
def test_a_batch_of_moves_lowers_the_objective_at_each_step(raw, max_moves):
    problem = parse_problem(raw)
    moves = defragment(problem, max_moves)
    objective = defragmentation_objective(problem)
    for index in range(len(moves)):
        lower = defragmentation_objective(apply_moves(problem, moves[:index + 1]))
        assert lower < objective
        objective = lower
