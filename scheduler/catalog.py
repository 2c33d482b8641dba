"""The hardware catalog's data files, loaded into the performance model's types. Pure: no Django.

- `data/accelerators.yaml`: vendor specifications, each figure with its source.
- `data/efficiency.yaml`: how close serving stacks get to the roofline, per vendor,
  calibrated against published measurements (each cited there).
- `data/list_prices.yaml`: Switchyard's list prices (the operator's, not a vendor's).
- `data/model_templates.json`: built-in Hugging Face configs.
"""

import json
from functools import cache
from pathlib import Path

import yaml

from scheduler.perf import Efficiency, Hardware

DATA = Path(__file__).parent / "data"
CAPACITY_CLASSES = ("on-demand", "spot", "reserved")
# Price of the other capacity classes relative to on-demand (typical cloud discounts:
# spot capacity can be reclaimed; reserved is a one-year commitment).
CAPACITY_CLASS_PRICE_FACTOR = {"on-demand": 1.0, "spot": 0.4, "reserved": 0.65}


@cache
def accelerator_specs() -> dict[str, dict]:
    """slug → the accelerator's specification, as in the data file (sources included)."""
    raw = yaml.safe_load((DATA / "accelerators.yaml").read_text())
    entries = raw["accelerators"] if isinstance(raw, dict) and "accelerators" in raw else raw
    if isinstance(entries, dict):
        entries = [{"slug": slug, **spec} for slug, spec in entries.items()]
    return {entry["slug"]: entry for entry in entries if not entry.get("extra")}


def hardware_from_spec(spec: dict) -> Hardware:
    return Hardware(
        slug=spec["slug"], vendor=spec["vendor"], kind=spec["kind"], memory_gb=float(spec["memory_gb"]),
        bandwidth_tbs=float(spec["memory_bandwidth_tbs"]), bf16_tflops=float(spec["bf16_tflops"]),
        fp8_tflops=float(spec["fp8_tflops"]) if spec.get("fp8_tflops") else None,
        int8_tops=float(spec["int8_tops"]) if spec.get("int8_tops") else None,
        interconnect_gbs=float(spec["interconnect_gbs"]), accelerators_per_node=int(spec["accelerators_per_node"]),
    )


@cache
def hardware_catalog() -> dict[str, Hardware]:
    return {slug: hardware_from_spec(spec) for slug, spec in accelerator_specs().items()}


@cache
def _efficiency_table() -> dict[str, Efficiency]:
    raw = yaml.safe_load((DATA / "efficiency.yaml").read_text())
    fields = Efficiency.__dataclass_fields__
    return {key: Efficiency(**{name: float(value[name]) for name in fields}) for key, value in raw["profiles"].items()}


def efficiency_for(hardware: Hardware) -> Efficiency:
    """The calibrated profile of the hardware's vendor, else of its kind, else the default."""
    table = _efficiency_table()
    return table.get(hardware.vendor) or table.get(hardware.kind) or table["default"]


@cache
def list_prices() -> dict[str, float]:
    """slug → Switchyard's on-demand list price per accelerator-hour (USD)."""
    return yaml.safe_load((DATA / "list_prices.yaml").read_text())["on_demand_usd_per_hour"]


@cache
def model_templates() -> dict[str, dict]:
    """slug → {name, source_uri, modality, config}."""
    return json.loads((DATA / "model_templates.json").read_text())
