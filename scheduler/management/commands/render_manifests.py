import json
import os
import sys
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import BaseCommand, CommandError

from scheduler.fleet.base import KUBERNETES_KEYS, ReplicaSpec, SpecError, fleet_config_from_env

MAX_SPEC_BYTES = 1024 * 1024
# Settings of the Kubernetes driver that shape manifests (the connection ones do not).
MANIFEST_KEYS = KUBERNETES_KEYS - {"kubeconfig", "context", "in_cluster"}


class Command(BaseCommand):
    help = ("Print the Kubernetes manifests (Deployment + Service per replica, YAML) of a deployment, or of one "
            "replica spec given as JSON with --spec (needs no database).")
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("deployment", nargs="?", help="A deployment id (its replicas' manifests).")
        parser.add_argument("--spec", help="A ReplicaSpec as JSON (an object, or a list of them); '-' for stdin.")
        parser.add_argument("--namespace", help="Namespace to render into (default: the configured one).")
        parser.add_argument("--image", help="vLLM image for NVIDIA accelerators (default: the configured one).")

    def handle(self, *args, **options):
        if bool(options["deployment"]) == bool(options["spec"]):
            raise CommandError("give either a DEPLOYMENT id or --spec FILE.json (not both)")
        try:
            from scheduler.fleet.kubernetes import KubernetesOptions, render_manifests
        except ImportError as error:
            raise CommandError(f"rendering manifests needs the kubernetes client: pip install 'switchyard[k8s]' "
                               f"({error})") from None
        specs = self._specs_from_file(options["spec"]) if options["spec"] else \
            self._specs_from_deployment(options["deployment"])
        try:
            manifest_options = KubernetesOptions(**self._manifest_settings(options))
            documents = [render_manifests(spec, manifest_options) for spec in specs]
        except SpecError as error:
            raise CommandError(f"cannot render: {error}") from None
        self.stdout.write("---\n".join(documents), ending="")

    @staticmethod
    def _manifest_settings(options) -> dict:
        """The driver settings (Django's SWITCHYARD_FLEET, else the environment) that shape manifests."""
        configured = getattr(settings, "SWITCHYARD_FLEET", None)
        try:
            config = dict(configured) if configured is not None else fleet_config_from_env(os.environ)
        except SpecError as error:
            raise CommandError(f"bad fleet setting: {error}") from None
        values = {key: value for key, value in config.items() if key in MANIFEST_KEYS}
        if options["namespace"]:
            values["namespace"] = options["namespace"]
        if options["image"]:
            values["vllm_image"] = options["image"]
        return values

    @staticmethod
    def _specs_from_file(path: str) -> list[ReplicaSpec]:
        try:
            text = sys.stdin.read(MAX_SPEC_BYTES + 1) if path == "-" else Path(path).read_text()
        except OSError as error:
            raise CommandError(f"cannot read {path}: {error.strerror}") from None
        if len(text) > MAX_SPEC_BYTES:
            raise CommandError(f"{path} is larger than {MAX_SPEC_BYTES // 1024} KiB")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CommandError(f"{path} is not JSON: {error}") from None
        items = data if isinstance(data, list) else [data]
        specs = []
        for index, item in enumerate(items):
            try:
                specs.append(ReplicaSpec.from_dict(item))
            except SpecError as error:
                where = f"{path}[{index}]" if isinstance(data, list) else path
                raise CommandError(f"{where} is not a valid replica spec: {error}") from None
        if not specs:
            raise CommandError(f"{path} holds no replica spec")
        return specs

    @staticmethod
    def _specs_from_deployment(deployment_id: str) -> list[ReplicaSpec]:
        from scheduler import selectors
        from tenants.scoping import NotFound

        try:
            found = selectors.deployment_for_manifests(deployment_id)
        except (ObjectDoesNotExist, NotFound):
            raise CommandError(f"no deployment {deployment_id!r}") from None
        if found is None:
            raise CommandError(f"no deployment {deployment_id!r}")
        if isinstance(found, ReplicaSpec):
            specs = [found]
        elif hasattr(found, "groups"):
            specs = _replica_specs_from_manifest(found)
        else:
            specs = list(found)
        if not specs:
            raise CommandError(f"deployment {deployment_id!r} has no replicas to render")
        return specs


def _replica_specs_from_manifest(manifest) -> list[ReplicaSpec]:
    """ReplicaSpecs from the selector's per-deployment summary (replicas grouped by shape and
    node). The summary has no replica ids: each replica is named after its deployment,
    generation and node, so these manifests are for review and `kubectl diff`, not for
    applying beside the driver's own. Without the model's config.json, the manifests skip
    the quantization check and allow a 30-minute start-up."""
    specs = []
    for group in manifest.groups:
        for node in group.nodes:
            index = sum(1 for spec in specs if spec.node_id == node and spec.hardware == group.hardware)
            specs.append(ReplicaSpec(
                replica_id=f"{manifest.deployment_id}-g{group.generation}-{node}-{index}",
                deployment_id=manifest.deployment_id, model_source=manifest.source_uri,
                model_config=dict(getattr(manifest, "model_config", None) or {}), hardware=group.hardware,
                accelerators=group.accelerators, dtype=manifest.dtype, modality=manifest.modality,
                credential_ref=manifest.credential_ref, node_id=node,
            ))
    return specs
