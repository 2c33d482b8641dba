"""The fleet file: regions → zones → node groups, read and validated. Pure: no Django.

    version: 1                      # optional; 1 is the only version
    regions:
      - slug: eu-north1
        name: Europe North 1 (Stockholm)
        zones:
          - slug: eu-north1-a
            node_groups:
              - hardware: h100-80gb           # an accelerator slug of the catalog
                count: 24                     # nodes in the group
                accelerators_per_node: 8      # optional: the hardware's usual count
                name_prefix: eun1-a-h100      # optional: <zone>-<hardware>; nodes are <prefix>-0001 …
                labels: {pool: premium}       # optional: string → string

YAML or JSON (JSON is YAML). `parse_fleet` reports every problem at once, each with
the path of the value at fault (`regions[0].zones[1].node_groups[2].count`).
"""

import re
from dataclasses import dataclass, field

import yaml

SLUG = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
# Node names become Kubernetes node and label values: DNS-1123 labels.
NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
MAX_NODES_PER_GROUP = 10_000
MAX_ACCELERATORS_PER_NODE = 64
NODE_NUMBER_DIGITS = 4


@dataclass(frozen=True)
class NodeSpec:
    name: str
    region: str
    zone: str
    hardware: str
    accelerators: int
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ZoneSpec:
    slug: str
    region: str


@dataclass(frozen=True)
class RegionSpec:
    slug: str
    name: str


@dataclass(frozen=True)
class FleetSpec:
    regions: list[RegionSpec]
    zones: list[ZoneSpec]
    nodes: list[NodeSpec]


class FleetFileError(ValueError):
    """The file is not a valid fleet; `problems` lists (path, message) for each fault."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" if path else message for path, message in problems))


def load_fleet_text(text: str):
    """The parsed document (YAML, hence JSON too), or FleetFileError."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FleetFileError([("", f"not valid YAML or JSON: {error}")]) from None


class _Reader:
    """Walks the document, collecting problems instead of stopping at the first."""

    def __init__(self, hardware: dict[str, int]):
        self.hardware = hardware
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def mapping(self, value, path: str, required: set[str], optional: set[str]) -> dict | None:
        if not isinstance(value, dict):
            self.problem(path, f"must be a mapping, not {type(value).__name__}.")
            return None
        for key in sorted(required - set(value)):
            self.problem(f"{path}.{key}".lstrip("."), "is required.")
        known = ", ".join(sorted(required | optional))
        for key in sorted(set(value) - required - optional, key=str):
            self.problem(f"{path}.{key}".lstrip("."), f"is not a known field (known: {known}).")
        return value

    def items(self, value, path: str) -> list:
        if not isinstance(value, list) or not value:
            self.problem(path, "must be a non-empty list.")
            return []
        return value

    def slug(self, value, path: str) -> str | None:
        if not isinstance(value, str) or not SLUG.match(value):
            self.problem(path, f"{value!r} is not a slug (lowercase letters, digits and '-', at most 40).")
            return None
        return value

    def integer(self, value, path: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(path, f"must be a whole number from {low} to {high}, not {value!r}.")
            return None
        return value

    def labels(self, value, path: str) -> dict[str, str]:
        if not isinstance(value, dict):
            self.problem(path, "must be a mapping of strings to strings.")
            return {}
        for key, text in value.items():
            if not isinstance(key, str) or not LABEL_KEY.match(key):
                self.problem(f"{path}.{key}", "is not a valid label key.")
            elif not isinstance(text, str) or len(text) > 63:
                self.problem(f"{path}.{key}", "must be a string of at most 63 characters.")
        return {str(key): str(text) for key, text in value.items()}


def _node_group(reader: _Reader, group, path: str, region: str, zone: str) -> list[NodeSpec]:
    group = reader.mapping(group, path, {"hardware", "count"}, {"accelerators_per_node", "name_prefix", "labels"})
    if group is None:
        return []
    hardware = group.get("hardware")
    if "hardware" in group and hardware not in reader.hardware:
        reader.problem(f"{path}.hardware", f"unknown hardware {hardware!r}; the catalog has "
                                           f"{', '.join(sorted(reader.hardware))}.")
        hardware = None
    count = reader.integer(group.get("count"), f"{path}.count", 1, MAX_NODES_PER_GROUP) if "count" in group else None
    accelerators = group.get("accelerators_per_node", reader.hardware.get(hardware))
    if accelerators is not None or "accelerators_per_node" in group:
        accelerators = reader.integer(accelerators, f"{path}.accelerators_per_node", 1, MAX_ACCELERATORS_PER_NODE)
    prefix = group.get("name_prefix", f"{zone}-{hardware}")
    if not isinstance(prefix, str) or not NODE_NAME.match(f"{prefix}-{'0' * NODE_NUMBER_DIGITS}"):
        reader.problem(f"{path}.name_prefix", f"{prefix!r} does not make valid node names (lowercase letters, "
                                              f"digits and '-'; names at most 63 characters).")
        prefix = None
    labels = reader.labels(group.get("labels", {}), f"{path}.labels")
    if None in (hardware, count, accelerators, prefix):
        return []
    return [NodeSpec(name=f"{prefix}-{number:0{NODE_NUMBER_DIGITS}d}", region=region, zone=zone,
                     hardware=hardware, accelerators=accelerators, labels=labels)
            for number in range(1, count + 1)]


def _zone(reader: _Reader, zone, path: str, region: str) -> tuple[ZoneSpec | None, list[NodeSpec]]:
    zone = reader.mapping(zone, path, {"slug", "node_groups"}, set())
    if zone is None:
        return None, []
    slug = reader.slug(zone.get("slug"), f"{path}.slug")
    nodes = []
    for index, group in enumerate(reader.items(zone.get("node_groups"), f"{path}.node_groups")):
        nodes += _node_group(reader, group, f"{path}.node_groups[{index}]", region, slug or "zone")
    return (ZoneSpec(slug=slug, region=region) if slug else None), nodes


def _region(reader: _Reader, region, path: str) -> tuple[RegionSpec | None, list[ZoneSpec], list[NodeSpec]]:
    region = reader.mapping(region, path, {"slug", "zones"}, {"name"})
    if region is None:
        return None, [], []
    slug = reader.slug(region.get("slug"), f"{path}.slug")
    name = region.get("name", slug)
    if "name" in region and (not isinstance(name, str) or not 0 < len(name) <= 80):
        reader.problem(f"{path}.name", "must be a string of 1 to 80 characters.")
    zones, nodes = [], []
    for index, zone in enumerate(reader.items(region.get("zones"), f"{path}.zones")):
        zone_spec, zone_nodes = _zone(reader, zone, f"{path}.zones[{index}]", slug or "region")
        zones += [zone_spec] if zone_spec else []
        nodes += zone_nodes
    return (RegionSpec(slug=slug, name=str(name)) if slug else None), zones, nodes


def _duplicates(values: list[str]) -> list[str]:
    seen, repeated = set(), []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    return repeated


def parse_fleet(document, hardware: dict[str, int]) -> FleetSpec:
    """A validated FleetSpec from a parsed document, or FleetFileError listing every problem.

    `hardware` maps each catalog accelerator slug to its usual accelerators per node.
    """
    reader = _Reader(hardware)
    root = reader.mapping(document, "", {"regions"}, {"version"})
    if root is None:
        raise FleetFileError(reader.problems)
    if root.get("version", 1) != 1:
        reader.problem("version", f"unsupported version {root.get('version')!r}; this Switchyard reads version 1.")
    regions, zones, nodes = [], [], []
    for index, region in enumerate(reader.items(root.get("regions"), "regions")):
        region_spec, region_zones, region_nodes = _region(reader, region, f"regions[{index}]")
        regions += [region_spec] if region_spec else []
        zones += region_zones
        nodes += region_nodes
    for kind, names in (("region", [r.slug for r in regions]), ("zone", [z.slug for z in zones]),
                        ("node", [n.name for n in nodes])):
        for name in _duplicates(names)[:10]:
            reader.problem("regions", f"the {kind} {name!r} appears more than once"
                                      + (" (give its node groups distinct name_prefix)" if kind == "node" else "")
                                      + ".")
    if reader.problems:
        raise FleetFileError(reader.problems)
    return FleetSpec(regions=regions, zones=zones, nodes=nodes)
