"""The Kubernetes driver: one vLLM Deployment + Service per replica. Pure: no Django.

Why one Deployment per *replica* (not one per Switchyard deployment with N pods):
Switchyard's placement solver decides which node every replica runs on and counts
accelerators itself, so each replica is pinned (nodeSelector kubernetes.io/hostname)
and has its own lifecycle (created, drained and deleted one at a time, never all
restarted together); the gateway routes to replicas by their own load, so each
replica has its own Service (a stable endpoint, and a per-replica /metrics). A
Deployment (replicas: 1, strategy Recreate) rather than a bare Pod so the kubelet and
the controller restart a crashed server; Recreate because a pinned replica cannot
surge onto a node whose accelerators it already holds.

Manifests are built from the official client's typed models (V1Deployment, V1Service,
…) and rendered with `ApiClient().sanitize_for_serialization` — no string templates.
Objects are applied with AppsV1Api/CoreV1Api (create; replace on conflict when the
spec changed). Metrics are read from the replica's pod through the API server's pod
proxy by default: it works wherever the control plane runs, with the same
credentials and no route to pod IPs, and — unlike the Service proxy — it still
reaches a draining pod, whose last counters must be billed. At thousands of replicas,
or with the control plane inside the cluster, read pod IPs directly
(metrics_via="direct") and spare the API server.
"""

import hashlib
import json
import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from scheduler.architecture import ConfigError, parse_config
from scheduler.catalog import accelerator_specs
from scheduler.fleet.base import (
    FleetError,
    MetricsUnavailable,
    ReplicaNotFound,
    ReplicaSpec,
    ReplicaStatus,
    SpecError,
    model_argument,
)
from scheduler.perf import MAX_NUM_SEQS

# vLLM's OpenAI-compatible server for NVIDIA GPUs, pinned (vLLM 0.33.0 on PyPI, 2026-11).
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.33.0"
PORT = 8000
PORT_NAME = "http"
MANAGED_BY = "switchyard"
LABEL_DEPLOYMENT = "switchyard.io/deployment"
LABEL_REPLICA = "switchyard.io/replica"
LABEL_ACCELERATOR = "switchyard.io/accelerator"
ANNOTATION_PREFIX = "switchyard.io/"
SPEC_HASH = f"{ANNOTATION_PREFIX}spec-hash"
SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
CACHE_PATH = "/root/.cache/huggingface"  # vLLM images run as root; HF_HOME's default
MODEL_MOUNT = "/models"
REQUEST_TIMEOUT = (5, 30)  # seconds: connect, read
UNKNOWN_MODEL_STARTUP_SECONDS = 1800


@dataclass(frozen=True)
class Vendor:
    resource: str  # the device plugin's extended resource
    taint: str  # the taint key accelerator node pools carry (tolerated with Exists/NoSchedule)
    cores_per_device: int = 1  # vLLM's tensor-parallel unit per device (Neuron: NeuronCores)
    # Pass --max-num-seqs MAX_NUM_SEQS. On GPUs vLLM's paged KV cache makes it a cap on running
    # requests only, but its default depends on the device: 1024 on GPUs of ≥ 70 GiB other than
    # A100 (H100, H200, MI300X), 256 elsewhere — and the performance model, the simulated fleet and
    # the autoscaler's target all assume 256. The NPU backends size compiled batch shapes or
    # warm-up buckets by it, so their images keep their own defaults.
    caps_running_requests: bool = False


VENDORS = {
    "nvidia": Vendor("nvidia.com/gpu", "nvidia.com/gpu", caps_running_requests=True),
    "amd": Vendor("amd.com/gpu", "amd.com/gpu", caps_running_requests=True),
    "intel": Vendor("habana.ai/gaudi", "habana.ai/gaudi"),
    # Inferentia2: the catalog counts devices (32 GB each); vLLM's TP counts NeuronCores, 2 per device.
    "aws": Vendor("aws.amazon.com/neuron", "aws.amazon.com/neuron", cores_per_device=2),
    "google": Vendor("google.com/tpu", "google.com/tpu"),
}

# Node labels the vendors' own discovery sets (NVIDIA GPU Feature Discovery; GKE for TPUs),
# added to the node selector when vendor_node_labels is on. Vendors not listed here are
# selected by switchyard.io/accelerator alone (the operator labels the nodes).
VENDOR_NODE_LABELS = {
    "h200-141gb": {"nvidia.com/gpu.product": "NVIDIA-H200"},
    "h100-80gb": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    "a100-80gb": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "l40s-48gb": {"nvidia.com/gpu.product": "NVIDIA-L40S"},
    "l4-24gb": {"nvidia.com/gpu.product": "NVIDIA-L4"},
    "a10g-24gb": {"nvidia.com/gpu.product": "NVIDIA-A10G"},
    "tpu-v5e-16gb": {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice"},
}
# GKE single-host TPU v5e slices: chips → topology label.
TPU_TOPOLOGIES = {1: "1x1", 4: "2x2", 8: "2x4"}

# Container states that mean the server will not come up without a change.
FATAL_WAITING_REASONS = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                         "CreateContainerConfigError", "CreateContainerError"}


@dataclass(frozen=True)
class KubernetesOptions:
    namespace: str = "switchyard"
    vllm_image: str = DEFAULT_VLLM_IMAGE  # the NVIDIA image
    vllm_images: dict = field(default_factory=dict)  # vendor → image (amd, intel, aws, google; nvidia overrides)
    pin_to_nodes: bool = True  # nodeSelector kubernetes.io/hostname = spec.node_id
    vendor_node_labels: bool = True
    metrics_via: str = "proxy"  # proxy (the API server's pod proxy) | direct (HTTP to the pod IP)
    cache_claim: str = ""  # a PVC for the Hugging Face cache; "" = an emptyDir per pod
    service_domain: str = "svc.cluster.local"
    drain_seconds: int = 30  # preStop: time for the gateway and kube-proxy to stop sending requests
    shutdown_seconds: int = 300  # after SIGTERM: time for in-flight requests to finish
    cpu_per_accelerator: int = 4
    memory_gib_per_accelerator: int = 32

    def __post_init__(self):
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", self.namespace or ""):
            raise SpecError("namespace", f"must be a Kubernetes namespace name, not {self.namespace!r}.")
        if self.metrics_via not in ("proxy", "direct"):
            raise SpecError("metrics_via", f"must be proxy or direct, not {self.metrics_via!r}.")
        if not isinstance(self.vllm_images, dict):
            raise SpecError("vllm_images", "must map vendor → image.")
        unknown = sorted(set(self.vllm_images) - set(VENDORS))
        if unknown:
            raise SpecError("vllm_images", f"unknown vendor {unknown[0]!r} (vendors: {', '.join(VENDORS)}).")

    def image_for(self, vendor: str) -> str:
        if vendor in self.vllm_images:
            return self.vllm_images[vendor]
        if vendor == "nvidia":
            return self.vllm_image
        raise SpecError("vllm_images", f"no vLLM image configured for {vendor} accelerators: set "
                                       f"SWITCHYARD_VLLM_IMAGE_{vendor.upper()} (the CUDA image does not run there).")


# --- names --------------------------------------------------------------------------------


def _digest(value: str, length: int = 8) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def resource_name(replica_id: str) -> str:
    """The Deployment's and Service's name: a DNS-1035 label (≤ 63, starts with a letter).
    Ids that are already such a label keep their spelling; others get a hash suffix."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", replica_id.lower()).strip("-")
    if cleaned == replica_id and len(cleaned) <= 60:
        return f"sy-{cleaned}"
    return f"sy-{cleaned[:50].strip('-')}-{_digest(replica_id)}".replace("--", "-")


def label_value(value: str) -> str:
    """A valid label value (≤ 63, alphanumeric at both ends) that stays unique per input."""
    if re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]", value):
        return value
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:50].strip("-_.")
    return f"{cleaned}-{_digest(value)}" if cleaned else _digest(value)


def manifest_hash(obj) -> str:
    """A digest of an object's labels, annotations and spec as rendered: it changes when the
    replica spec or the driver's options (image, probes …) change the object, and only then
    (traffic is not in it). Computed before the hash annotation is added."""
    rendered = k8s.ApiClient().sanitize_for_serialization(
        {"labels": obj.metadata.labels, "annotations": obj.metadata.annotations, "spec": obj.spec})
    return _digest(json.dumps(rendered, sort_keys=True), 16)


# --- manifests ----------------------------------------------------------------------------


def _vendor(spec: ReplicaSpec) -> tuple[str, Vendor, dict]:
    accelerator = accelerator_specs().get(spec.hardware)
    if accelerator is None:
        raise SpecError("hardware", f"unknown hardware {spec.hardware!r}; the catalog has "
                                    f"{', '.join(sorted(accelerator_specs()))}.")
    vendor = accelerator["vendor"]
    if vendor not in VENDORS:
        raise SpecError("hardware", f"no Kubernetes mapping for {vendor} accelerators.")
    return vendor, VENDORS[vendor], accelerator


def _weight_bytes(spec: ReplicaSpec) -> float | None:
    """The model's weight bytes; None when the spec carries no config (the cluster does not need it)."""
    if not spec.model_config:
        return None
    try:
        arch = parse_config(spec.model_config, modality=spec.modality)
    except ConfigError as error:
        raise SpecError(f"model_config.{error.field}", error.message) from None
    return arch.weight_bytes("bf16" if spec.dtype == "fp16" else spec.dtype)


def vllm_args(spec: ReplicaSpec, vendor: Vendor) -> list[str]:
    """The vLLM server's arguments for this replica."""
    model, revision = model_argument(spec.model_source)
    scheme, _, rest = spec.model_source.partition("://")
    if scheme == "pvc":
        path = rest.partition("/")[2]
        model = f"{MODEL_MOUNT}/{path}".rstrip("/")
    elif scheme == "oci":
        model = MODEL_MOUNT
    elif scheme == "https":
        raise SpecError("model_source", "vLLM cannot load a model from an https:// URL: mirror it to a Hugging Face "
                                        "repository, s3://, gs:// or a PVC (pvc://claim/path).")
    args = ["--model", model]
    if revision:
        args += ["--revision", revision]
    if scheme in ("s3", "gs"):
        args += ["--load-format", "runai_streamer"]  # vLLM streams object-store weights with Run:ai's streamer
    if spec.served_model_name:
        args += ["--served-model-name", spec.served_model_name]
    args += ["--tensor-parallel-size", str(spec.accelerators * vendor.cores_per_device)]
    pre_quantized = isinstance(spec.model_config.get("quantization_config"), dict)
    if spec.dtype in ("int8", "int4") and spec.model_config and not pre_quantized:
        raise SpecError("dtype", f"{spec.dtype} weights need a pre-quantized checkpoint (GPTQ, AWQ, compressed-"
                                 f"tensors …): this model's config has no quantization_config.")
    if pre_quantized:
        pass  # vLLM reads the method from quantization_config; --dtype auto suits every method
    elif spec.dtype == "fp8":
        args += ["--quantization", "fp8", "--dtype", "bfloat16"]  # dynamic FP8 of a 16-bit checkpoint
    else:
        args += ["--dtype", "float16" if spec.dtype == "fp16" else "bfloat16"]
    if spec.dtype == "fp8":
        args += ["--kv-cache-dtype", "fp8"]  # the performance model assumes an FP8 KV cache with FP8 weights
    if spec.max_model_len:
        args += ["--max-model-len", str(spec.max_model_len)]
    if vendor.caps_running_requests:
        args += ["--max-num-seqs", str(MAX_NUM_SEQS)]
    args += ["--port", str(PORT)]
    return args


def _node_selector(spec: ReplicaSpec, options: KubernetesOptions, vendor_name: str) -> dict:
    selector = {LABEL_ACCELERATOR: spec.hardware}
    if options.vendor_node_labels:
        selector.update(VENDOR_NODE_LABELS.get(spec.hardware, {}))
    if vendor_name == "google":
        topology = TPU_TOPOLOGIES.get(spec.accelerators)
        if topology is None:
            raise SpecError("accelerators", f"a single-host TPU slice has {', '.join(map(str, TPU_TOPOLOGIES))} "
                                            f"chips, not {spec.accelerators}.")
        selector["cloud.google.com/gke-tpu-topology"] = topology
    if options.pin_to_nodes and spec.node_id:
        selector["kubernetes.io/hostname"] = spec.node_id
    elif spec.zone:
        selector["topology.kubernetes.io/zone"] = spec.zone
    elif spec.region:
        selector["topology.kubernetes.io/region"] = spec.region
    return selector


def _labels(spec: ReplicaSpec, name: str) -> dict:
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_DEPLOYMENT: label_value(spec.deployment_id),
        LABEL_REPLICA: name,
        LABEL_ACCELERATOR: spec.hardware,
    }


def _annotations(spec: ReplicaSpec) -> dict:
    # Labels are length- and charset-limited; annotations carry the exact ids back to list_replicas.
    return {
        f"{ANNOTATION_PREFIX}replica-id": spec.replica_id,
        f"{ANNOTATION_PREFIX}deployment-id": spec.deployment_id,
        f"{ANNOTATION_PREFIX}node-id": spec.node_id,
    }


def _volumes(spec: ReplicaSpec, options: KubernetesOptions) -> tuple[list, list]:
    shm_gib = 16 if spec.accelerators > 1 else 4  # NCCL/RCCL and vLLM's workers share tensors through /dev/shm
    volumes = [
        k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=f"{shm_gib}Gi")),
        k8s.V1Volume(name="cache", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=options.cache_claim)) if options.cache_claim else
        k8s.V1Volume(name="cache", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]
    mounts = [k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
              k8s.V1VolumeMount(name="cache", mount_path=CACHE_PATH)]
    scheme, _, rest = spec.model_source.partition("://")
    if scheme == "pvc":
        claim = rest.partition("/")[0]
        volumes.append(k8s.V1Volume(name="model", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=claim, read_only=True)))
        mounts.append(k8s.V1VolumeMount(name="model", mount_path=MODEL_MOUNT, read_only=True))
    elif scheme == "oci":
        # An OCI artifact holding the weights, mounted read-only (ImageVolume: Kubernetes ≥ 1.33).
        volumes.append(k8s.V1Volume(name="model", image=k8s.V1ImageVolumeSource(reference=rest,
                                                                                pull_policy="IfNotPresent")))
        mounts.append(k8s.V1VolumeMount(name="model", mount_path=MODEL_MOUNT, read_only=True))
    return volumes, mounts


def _startup_budget_seconds(spec: ReplicaSpec) -> int:
    """How long start-up may take before Kubernetes gives up: three times the expected
    weight load (at the hardware's load bandwidth) plus ten minutes for image pull and
    engine start (compilation on Neuron and TPU is slow); 30 minutes when the weights are unknown."""
    weights = _weight_bytes(spec)
    if weights is None:
        return UNKNOWN_MODEL_STARTUP_SECONDS
    bandwidth = float(accelerator_specs()[spec.hardware].get("load_bandwidth_gbs") or 2.0)
    return int(600 + 3 * weights / (bandwidth * 1e9))


def build_manifests(spec: ReplicaSpec, options: KubernetesOptions | None = None) -> tuple:
    """The Deployment and Service of one replica, as the client's typed models."""
    options = options or KubernetesOptions()
    vendor_name, vendor, _accelerator = _vendor(spec)
    name = resource_name(spec.replica_id)
    labels, annotations = _labels(spec, name), _annotations(spec)
    accelerators = str(spec.accelerators)
    volumes, mounts = _volumes(spec, options)
    budget = _startup_budget_seconds(spec)
    health = k8s.V1HTTPGetAction(path="/health", port=PORT_NAME)
    container = k8s.V1Container(
        name="vllm",
        image=options.image_for(vendor_name),
        command=["vllm", "serve"],
        args=vllm_args(spec, vendor),
        ports=[k8s.V1ContainerPort(name=PORT_NAME, container_port=PORT, protocol="TCP")],
        env=[k8s.V1EnvVar(name="HF_HOME", value=CACHE_PATH)],
        # Credentials (HF_TOKEN, AWS_ACCESS_KEY_ID …) come from the named secret, never from here.
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=spec.credential_ref))]
        if spec.credential_ref else None,
        resources=k8s.V1ResourceRequirements(
            requests={vendor.resource: accelerators, "cpu": str(options.cpu_per_accelerator * spec.accelerators),
                      "memory": f"{options.memory_gib_per_accelerator * spec.accelerators}Gi"},
            limits={vendor.resource: accelerators},
        ),
        startup_probe=k8s.V1Probe(http_get=health, period_seconds=10, failure_threshold=math.ceil(budget / 10)),
        readiness_probe=k8s.V1Probe(http_get=health, period_seconds=5, failure_threshold=3),
        liveness_probe=k8s.V1Probe(http_get=health, period_seconds=10, failure_threshold=6, timeout_seconds=5),
        lifecycle=k8s.V1Lifecycle(pre_stop=k8s.V1LifecycleHandler(
            _exec=k8s.V1ExecAction(command=["sleep", str(options.drain_seconds)]))),
        volume_mounts=mounts,
    )
    pod = k8s.V1PodSpec(
        containers=[container],
        node_selector=_node_selector(spec, options, vendor_name),
        tolerations=[
            k8s.V1Toleration(key=vendor.taint, operator="Exists", effect="NoSchedule"),
            k8s.V1Toleration(key=LABEL_ACCELERATOR, operator="Exists", effect="NoSchedule"),
        ],
        volumes=volumes,
        termination_grace_period_seconds=options.drain_seconds + options.shutdown_seconds,
        enable_service_links=False,
    )
    metadata = k8s.V1ObjectMeta(name=name, namespace=options.namespace, labels=labels)
    deployment = k8s.V1Deployment(
        api_version="apps/v1", kind="Deployment", metadata=metadata,
        spec=k8s.V1DeploymentSpec(
            replicas=1,
            selector=k8s.V1LabelSelector(match_labels={LABEL_REPLICA: name}),
            strategy=k8s.V1DeploymentStrategy(type="Recreate"),
            progress_deadline_seconds=budget + 300,
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels, annotations={
                    **annotations,
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics",
                }),
                spec=pod,
            ),
        ),
    )
    service = k8s.V1Service(
        api_version="v1", kind="Service",
        metadata=k8s.V1ObjectMeta(name=name, namespace=options.namespace, labels=labels),
        spec=k8s.V1ServiceSpec(
            type="ClusterIP", selector={LABEL_REPLICA: name},
            ports=[k8s.V1ServicePort(name=PORT_NAME, port=PORT, target_port=PORT_NAME, protocol="TCP")],
        ),
    )
    for obj in (deployment, service):
        obj.metadata.annotations = annotations  # hashed with the object, then the hash joins them
        obj.metadata.annotations = {**annotations, SPEC_HASH: manifest_hash(obj)}
    return deployment, service


def render_manifests(spec: ReplicaSpec, options: KubernetesOptions | None = None) -> str:
    """The replica's manifests as a multi-document YAML (what `kubectl apply -f -` takes)."""
    api = k8s.ApiClient()
    documents = [api.sanitize_for_serialization(obj) for obj in build_manifests(spec, options)]
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


# --- status -------------------------------------------------------------------------------


def _aware(value) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _condition(conditions, kind: str):
    return next((c for c in conditions or () if c.type == kind), None)


def status_from(deployment, pods: list, options: KubernetesOptions) -> ReplicaStatus:
    """A replica's status from its Deployment and its pods (typed client models)."""
    meta = deployment.metadata
    annotations = meta.annotations or {}
    name = meta.name
    replica_id = annotations.get(f"{ANNOTATION_PREFIX}replica-id", name)
    status = deployment.status or k8s.V1DeploymentStatus()
    pod = next((p for p in pods if not p.metadata.deletion_timestamp), pods[0] if pods else None)
    ready_condition = _condition(pod.status.conditions, "Ready") if pod and pod.status else None
    node = (pod.spec.node_name if pod and pod.spec else None) or annotations.get(f"{ANNOTATION_PREFIX}node-id", "")
    endpoint = f"http://{name}.{options.namespace}.{options.service_domain}:{PORT}"

    def report(state, message="", ready=False):
        ready_at = _aware(ready_condition.last_transition_time) if ready and ready_condition else None
        return ReplicaStatus(
            replica_id=replica_id, state=state, endpoint=endpoint if state in ("ready", "draining") else "",
            started_at=_aware(meta.creation_timestamp), ready_at=ready_at, message=message,
            deployment_id=annotations.get(f"{ANNOTATION_PREFIX}deployment-id", ""), node_id=node,
        )

    if meta.deletion_timestamp:
        return report("draining", "deleting: finishing in-flight requests", ready=True)
    failure = _condition(status.conditions, "ReplicaFailure")
    if failure and failure.status == "True":
        return report("failed", f"{failure.reason}: {failure.message}")
    progressing = _condition(status.conditions, "Progressing")
    if progressing and progressing.status == "False" and progressing.reason == "ProgressDeadlineExceeded":
        return report("failed", f"did not become ready in time: {progressing.message}")
    for container in (pod.status.container_statuses or []) if pod and pod.status else []:
        waiting = container.state.waiting if container.state else None
        if waiting and waiting.reason in FATAL_WAITING_REASONS:
            return report("failed", f"{waiting.reason}: {waiting.message or ''}".strip())
    if (status.ready_replicas or 0) >= 1:
        return report("ready", ready=True)
    if pod is None:
        return report("pending", "waiting for the pod to be created")
    scheduled = _condition(pod.status.conditions if pod.status else None, "PodScheduled")
    if scheduled is not None and scheduled.status == "False":
        return report("pending", f"not scheduled: {scheduled.message or scheduled.reason}")
    running = any(c.state and c.state.running for c in (pod.status.container_statuses or [])) \
        if pod.status else False
    if running:
        return report("starting", "loading the model")
    return report("pending", "pulling the image" if scheduled else "waiting to be scheduled")


# --- the driver ---------------------------------------------------------------------------


class KubernetesDriver:
    """FleetDriver on a Kubernetes cluster, through the official client."""

    def __init__(self, api_client: k8s.ApiClient, options: KubernetesOptions | None = None):
        self.api_client = api_client
        self.options = options or KubernetesOptions()
        self.apps = k8s.AppsV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)

    @classmethod
    def from_config(cls, *, kubeconfig: str | None = None, context: str | None = None, in_cluster: bool = False,
                    api_client: k8s.ApiClient | None = None, **options) -> "KubernetesDriver":
        """Connect with a kubeconfig file (and context), or with the pod's service account
        when `in_cluster`; `api_client` (tests) skips both."""
        if api_client is None:
            try:
                if in_cluster:
                    k8s_config.load_incluster_config()
                    api_client = k8s.ApiClient()
                else:
                    api_client = k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
            except (k8s_config.ConfigException, OSError) as error:
                where = "the in-cluster service account" if in_cluster else (kubeconfig or "the default kubeconfig")
                raise FleetError(f"cannot configure the Kubernetes client from {where}: {error}") from None
        return cls(api_client, KubernetesOptions(**options))

    @property
    def namespace(self) -> str:
        return self.options.namespace

    def create_replica(self, spec: ReplicaSpec) -> ReplicaStatus:
        deployment, service = build_manifests(spec, self.options)
        name = deployment.metadata.name
        applied = self._apply_deployment(name, deployment)
        service.metadata.owner_references = [k8s.V1OwnerReference(
            api_version="apps/v1", kind="Deployment", name=name, uid=applied.metadata.uid,
            controller=False, block_owner_deletion=False)]  # a leftover Service goes with its Deployment
        self._apply_service(name, service)
        return status_from(applied, [], self.options)

    def delete_replica(self, replica_id: str) -> None:
        name = resource_name(replica_id)
        # Foreground: the Deployment stays (state draining) until its pod has terminated
        # gracefully — preStop drain, then SIGTERM and the grace period for in-flight requests.
        options = k8s.V1DeleteOptions(propagation_policy="Foreground")
        for call in (self.apps.delete_namespaced_deployment, self.core.delete_namespaced_service):
            try:
                call(name, self.namespace, body=options, _request_timeout=REQUEST_TIMEOUT)
            except ApiException as error:
                if error.status != 404:  # already gone: deleting is idempotent
                    raise self._error(f"delete {name}", error) from None

    def list_replicas(self) -> list[ReplicaStatus]:
        try:
            deployments = self.apps.list_namespaced_deployment(self.namespace, label_selector=SELECTOR,
                                                               _request_timeout=REQUEST_TIMEOUT).items
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR,
                                                 _request_timeout=REQUEST_TIMEOUT).items
        except ApiException as error:
            raise self._error("list replicas", error) from None
        by_replica: dict[str, list] = {}
        for pod in pods:
            by_replica.setdefault((pod.metadata.labels or {}).get(LABEL_REPLICA, ""), []).append(pod)
        return [status_from(d, by_replica.get(d.metadata.name, []), self.options)
                for d in sorted(deployments, key=lambda d: d.metadata.name)]

    def fetch_metrics(self, replica_id: str) -> str:
        """The replica's /metrics, read from its pod — through the API server's pod proxy
        (default), or straight from the pod IP (metrics_via="direct", for a control plane
        inside the cluster network). The pod, not the Service: a draining pod has left the
        Service's endpoints but still serves, and its last counters must still be read."""
        name = resource_name(replica_id)
        pod = self._serving_pod(replica_id, name)
        if self.options.metrics_via == "direct":
            url = f"http://{pod.status.pod_ip}:{PORT}/metrics"
            try:
                with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT[1]) as response:
                    return response.read().decode("utf-8")
            except (urllib.error.URLError, OSError) as error:
                raise MetricsUnavailable(f"replica {replica_id!r}: GET {url} failed: {error}") from None
        try:
            response = self.core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod.metadata.name}:{PORT}", self.namespace, "metrics", _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status in (404, 502, 503):  # pod gone, or its server not listening (yet, or any more)
                raise MetricsUnavailable(f"replica {replica_id!r} does not answer /metrics "
                                         f"({error.status} {error.reason})") from None
            raise self._error(f"fetch metrics of {pod.metadata.name}", error) from None
        return response.data.decode("utf-8")

    def _serving_pod(self, replica_id: str, name: str):
        try:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL_REPLICA}={name}",
                                                 _request_timeout=REQUEST_TIMEOUT).items
            running = [p for p in pods if p.status and p.status.phase == "Running" and p.status.pod_ip]
            if running:
                # The newest pod (after a restart the old one may still be terminating).
                return max(running, key=lambda p: p.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC))
            if pods:
                raise MetricsUnavailable(f"replica {replica_id!r} has no running pod yet")
            self.apps.read_namespaced_deployment(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status == 404:
                raise ReplicaNotFound(f"no replica {replica_id!r} (deployment {name}) in {self.namespace}") from None
            raise self._error(f"find the pod of {name}", error) from None
        raise MetricsUnavailable(f"replica {replica_id!r} has no pod yet")

    def advance(self, now=None) -> None:
        """A real cluster keeps its own time: nothing to do."""

    # --- internals ------------------------------------------------------------------------

    def _apply_deployment(self, name: str, deployment):
        try:
            return self.apps.create_namespaced_deployment(self.namespace, deployment, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            if error.status != 409:
                raise self._error(f"create deployment {name}", error) from None
        try:
            existing = self.apps.read_namespaced_deployment(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
            if _same_spec(existing, deployment):
                return existing  # apply is idempotent: the same spec changes nothing
            deployment.metadata.resource_version = existing.metadata.resource_version
            return self.apps.replace_namespaced_deployment(name, self.namespace, deployment,
                                                           _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            raise self._error(f"replace deployment {name}", error) from None

    def _apply_service(self, name: str, service) -> None:
        try:
            self.core.create_namespaced_service(self.namespace, service, _request_timeout=REQUEST_TIMEOUT)
            return
        except ApiException as error:
            if error.status != 409:
                raise self._error(f"create service {name}", error) from None
        try:
            existing = self.core.read_namespaced_service(name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
            if _same_spec(existing, service):
                return
            # clusterIP is immutable: carry the allocated one over to the replacement.
            service.metadata.resource_version = existing.metadata.resource_version
            service.spec.cluster_ip = existing.spec.cluster_ip
            service.spec.cluster_ips = existing.spec.cluster_ips
            self.core.replace_namespaced_service(name, self.namespace, service, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as error:
            raise self._error(f"replace service {name}", error) from None

    def _error(self, action: str, error: ApiException) -> FleetError:
        detail = error.reason
        try:
            detail = json.loads(error.body).get("message") or detail
        except (TypeError, ValueError, AttributeError):
            pass  # not a JSON Status body: the HTTP reason says enough
        return FleetError(f"Kubernetes API: {action} in namespace {self.namespace} failed "
                          f"({error.status}): {detail}")


def _same_spec(existing, desired) -> bool:
    return (existing.metadata.annotations or {}).get(SPEC_HASH) == desired.metadata.annotations[SPEC_HASH]
