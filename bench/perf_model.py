"""perf-model: the roofline model's estimates vs published measurements (TTFT, TPOT, throughput).

Every point of bench/data/published_measurements.yaml (hardware, model, dtype,
tensor-parallel degree, prompt/output tokens, concurrency, figure, source) is
estimated by scheduler/perf.py with the efficiency profiles of
scheduler/data/efficiency.yaml. A third of the points (chosen by a hash of their
id, not by hand) are held out: `--calibrate` fits the profiles on the others only,
and the report gives the median error separately for calibration and held-out
points, so the model is tested on data it was not fitted to.

The baseline is the same roofline with no calibration (efficiency 1.0, no overheads):
what the datasheets alone would predict.
"""

from __future__ import annotations

import hashlib
from functools import cache
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from bench.common import Target, exit_status, machine_facts, print_header, print_table, print_verdict

DATA = Path(__file__).resolve().parent / "data" / "published_measurements.yaml"
EFFICIENCY_FILE = Path(__file__).resolve().parent.parent / "scheduler" / "data" / "efficiency.yaml"
TARGET = Target("<=", 0.20)
HELD_OUT_SHARE = 3  # one point in three

# The published models, by the architecture we estimate them with. Llama-3.3-70B and
# DeepSeek-R1-Distill-Llama-70B share Llama-3.1-70B's architecture; Llama-3-8B/70B differ
# from 3.1 only in context length, which does not change these short-context points.
MODEL_TEMPLATE = {
    "llama-3-8b": "llama-3.1-8b", "llama-3.1-8b": "llama-3.1-8b",
    "llama-3-70b": "llama-3.1-70b", "llama-3.1-70b": "llama-3.1-70b", "llama-3.3-70b": "llama-3.1-70b",
    "deepseek-r1-distill-llama-70b": "llama-3.1-70b",
}
# Llama-2-70B (meta-llama/Llama-2-70b-hf config.json): a 32k vocabulary and a 4k context.
LLAMA_2_70B = {"model_type": "llama", "hidden_act": "silu", "hidden_size": 8192, "intermediate_size": 28672,
               "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000,
               "max_position_embeddings": 4096, "tie_word_embeddings": False}
DTYPE = {"fp16": "bf16", "bf16": "bf16", "fp8": "fp8", "int8": "int8", "int4": "int4"}


@dataclass(frozen=True)
class Point:
    id: str
    hardware: str
    model: str
    dtype: str
    accelerators: int
    input_tokens: int
    output_tokens: int
    concurrency: int | None  # None: as many as memory allows (max-throughput runs)
    metric: str
    value: float
    replicas_in_figure: int
    source: str

    @property
    def held_out(self) -> bool:
        return int(hashlib.sha256(self.id.encode()).hexdigest(), 16) % HELD_OUT_SHARE == 0


def _replicas_in_figure(raw: dict) -> int:
    # A server-level figure over several identical replicas (e.g. inf2 "3x_tp4": three
    # TP-4 replicas on one inf2.48xlarge) is divided among them.
    marker = raw["id"].split("-")
    for part in marker:
        if part.endswith("x_tp4") or part.endswith("x_tp2") or part.endswith("x_tp8"):
            return int(part.split("x_")[0])
    return 1


def load_points() -> tuple[list[Point], list[tuple[str, str]]]:
    """Usable points, and (id, reason) for each one that cannot be estimated."""
    raw = yaml.safe_load(DATA.read_text())["measurements"]
    points, skipped = [], []
    for entry in raw:
        reason = ""
        if entry["hardware"] not in bench_hardware():
            reason = f"hardware {entry['hardware']} is not in the catalog"
        elif entry["model"] not in MODEL_TEMPLATE and entry["model"] != "llama-2-70b":
            reason = f"no architecture for {entry['model']}"
        elif not entry.get("input_tokens") or not entry.get("output_tokens"):
            reason = "the source does not state the request shape"
        elif entry["metric"] not in ("ttft_ms", "tpot_ms", "output_tokens_per_s"):
            reason = f"metric {entry['metric']}"
        if reason:
            skipped.append((entry["id"], reason))
            continue
        concurrency = None if entry["concurrency_kind"] == "max_throughput" else entry["concurrency"]
        if entry["concurrency_kind"] == "max_throughput" and entry.get("concurrency"):
            concurrency = -int(entry["concurrency"])  # an upper bound the engine was configured with
        points.append(Point(
            id=entry["id"], hardware=entry["hardware"], model=entry["model"], dtype=DTYPE[entry["dtype"]],
            accelerators=int(entry["tensor_parallel"]), input_tokens=int(entry["input_tokens"]),
            output_tokens=int(entry["output_tokens"]), concurrency=concurrency, metric=entry["metric"],
            value=float(entry["value"]), replicas_in_figure=_replicas_in_figure(entry), source=entry["source"],
        ))
    return points, skipped


@cache
def bench_hardware() -> dict:
    """The catalog's hardware plus the data file's `extra` entries (hardware Switchyard does not
    offer, e.g. Gaudi 2, whose published figures still test the model)."""
    from scheduler.catalog import DATA as CATALOG_DATA
    from scheduler.catalog import hardware_from_spec

    raw = yaml.safe_load((CATALOG_DATA / "accelerators.yaml").read_text())["accelerators"]
    return {spec["slug"]: hardware_from_spec(spec) for spec in raw}


@cache
def _architecture(model: str):
    from scheduler.architecture import parse_config
    from scheduler.catalog import model_templates

    config = LLAMA_2_70B if model == "llama-2-70b" else model_templates()[MODEL_TEMPLATE[model]]["config"]
    return parse_config(config)


def predict(point: Point, efficiency) -> float:
    """The model's figure for a point, in the point's unit (per replica)."""
    from scheduler.perf import Workload, estimate, max_concurrency

    arch, hw = _architecture(point.model), bench_hardware()[point.hardware]
    context = point.input_tokens + point.output_tokens
    room = max_concurrency(arch, point.dtype, hw, point.accelerators, context)
    if point.concurrency is None:
        concurrency = room
    elif point.concurrency < 0:
        concurrency = min(-point.concurrency, room)
    else:
        concurrency = point.concurrency
    result = estimate(arch, point.dtype, hw, efficiency, Workload(point.input_tokens, point.output_tokens,
                                                                    max(concurrency, 1)),
                      accelerators=point.accelerators)
    return {"ttft_ms": result.ttft_ms, "tpot_ms": result.tpot_ms,
            "output_tokens_per_s": result.output_tokens_per_s}[point.metric]


def measured(point: Point) -> float:
    return point.value / point.replicas_in_figure if point.metric == "output_tokens_per_s" else point.value


def signed_error(point: Point, efficiency) -> float:
    """(model − published) / published; inf when the model cannot estimate the point."""
    predicted = predict(point, efficiency)
    if math.isnan(predicted) or predicted <= 0:
        return math.inf
    return (predicted - measured(point)) / measured(point)


def relative_error(point: Point, efficiency) -> float:
    return abs(signed_error(point, efficiency))


# --- calibration --------------------------------------------------------------------------

SEARCH = {
    "bandwidth": (0.3, 0.98),
    "prefill": (0.1, 0.95),
    "decode_compute": (0.05, 0.95),
    "step_overhead_ms": (0.0, 40.0),
    "allreduce_latency_us": (1.0, 200.0),
    "prefill_layer_overhead_us": (1.0, 2000.0),
}


def _loss(points, profile_of) -> float:
    """Mean |log(model / published)|: the model is multiplicative (efficiencies scale times), so
    over- and under-estimates by the same factor count the same."""
    total = 0.0
    for point in points:
        predicted = predict(point, profile_of(point))
        total += abs(math.log(predicted / measured(point))) if predicted > 0 and math.isfinite(predicted) else 5.0
    return total / len(points) if points else 0.0


def _fit(points, start, fields) -> object:
    """Coordinate descent: each field in turn moves to the best value on a multiplicative grid
    that narrows as the fit settles. Deterministic; a few hundred evaluations."""
    best = start
    best_loss = _loss(points, lambda p: best)
    for step in (2.0, 1.5, 1.25, 1.1, 1.05, 1.02):
        for _round in range(8):
            improved = False
            for field in fields:
                low, high = SEARCH[field]
                current = getattr(best, field)
                base = current if current > 0 else 0.5
                candidates = {min(max(value, low), high) for value in (base * step, base / step, base * step ** 2,
                                                                       base / step ** 2)}
                for value in sorted(candidates):
                    trial = replace(best, **{field: value})
                    loss = _loss(points, lambda p, trial=trial: trial)
                    if loss < best_loss - 1e-12:
                        best, best_loss, improved = trial, loss, True
            if not improved:
                break
    return best


# The profile of NVIDIA's stacks (most published points, the most mature software) is fitted
# on all five fields and is also the default for vendors with too few points of their own.
# Another vendor with at least MIN_VENDOR_POINTS calibration points gets its own profile:
# its software reaches a different share of bandwidth and FLOPS and has its own step cost;
# the all-reduce latency stays NVIDIA's (too few multi-accelerator points to fit it apart).
MIN_VENDOR_POINTS = 3
VENDOR_FIELDS = ["bandwidth", "prefill", "decode_compute", "step_overhead_ms", "prefill_layer_overhead_us"]


def calibrate(points: list[Point]) -> dict:
    from scheduler.perf import Efficiency

    calibration = [p for p in points if not p.held_out]
    by_vendor: dict[str, list[Point]] = {}
    for point in calibration:
        by_vendor.setdefault(bench_hardware()[point.hardware].vendor, []).append(point)
    nvidia = _fit(by_vendor["nvidia"], Efficiency(0.7, 0.45, 0.35, 2.0, 20.0, 50.0), list(SEARCH))
    profiles = {"default": nvidia, "nvidia": nvidia}
    for vendor, vendor_points in sorted(by_vendor.items()):
        if vendor != "nvidia" and len(vendor_points) >= MIN_VENDOR_POINTS:
            profiles[vendor] = _fit(vendor_points, nvidia, VENDOR_FIELDS)
    return {"profiles": profiles, "points": [p.id for p in calibration]}


def write_efficiency(fitted: dict) -> None:
    from bench.common import utc_now
    from scheduler.perf import Efficiency

    lines = [
        "# How close serving stacks get to the roofline, per vendor (else per kind, else default).",
        "# Written by `python -m bench perf-model --calibrate` on " + utc_now() + ", fitted on the",
        "# calibration points (not the held-out third) of bench/data/published_measurements.yaml,",
        "# whose sources are cited there point by point. Vendors with fewer than 3 calibration",
        "# points use the default profile. Fields: scheduler/perf.py `Efficiency`.",
        f"# Calibration points: {', '.join(fitted['points'])}",
        "profiles:",
    ]
    for name, profile in fitted["profiles"].items():
        lines.append(f"  {name}:")
        for field in Efficiency.__dataclass_fields__:
            lines.append(f"    {field}: {round(getattr(profile, field), 4)}")
    EFFICIENCY_FILE.write_text("\n".join(lines) + "\n")


# --- report -------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--calibrate", action="store_true",
                        help="fit the efficiency profiles on the calibration points and rewrite "
                             "scheduler/data/efficiency.yaml before reporting")


def _median(errors: list[float]) -> float:
    finite = [e for e in errors if math.isfinite(e)]
    return statistics.median(finite) if finite else math.inf


def run(args) -> int:
    import django
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    django.setup()
    from scheduler import catalog
    from scheduler.perf import Efficiency

    print_header("perf-model", {**machine_facts(), "data": str(DATA)})
    points, skipped = load_points()
    if args.calibrate:
        write_efficiency(calibrate(points))
        catalog._efficiency_table.cache_clear()
        print(f"Calibrated: wrote {EFFICIENCY_FILE}\n")

    datasheet_only = Efficiency(1.0, 1.0, 1.0, 0.0, 0.0, 0.0)
    rows, split_errors, baseline_errors = [], {"calibration": [], "held-out": []}, {"calibration": [], "held-out": []}
    for point in sorted(points, key=lambda p: (p.held_out, p.hardware, p.model, p.metric)):
        hw = bench_hardware()[point.hardware]
        efficiency = catalog.efficiency_for(hw)
        predicted, signed = predict(point, efficiency), signed_error(point, efficiency)
        error = abs(signed)
        split = "held-out" if point.held_out else "calibration"
        split_errors[split].append(error)
        baseline_errors[split].append(relative_error(point, datasheet_only))
        concurrency = "max" if point.concurrency is None else (
            f"≤{-point.concurrency}" if point.concurrency < 0 else str(point.concurrency))
        rows.append([point.id, split, point.hardware, point.dtype, str(point.accelerators),
                     f"{point.input_tokens}/{point.output_tokens}", concurrency, point.metric,
                     f"{measured(point):,.1f}", f"{predicted:,.1f}", f"{signed * 100:+.0f}%" if math.isfinite(signed)
                     else "n/a"])
    print_table(["point", "set", "hardware", "dtype", "TP", "in/out", "conc.", "metric", "published", "model",
                 "error"], rows)
    if skipped:
        print("Not estimated (the published figure lacks what the model needs):")
        for point_id, reason in skipped:
            print(f"  {point_id}: {reason}")
        print()
    for split in ("calibration", "held-out"):
        print(f"{split:>11}: {len(split_errors[split])} points, median |error| "
              f"{_median(split_errors[split]) * 100:.1f}%  (datasheet-only roofline: "
              f"{_median(baseline_errors[split]) * 100:.1f}%)")
    every = split_errors["calibration"] + split_errors["held-out"]
    print(f"        all: {len(every)} points, median |error| {_median(every) * 100:.1f}%\n")
    met = print_verdict(
        figure_name="median |error| on held-out points", figure=_median(split_errors["held-out"]), target=TARGET,
        how_to_read="the typical relative error of a latency or throughput estimate on published measurements "
                    "the efficiency factors were not fitted to; the datasheet-only figure shows what calibration buys.",
    )
    return exit_status(met and _median(every) <= TARGET.value, args)
