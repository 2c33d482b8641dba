"""The Kubernetes driver's apply / list / delete / metrics path, against a local stub of the API server."""

from dataclasses import replace

import pytest

from scheduler.fleet import (
    FleetDriver,
    FleetError,
    MetricsUnavailable,
    ReplicaNotFound,
    TrafficProfile,
    driver_from_settings,
)
from scheduler.fleet.kubernetes import KubernetesDriver
from tests.scheduler.fleet.conftest import make_spec
from tests.scheduler.fleet.kubernetes_stub import StubKubernetes

NAME = "sy-rep-1"


@pytest.fixture
def cluster():
    stub = StubKubernetes().start()
    yield stub
    stub.stop()


@pytest.fixture
def driver(cluster):
    return driver_from_settings({"driver": "kubernetes", "namespace": "switchyard"}, api_client=cluster.api_client())


def test_it_is_a_fleet_driver(driver):
    assert isinstance(driver, KubernetesDriver)
    assert isinstance(driver, FleetDriver)


def test_create_applies_a_deployment_and_its_service(driver, cluster):
    status = driver.create_replica(make_spec(credential_ref="hf-token"))
    assert status.state == "pending"
    assert (status.replica_id, status.deployment_id) == ("rep-1", "dep-1")
    deployment, service = cluster.deployment(NAME), cluster.service(NAME)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    # The Service belongs to its Deployment: nothing is left behind if a delete is interrupted.
    (owner,) = service["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Deployment", NAME, deployment["metadata"]["uid"])
    assert ("POST", "/apis/apps/v1/namespaces/switchyard/deployments") in cluster.requests
    assert ("POST", "/api/v1/namespaces/switchyard/services") in cluster.requests


def test_applying_the_same_spec_again_changes_nothing(driver, cluster):
    spec = make_spec()
    driver.create_replica(spec)
    version = cluster.deployment(NAME)["metadata"]["resourceVersion"]
    driver.create_replica(replace(spec, traffic=TrafficProfile(requests_per_s=99)))  # traffic is the simulator's
    assert not [r for r in cluster.requests if r[0] == "PUT"]
    assert cluster.deployment(NAME)["metadata"]["resourceVersion"] == version


def test_applying_a_changed_spec_replaces_the_deployment(driver, cluster):
    driver.create_replica(make_spec())
    driver.create_replica(make_spec(accelerators=2))
    assert ("PUT", f"/apis/apps/v1/namespaces/switchyard/deployments/{NAME}") in cluster.requests
    limits = cluster.deployment(NAME)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "2"}


def test_a_changed_service_keeps_its_cluster_ip(cluster):
    first = KubernetesDriver.from_config(api_client=cluster.api_client())
    first.create_replica(make_spec())
    address = cluster.service(NAME)["spec"]["clusterIP"]
    relabelled = KubernetesDriver.from_config(api_client=cluster.api_client(), service_domain="cluster.example")
    relabelled.create_replica(make_spec(deployment_id="dep-2"))  # new labels: the Service is replaced
    assert ("PUT", f"/api/v1/namespaces/switchyard/services/{NAME}") in cluster.requests
    assert cluster.service(NAME)["spec"]["clusterIP"] == address
    assert cluster.service(NAME)["metadata"]["labels"]["switchyard.io/deployment"] == "dep-2"


def test_list_maps_pods_and_deployment_status_to_replica_states(driver, cluster):
    for number in range(1, 6):
        driver.create_replica(make_spec(replica_id=f"r{number}"))
    cluster.add_pod("sy-r1", phase="Pending", scheduled=False,
                    unschedulable_message="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    cluster.add_pod("sy-r2", container_state={"running": {"startedAt": "2026-11-27T10:00:00Z"}})
    cluster.add_pod("sy-r3", ready=True, container_state={"running": {"startedAt": "2026-11-27T10:00:00Z"}})
    cluster.set_deployment_status("sy-r3", {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1})
    cluster.add_pod("sy-r4", container_state={"waiting": {"reason": "CrashLoopBackOff",
                                                          "message": "back-off restarting failed container"}})
    cluster.set_deployment_status("sy-r5", {"conditions": [{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "sy-r5-abc" has timed out progressing.'}]})

    statuses = {s.replica_id: s for s in driver.list_replicas()}
    assert {k: s.state for k, s in statuses.items()} == {
        "r1": "pending", "r2": "starting", "r3": "ready", "r4": "failed", "r5": "failed"}
    assert "Insufficient nvidia.com/gpu" in statuses["r1"].message
    assert statuses["r3"].endpoint == "http://sy-r3.switchyard.svc.cluster.local:8000"
    assert statuses["r3"].ready_at is not None and statuses["r3"].ready_at.tzinfo is not None
    assert statuses["r3"].node_id == "eu1-a-0001"
    assert statuses["r2"].endpoint == ""
    assert "CrashLoopBackOff" in statuses["r4"].message
    assert "timed out" in statuses["r5"].message
    assert all(s.started_at is not None for s in statuses.values())


def test_delete_drains_then_the_replica_is_gone(driver, cluster):
    driver.create_replica(make_spec())
    cluster.add_pod(NAME, ready=True, container_state={"running": {}})
    cluster.set_deployment_status(NAME, {"replicas": 1, "readyReplicas": 1})
    driver.delete_replica("rep-1")
    (draining,) = driver.list_replicas()
    assert draining.state == "draining"
    cluster.finish_deletions()
    assert driver.list_replicas() == []
    driver.delete_replica("rep-1")  # idempotent
    driver.delete_replica("never-existed")
    assert cluster.service(NAME) is None


def test_metrics_come_from_the_pod_through_the_api_server_proxy(driver, cluster):
    driver.create_replica(make_spec())
    with pytest.raises(MetricsUnavailable, match="no pod yet"):
        driver.fetch_metrics("rep-1")
    cluster.add_pod(NAME, phase="Running", container_state={"running": {}})
    with pytest.raises(MetricsUnavailable):
        driver.fetch_metrics("rep-1")  # running, but the server is still loading the model
    cluster.metrics[NAME] = 'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
    assert driver.fetch_metrics("rep-1") == cluster.metrics[NAME]
    (pod_name,) = [name for _, name in cluster.objects["pods"]]
    assert ("GET", f"/api/v1/namespaces/switchyard/pods/{pod_name}:8000/proxy/metrics") in cluster.requests
    with pytest.raises(ReplicaNotFound):
        driver.fetch_metrics("never-existed")


def test_a_draining_replica_still_reports_its_last_counters(driver, cluster):
    driver.create_replica(make_spec())
    cluster.add_pod(NAME, ready=True, container_state={"running": {}})
    cluster.metrics[NAME] = "vllm:generation_tokens_total 42.0\n"
    driver.delete_replica("rep-1")
    assert cluster.service(NAME) is None  # no new requests reach it
    assert driver.fetch_metrics("rep-1") == cluster.metrics[NAME]


def test_api_errors_say_what_failed(driver, cluster):
    cluster.fail_with = 403
    with pytest.raises(FleetError, match=r"create deployment sy-rep-1 .* \(403\): stub: refused"):
        driver.create_replica(make_spec())
    with pytest.raises(FleetError, match="list replicas"):
        driver.list_replicas()


def test_advance_is_a_no_op(driver, cluster):
    driver.advance()
    assert cluster.requests == []
