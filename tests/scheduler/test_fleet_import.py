"""`manage.py import_fleet FILE`: a valid file makes the fleet, a bad one is refused with every
problem named and nothing written, a re-import updates and never duplicates; the demo fleet loads."""

import json
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command

from console.demo import demo_seed
from scheduler import services
from scheduler.fleet_file import FleetFileError
from scheduler.models import FleetEvent, HardwareTier, Node, Region, Replica, Zone
from tests.cross_tenant_objects import make_deployment

FLEET = {
    "version": 1,
    "regions": [
        {"slug": "eu-north1", "name": "Europe North 1", "zones": [
            {"slug": "eu-north1-a", "node_groups": [
                {"hardware": "h100-80gb", "count": 3, "name_prefix": "eun1-a-h100", "labels": {"pool": "premium"}},
                {"hardware": "l4-24gb", "count": 2, "accelerators_per_node": 4},
            ]},
        ]},
        {"slug": "us-east1", "zones": [
            {"slug": "us-east1-a", "node_groups": [{"hardware": "inf2-32gb", "count": 1}]},
        ]},
    ],
}


def _write(tmp_path, document, name="fleet.yaml") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document) if name.endswith(".json") else yaml.safe_dump(document))
    return str(path)


def _import(path) -> str:
    out = StringIO()
    call_command("import_fleet", path, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("name", ["fleet.yaml", "fleet.json"])
def test_a_valid_file_makes_regions_zones_and_nodes(db, tmp_path, name):
    output = _import(_write(tmp_path, FLEET, name))
    assert "6 nodes created" in output
    assert list(Region.objects.values_list("slug", "name")) == [("eu-north1", "Europe North 1"),
                                                                ("us-east1", "us-east1")]
    assert Zone.objects.get(slug="us-east1-a").region.slug == "us-east1"
    node = Node.objects.get(name="eun1-a-h100-0001")
    assert (node.accelerator.slug, node.accelerators, node.state, node.labels) == ("h100-80gb", 8, "ready",
                                                                                   {"pool": "premium"})
    assert Node.objects.get(name="eu-north1-a-l4-24gb-0002").accelerators == 4
    assert Node.objects.get(name="us-east1-a-inf2-32gb-0001").accelerators == 12  # the hardware's usual count
    assert FleetEvent.objects.get(action="fleet.import").changes["nodes_created"] == 6


def test_reimport_updates_and_never_duplicates(db, tmp_path):
    path = _write(tmp_path, FLEET)
    _import(path)
    Node.objects.filter(name="eun1-a-h100-0002").update(state="cordoned")
    assert "6 unchanged" in _import(path)
    assert Node.objects.count() == 6 and Region.objects.count() == 2 and Zone.objects.count() == 2

    changed = json.loads(json.dumps(FLEET))
    group = changed["regions"][0]["zones"][0]["node_groups"][0]
    group["count"], group["labels"] = 4, {"pool": "standard"}
    changed["regions"][0]["name"] = "Stockholm"
    output = _import(_write(tmp_path, changed))
    assert "1 nodes created, 3 updated" in output
    assert Node.objects.count() == 7 and Region.objects.get(slug="eu-north1").name == "Stockholm"
    assert Node.objects.get(name="eun1-a-h100-0001").labels == {"pool": "standard"}
    assert Node.objects.get(name="eun1-a-h100-0002").state == "cordoned"  # states are the operator's


def test_nodes_left_out_of_the_file_are_reported_not_removed(db, tmp_path):
    _import(_write(tmp_path, FLEET))
    smaller = json.loads(json.dumps(FLEET))
    smaller["regions"] = smaller["regions"][:1]
    output = _import(_write(tmp_path, smaller))
    assert "1 nodes not in the file" in output and "us-east1-a-inf2-32gb-0001" in output
    assert Node.objects.filter(name="us-east1-a-inf2-32gb-0001").exists()


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f["regions"][0]["zones"][0]["node_groups"][0].update(hardware="h900"),
     "regions[0].zones[0].node_groups[0].hardware: unknown hardware 'h900'"),
    (lambda f: f["regions"][0]["zones"][0]["node_groups"][0].update(count=0),
     "regions[0].zones[0].node_groups[0].count: must be a whole number from 1 to 10000"),
    (lambda f: f["regions"][0]["zones"][0]["node_groups"][1].update(accelerators_per_node="eight"),
     "regions[0].zones[0].node_groups[1].accelerators_per_node"),
    (lambda f: f["regions"][0].update(slug="EU North"), "regions[0].slug: 'EU North' is not a slug"),
    (lambda f: f["regions"][1]["zones"][0].update(slug="eu-north1-a"), "the zone 'eu-north1-a' appears more than once"),
    (lambda f: f["regions"][0]["zones"][0]["node_groups"][1].update(name_prefix="eun1-a-h100"),
     "the node 'eun1-a-h100-0001' appears more than once"),
    (lambda f: f["regions"][0]["zones"][0]["node_groups"][0].update(labels={"pool": 3}),
     "labels.pool: must be a string"),
    (lambda f: f["regions"][0]["zones"][0]["node_groups"][0].update(colour="red"),
     "node_groups[0].colour: is not a known field"),
    (lambda f: f["regions"][0]["zones"][0].pop("node_groups"), "regions[0].zones[0].node_groups: is required"),
    (lambda f: f.update(version=2), "version: unsupported version 2"),
    (lambda f: f.update(regions=[]), "regions: must be a non-empty list"),
])
def test_an_invalid_file_names_the_problem_and_writes_nothing(db, tmp_path, mutate, message):
    document = json.loads(json.dumps(FLEET))
    mutate(document)
    with pytest.raises(CommandError) as error:
        _import(_write(tmp_path, document))
    assert message in str(error.value)
    assert not Node.objects.exists() and not Region.objects.exists()


def test_every_problem_is_reported_at_once(db):
    document = json.loads(json.dumps(FLEET))
    document["regions"][0]["zones"][0]["node_groups"][0]["hardware"] = "h900"
    document["regions"][1]["slug"] = "US"
    with pytest.raises(FleetFileError) as error:
        services.fleet_spec_from_text(json.dumps(document))
    assert len(error.value.problems) == 2


def test_unreadable_or_malformed_files_are_clear_errors(db, tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        _import(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [unclosed")
    with pytest.raises(CommandError, match="not valid YAML or JSON"):
        _import(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(CommandError, match="must be a mapping"):
        _import(str(bad))


def test_an_import_that_would_strand_replicas_is_refused(tenant_a, tmp_path):
    _import(_write(tmp_path, FLEET))
    deployment = make_deployment(tenant_a, tiers=["h100-80gb-on-demand"], regions=["eu-north1"])
    node = Node.objects.get(name="eun1-a-h100-0001")
    Replica.objects.create(tenant=tenant_a.tenant, deployment=deployment, node=node, accelerators=6, generation=1,
                           tier=HardwareTier.objects.get(slug="h100-80gb-on-demand"), state="ready")
    shrunk = json.loads(json.dumps(FLEET))
    shrunk["regions"][0]["zones"][0]["node_groups"][0]["accelerators_per_node"] = 4
    with pytest.raises(CommandError, match="eun1-a-h100-0001 has 6 accelerators in use"):
        _import(_write(tmp_path, shrunk))
    assert Node.objects.get(name="eun1-a-h100-0001").accelerators == 8


def test_dry_run_validates_without_writing(db, tmp_path):
    output = StringIO()
    call_command("import_fleet", _write(tmp_path, FLEET), "--dry-run", stdout=output)
    assert "valid: 2 regions, 2 zones, 6 nodes" in output.getvalue()
    assert not Node.objects.exists()


def test_the_demo_fleet_loads_with_mixed_gpus_and_npus(db):
    result = services.fleet_import_demo()
    assert Region.objects.count() >= 3 and 200 <= result.nodes_created <= 400
    kinds = set(Node.objects.values_list("accelerator__kind", flat=True))
    assert kinds == {"gpu", "npu"}
    assert Node.objects.values("accelerator").distinct().count() >= 8
    again = services.fleet_import_demo()
    assert again.nodes_created == 0 and again.nodes_unchanged == result.nodes_created


def test_the_demo_seed_loads_the_demo_fleet(db):
    assert demo_seed() is not None
    assert Node.objects.count() == services.fleet_import_demo().nodes_unchanged > 200
