"""REST API of the catalog, the model registry, the estimator, deployments (tenant routes),
and the fleet (operator routes under /api/v1/fleet/)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from scheduler import selectors, services
from scheduler.autoscaling import PolicyError, policy_from_dict
from scheduler.catalog import model_templates
from scheduler.estimator import Slo, Traffic
from scheduler.models import Deployment, HardwareTier, Node, RegisteredModel, Replica
from scheduler.selectors import quote_rows
from scheduler.services import architecture_from
from tenants.errors import ServiceError
from tenants.models import Tenant
from tenants.pagination import RecentFirstCursorPagination
from tenants.rest import OperatorAPIView, StrictSerializer, TenantAPIView, page_of, paginated, valid
from tenants.roles import Scope, ServiceScope

# --- hardware tiers -----------------------------------------------------------------------


class AcceleratorOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    vendor = serializers.CharField()
    kind = serializers.CharField()
    memory_gb = serializers.DecimalField(max_digits=7, decimal_places=2, help_text="Decimal GB (10⁹ bytes).")
    memory_type = serializers.CharField()
    memory_bandwidth_tbs = serializers.DecimalField(max_digits=6, decimal_places=3)
    bf16_tflops = serializers.DecimalField(max_digits=7, decimal_places=1)
    fp8_tflops = serializers.DecimalField(max_digits=7, decimal_places=1, allow_null=True)
    interconnect_kind = serializers.CharField()
    interconnect_gbs = serializers.DecimalField(max_digits=7, decimal_places=1)
    accelerators_per_node = serializers.IntegerField()


class AvailabilityOutput(serializers.Serializer):
    region = serializers.CharField()
    free_accelerators = serializers.IntegerField(help_text="On ready nodes, held by no replica, right now.")


class HardwareTierOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    accelerator = AcceleratorOutput(read_only=True)
    price_per_accelerator_hour = serializers.DecimalField(max_digits=12, decimal_places=6, coerce_to_string=True)
    availability = serializers.SerializerMethodField(
        help_text="Free accelerators of this tier's hardware per region (shared by its capacity classes).")

    class Meta:
        model = HardwareTier
        fields = ["id", "slug", "accelerator", "capacity_class", "price_per_accelerator_hour", "currency",
                  "availability"]

    @extend_schema_field(AvailabilityOutput(many=True))
    def get_availability(self, tier):
        return self.context["availability"].get(tier.accelerator.slug, [])


class HardwareTierListView(TenantAPIView):
    """The tiers a deployment can run on, with specifications, prices and free capacity per region."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="hardware_tiers_list", responses=page_of(HardwareTierOutput))
    def get(self, request):
        return paginated(self, selectors.hardware_tier_list(), HardwareTierOutput,
                         context={"availability": selectors.availability_by_hardware()})


# --- models -------------------------------------------------------------------------------


class ModelOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)

    class Meta:
        model = RegisteredModel
        fields = ["id", "name", "source_uri", "credential_ref", "modality", "dtype", "template", "total_params",
                  "active_params", "weight_bytes", "kv_bytes_per_token", "context_length", "config", "created_at",
                  "updated_at"]


class ModelCreateInput(StrictSerializer):
    name = serializers.CharField(max_length=100)
    source_uri = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    credential_ref = serializers.CharField(max_length=253, required=False, allow_blank=True, default="",
                                           help_text="Name of the secret holding credentials for a private source.")
    modality = serializers.ChoiceField(choices=RegisteredModel.Modality.choices, required=False)
    dtype = serializers.ChoiceField(choices=RegisteredModel.Dtype.choices, required=False, default="bf16")
    config = serializers.JSONField(required=False, help_text="The model's Hugging Face config.json.")
    template = serializers.CharField(required=False, allow_blank=True, default="",
                                     help_text="A built-in template (see /api/v1/model-templates).")


class ModelPatchInput(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False)
    source_uri = serializers.CharField(max_length=500, required=False)
    credential_ref = serializers.CharField(max_length=253, required=False, allow_blank=True)
    modality = serializers.ChoiceField(choices=RegisteredModel.Modality.choices, required=False)
    dtype = serializers.ChoiceField(choices=RegisteredModel.Dtype.choices, required=False)
    config = serializers.JSONField(required=False)


class ModelListView(TenantAPIView):
    required_scopes = {"GET": Scope.READ, "POST": Scope.DEPLOY}

    @extend_schema(operation_id="models_list", responses=page_of(ModelOutput))
    def get(self, request):
        return paginated(self, selectors.model_list_for_tenant(self.actor.tenant), ModelOutput)

    @extend_schema(operation_id="models_create", request=ModelCreateInput, responses={201: ModelOutput})
    def post(self, request):
        data = valid(ModelCreateInput, request.data)
        model = services.model_create(actor=self.actor, **data)
        return Response(ModelOutput(model).data, status=status.HTTP_201_CREATED)


class ModelDetailView(TenantAPIView):
    required_scopes = {"GET": Scope.READ, "PATCH": Scope.DEPLOY, "DELETE": Scope.DEPLOY}

    def _model(self, model_id) -> RegisteredModel:
        return self.get_owned(selectors.model_list_for_tenant(self.actor.tenant), model_id)

    @extend_schema(operation_id="models_retrieve", responses=ModelOutput)
    def get(self, request, model_id):
        return Response(ModelOutput(self._model(model_id)).data)

    @extend_schema(operation_id="models_update", request=ModelPatchInput, responses=ModelOutput)
    def patch(self, request, model_id):
        model = self._model(model_id)
        data = valid(ModelPatchInput, request.data)
        return Response(ModelOutput(services.model_update(actor=self.actor, model=model, **data)).data)

    @extend_schema(operation_id="models_destroy", responses={204: None})
    def delete(self, request, model_id):
        services.model_delete(actor=self.actor, model=self._model(model_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelTemplateOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    source_uri = serializers.CharField()
    modality = serializers.CharField()
    total_params = serializers.IntegerField()
    active_params = serializers.IntegerField()
    context_length = serializers.IntegerField()
    config = serializers.JSONField()


class ModelTemplateListView(TenantAPIView):
    """Built-in architectures to register a model from without pasting its config."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="model_templates_list", responses=ModelTemplateOutput(many=True))
    def get(self, request):
        rows = []
        for slug, template in model_templates().items():
            arch = architecture_from(template["config"], template["modality"])
            rows.append({"slug": slug, **template, "total_params": arch.total_params,
                         "active_params": arch.active_params, "context_length": arch.context_length})
        return Response(ModelTemplateOutput(rows, many=True).data)


# --- estimates ----------------------------------------------------------------------------


class TokenShape(StrictSerializer):
    typical = serializers.IntegerField(min_value=1, max_value=1_000_000)
    p95 = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)

    def validate(self, data):
        data.setdefault("p95", data["typical"])
        if data["p95"] < data["typical"]:
            raise serializers.ValidationError({"p95": "must be at least the typical size."})
        return data


class TrafficInput(StrictSerializer):
    requests_per_s = serializers.FloatField(min_value=0.001, max_value=1_000_000)
    input_tokens = TokenShape()
    output_tokens = TokenShape()


class SloInput(StrictSerializer):
    ttft_p95_ms = serializers.FloatField(min_value=1, max_value=600_000)
    tpot_p95_ms = serializers.FloatField(min_value=0.1, max_value=60_000)


class EstimateInput(StrictSerializer):
    model = serializers.UUIDField(help_text="A registered model's id.")
    dtype = serializers.ChoiceField(choices=RegisteredModel.Dtype.choices, required=False,
                                    help_text="Defaults to the model's dtype.")
    traffic = TrafficInput()
    slo = SloInput()


class TierQuoteOutput(serializers.Serializer):
    tier = serializers.CharField()
    hardware = serializers.CharField()
    capacity_class = serializers.CharField()
    meets_slo = serializers.BooleanField()
    reason = serializers.CharField(help_text="Why the SLO cannot be met on this tier; empty when it can.")
    accelerators_per_replica = serializers.IntegerField()
    replicas = serializers.IntegerField()
    requests_per_s_per_replica = serializers.FloatField()
    ttft_p95_ms = serializers.FloatField(allow_null=True)
    tpot_p95_ms = serializers.FloatField(allow_null=True)
    cost_per_hour = serializers.DecimalField(max_digits=14, decimal_places=4)
    cost_per_million_output_tokens = serializers.DecimalField(max_digits=14, decimal_places=4, allow_null=True)
    currency = serializers.CharField()


class EstimateOutput(serializers.Serializer):
    model = serializers.UUIDField()
    dtype = serializers.CharField()
    auto = serializers.CharField(allow_null=True, help_text="The tier `auto` would deploy on (none meets the SLO: null).")
    tiers = TierQuoteOutput(many=True)


class EstimateView(TenantAPIView):
    """Quote every tier for a model and its traffic: latency, replicas, cost, and the `auto` pick."""

    required_scopes = {"POST": Scope.READ}

    @extend_schema(operation_id="estimates_create", request=EstimateInput, responses={200: EstimateOutput})
    def post(self, request):
        data = valid(EstimateInput, request.data)
        model = self.get_owned(selectors.model_list_for_tenant(self.actor.tenant), data["model"])
        traffic = data["traffic"]
        quote = selectors.model_quote(
            model,
            traffic=Traffic(requests_per_s=traffic["requests_per_s"],
                            input_tokens=traffic["input_tokens"]["typical"],
                            output_tokens=traffic["output_tokens"]["typical"],
                            input_tokens_p95=traffic["input_tokens"]["p95"],
                            output_tokens_p95=traffic["output_tokens"]["p95"]),
            slo=Slo(**data["slo"]), dtype=data.get("dtype"),
        )
        body = {"model": model.public_id, "dtype": data.get("dtype") or model.dtype,
                "auto": quote.auto.tier if quote.auto else None, "tiers": quote_rows(quote)}
        return Response(EstimateOutput(body).data)


# --- regions (what a deployment may name) ---------------------------------------------------


class SlugListField(serializers.ListField):
    """A to-many relation shown as its slugs (reads the prefetched rows: no query per object)."""

    child = serializers.CharField()

    def to_representation(self, related):
        return sorted(obj.slug for obj in related.all())


class RegionOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    zones = SlugListField()


class RegionListView(TenantAPIView):
    """The regions of the fleet, for a deployment's `regions`."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="regions_list", responses=page_of(RegionOutput))
    def get(self, request):
        return paginated(self, selectors.region_list(), RegionOutput)


# --- deployments ----------------------------------------------------------------------------

TIER_CHOICE_SCHEMA = {
    "oneOf": [{"type": "string", "enum": ["auto"]}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
    "description": '"auto" (any active on-demand or reserved tier; the cheapest meeting the SLO is preferred) '
                   "or the slugs of the allowed tiers.",
}


@extend_schema_field(TIER_CHOICE_SCHEMA)
class TierChoiceField(serializers.Field):
    default_error_messages = {"invalid": 'Give "auto" or a non-empty list of tier slugs.'}

    def to_internal_value(self, data):
        if data == services.AUTO:
            return data
        if isinstance(data, list) and data and all(isinstance(slug, str) and slug for slug in data):
            return data
        self.fail("invalid")

    def to_representation(self, value):
        return value


class DeploymentCreateInput(StrictSerializer):
    name = serializers.CharField(max_length=63, help_text="Lowercase letters, digits and '-' (a DNS label).")
    model = serializers.UUIDField(help_text="A registered model's id.")
    tiers = TierChoiceField(required=False, default=services.AUTO)
    regions = serializers.ListField(child=serializers.CharField(max_length=40), required=False, allow_empty=False,
                                    help_text="Region slugs (GET /api/v1/regions); default: every region.")
    min_replicas = serializers.IntegerField(min_value=0, max_value=services.MAX_REPLICAS, default=1)
    max_replicas = serializers.IntegerField(min_value=1, max_value=services.MAX_REPLICAS, required=False,
                                            help_text="Default: min_replicas (at least 1).")
    slo = SloInput()
    traffic = TrafficInput(help_text="The traffic you expect: sizes the replicas and the first placement.")
    autoscaling = serializers.JSONField(required=False, default=dict,
                                        help_text="Autoscaling policy fields; omitted ones take their defaults.")
    priority = serializers.IntegerField(min_value=0, max_value=services.MAX_PRIORITY, default=0,
                                        help_text="Higher is served first when capacity is short; at most the "
                                                  "tenant's max_priority (else 403).")
    token_usage_source = serializers.ChoiceField(choices=Deployment.TokenUsageSource.choices,
                                                 default=Deployment.TokenUsageSource.SCRAPE)

    def validate(self, data):
        data.setdefault("max_replicas", max(data["min_replicas"], 1))
        return data


class DeploymentPatchInput(StrictSerializer):
    name = serializers.CharField(max_length=63, required=False, help_text="Cannot be changed (400 if different).")
    model = serializers.UUIDField(required=False)
    tiers = TierChoiceField(required=False)
    regions = serializers.ListField(child=serializers.CharField(max_length=40), required=False, allow_empty=False)
    min_replicas = serializers.IntegerField(min_value=0, max_value=services.MAX_REPLICAS, required=False)
    max_replicas = serializers.IntegerField(min_value=1, max_value=services.MAX_REPLICAS, required=False)
    slo = SloInput(required=False, help_text="Replaced whole.")
    traffic = TrafficInput(required=False, help_text="Replaced whole.")
    autoscaling = serializers.JSONField(required=False, allow_null=True,
                                        help_text="Replaced whole; null: back to the defaults.")
    priority = serializers.IntegerField(min_value=0, max_value=services.MAX_PRIORITY, required=False)
    token_usage_source = serializers.ChoiceField(choices=Deployment.TokenUsageSource.choices, required=False)


def _traffic(data: dict) -> Traffic:
    return Traffic(requests_per_s=data["requests_per_s"], input_tokens=data["input_tokens"]["typical"],
                   output_tokens=data["output_tokens"]["typical"], input_tokens_p95=data["input_tokens"]["p95"],
                   output_tokens_p95=data["output_tokens"]["p95"])


def _service_arguments(actor, data: dict) -> dict:
    """Validated input → the service's arguments: the model fetched in the tenant, SLO and traffic typed."""
    arguments = dict(data)
    if "model" in arguments:
        model = selectors.model_list_for_tenant(actor.tenant).filter(public_id=arguments["model"]).first()
        if model is None:
            raise ServiceError("No model with this id in your tenant (GET /api/v1/models).", field="model")
        arguments["model"] = model
    if "slo" in arguments:
        arguments["slo"] = Slo(**arguments["slo"])
    if "traffic" in arguments:
        arguments["traffic"] = _traffic(arguments["traffic"])
    return arguments


class DeploymentModelOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    name = serializers.CharField()


class DeploymentSloOutput(serializers.Serializer):
    ttft_p95_ms = serializers.FloatField(source="slo_ttft_p95_ms")
    tpot_p95_ms = serializers.FloatField(source="slo_tpot_p95_ms")


class InputTokensOutput(serializers.Serializer):
    typical = serializers.IntegerField(source="input_tokens")
    p95 = serializers.IntegerField(source="input_tokens_p95")


class OutputTokensOutput(serializers.Serializer):
    typical = serializers.IntegerField(source="output_tokens")
    p95 = serializers.IntegerField(source="output_tokens_p95")


class DeploymentTrafficOutput(serializers.Serializer):
    requests_per_s = serializers.FloatField()
    input_tokens = InputTokensOutput(source="*")
    output_tokens = OutputTokensOutput(source="*")


class ReplicaOptionOutput(serializers.Serializer):
    hardware = serializers.CharField()
    accelerators = serializers.IntegerField(help_text="Per replica: the tensor-parallel degree.")
    rps_per_replica = serializers.FloatField(help_text="Requests/s one replica serves within the SLO.")
    ttft_p95_ms = serializers.FloatField()
    tpot_p95_ms = serializers.FloatField()


class ReplicaSummaryOutput(serializers.Serializer):
    total = serializers.IntegerField(source="replicas_total", help_text="Replicas holding accelerators.")
    ready = serializers.IntegerField(source="replicas_ready")
    accelerators = serializers.IntegerField(source="accelerators_in_use")


class DeploymentOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    name = serializers.CharField()
    model = DeploymentModelOutput()
    tiers = serializers.SerializerMethodField()
    regions = SlugListField()
    min_replicas = serializers.IntegerField()
    max_replicas = serializers.IntegerField()
    slo = DeploymentSloOutput(source="*")
    traffic = DeploymentTrafficOutput(source="*")
    autoscaling = serializers.SerializerMethodField(help_text="The effective policy, defaults filled in.")
    priority = serializers.IntegerField()
    token_usage_source = serializers.CharField()
    status = serializers.ChoiceField(choices=Deployment.Status.choices)
    generation = serializers.IntegerField(help_text="Grows when replicas must be replaced (model, tiers, shape).")
    budget_replica_cap = serializers.IntegerField(allow_null=True, help_text="Set by a budget action; null: none.")
    replica_options = ReplicaOptionOutput(many=True, help_text="What one replica serves on each allowed hardware.")
    replicas = ReplicaSummaryOutput(source="*")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(TIER_CHOICE_SCHEMA)
    def get_tiers(self, deployment):
        return services.AUTO if deployment.tier_auto else sorted(tier.slug for tier in deployment.tiers.all())

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_autoscaling(self, deployment):
        try:
            return policy_from_dict(deployment.autoscaling or None).to_dict()
        except PolicyError:  # validated on write; a policy field renamed since shows as stored
            return deployment.autoscaling


class DeploymentFilter(StrictSerializer):
    status = serializers.ChoiceField(choices=Deployment.Status.choices, required=False)
    page = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


class DeploymentAPIView(TenantAPIView):
    def _deployment(self, deployment_id) -> Deployment:
        return self.get_owned(selectors.deployment_list_for_tenant(self.actor.tenant), deployment_id)

    def _output(self, deployment: Deployment, status_code: int = status.HTTP_200_OK) -> Response:
        fresh = self._deployment(deployment.public_id)  # with its replica counts
        return Response(DeploymentOutput(fresh).data, status=status_code)


class DeploymentListView(DeploymentAPIView):
    required_scopes = {"GET": Scope.READ, "POST": Scope.DEPLOY}

    @extend_schema(operation_id="deployments_list", responses=page_of(DeploymentOutput),
                   parameters=[OpenApiParameter("status", str, enum=Deployment.Status.values)])
    def get(self, request):
        filters = valid(DeploymentFilter, request.query_params.dict())
        deployments = selectors.deployment_list_for_tenant(self.actor.tenant)
        if "status" in filters:
            deployments = deployments.filter(status=filters["status"])
        return paginated(self, deployments, DeploymentOutput)

    @extend_schema(operation_id="deployments_create", request=DeploymentCreateInput, responses={201: DeploymentOutput},
                   description="Checks that the model fits an allowed tier and meets the SLO there (else 400 naming "
                               "the closest tier and its predicted p95s), then stores the deployment as `pending`; "
                               "the reconcile loop places its replicas.")
    def post(self, request):
        data = valid(DeploymentCreateInput, request.data)
        deployment = services.deployment_create(actor=self.actor, **_service_arguments(self.actor, data))
        return self._output(deployment, status.HTTP_201_CREATED)


class DeploymentDetailView(DeploymentAPIView):
    required_scopes = {"GET": Scope.READ, "PATCH": Scope.DEPLOY, "DELETE": Scope.DEPLOY}

    @extend_schema(operation_id="deployments_retrieve", responses=DeploymentOutput)
    def get(self, request, deployment_id):
        return Response(DeploymentOutput(self._deployment(deployment_id)).data)

    @extend_schema(operation_id="deployments_update", request=DeploymentPatchInput, responses=DeploymentOutput,
                   description="Everything is checked again. A new model, tier choice or replica shape starts a new "
                               "`generation`: replicas are replaced by a rolling update.")
    def patch(self, request, deployment_id):
        deployment = self._deployment(deployment_id)
        data = valid(DeploymentPatchInput, request.data)
        deployment = services.deployment_update(actor=self.actor, deployment=deployment,
                                                **_service_arguments(self.actor, data))
        return self._output(deployment)

    @extend_schema(operation_id="deployments_destroy", responses={202: DeploymentOutput},
                   description="Accepted: the status becomes `deleting`; replicas drain, then the deployment is "
                               "removed (a GET then answers 404).")
    def delete(self, request, deployment_id):
        deployment = services.deployment_delete(actor=self.actor, deployment=self._deployment(deployment_id))
        return self._output(deployment, status.HTTP_202_ACCEPTED)


class DeploymentPauseView(DeploymentAPIView):
    required_scopes = {"POST": Scope.DEPLOY}

    @extend_schema(operation_id="deployments_pause", request=None, responses=DeploymentOutput,
                   description="Stops every replica and frees its accelerators (billing stops with them).")
    def post(self, request, deployment_id):
        deployment = services.deployment_pause(actor=self.actor, deployment=self._deployment(deployment_id))
        return self._output(deployment)


class DeploymentResumeView(DeploymentAPIView):
    required_scopes = {"POST": Scope.DEPLOY}

    @extend_schema(operation_id="deployments_resume", request=None, responses=DeploymentOutput,
                   description="A paused deployment goes back to `pending` and is placed again.")
    def post(self, request, deployment_id):
        deployment = services.deployment_resume(actor=self.actor, deployment=self._deployment(deployment_id))
        return self._output(deployment)


class DeploymentEventOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    time = serializers.DateTimeField(source="created_at")
    kind = serializers.CharField()
    message = serializers.CharField()
    data = serializers.JSONField()


class DeploymentEventListView(DeploymentAPIView):
    """The deployment's timeline, newest first."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="deployments_events_list", responses=page_of(DeploymentEventOutput, cursor=True))
    def get(self, request, deployment_id):
        events = selectors.deployment_event_list(self._deployment(deployment_id))
        return paginated(self, events, DeploymentEventOutput, RecentFirstCursorPagination)


class OptionOutput(serializers.Serializer):
    hardware = serializers.CharField()
    accelerators = serializers.IntegerField()
    rps_per_replica = serializers.FloatField()


class AlternativeOutput(serializers.Serializer):
    option = OptionOutput()
    why = serializers.CharField(help_text="Why this option was not chosen.")


class ChosenOptionOutput(serializers.Serializer):
    hardware = serializers.CharField()
    accelerators = serializers.IntegerField()
    rps_per_replica = serializers.FloatField()


class PlacementOutput(serializers.Serializer):
    chosen = ChosenOptionOutput(source="*")
    cost_per_hour = serializers.DecimalField(max_digits=14, decimal_places=6)
    currency = serializers.CharField()
    alternatives = AlternativeOutput(many=True)
    decided_at = serializers.DateTimeField(source="created_at")


class ReplicaOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    state = serializers.ChoiceField(choices=Replica.State.choices)
    node = serializers.CharField(source="node.name")
    zone = serializers.CharField(source="node.zone.slug")
    region = serializers.CharField(source="node.zone.region.slug")
    hardware = serializers.CharField(source="node.accelerator.slug")
    tier = serializers.CharField(source="tier.slug")
    accelerators = serializers.IntegerField()
    generation = serializers.IntegerField()
    endpoint = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    ready_at = serializers.DateTimeField(allow_null=True)
    stopped_at = serializers.DateTimeField(allow_null=True)
    placement = PlacementOutput(allow_null=True, help_text="Why the replica runs where it does.")


class ReplicaFilter(StrictSerializer):
    state = serializers.ListField(child=serializers.ChoiceField(choices=Replica.State.choices), required=False)
    page = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


class DeploymentReplicaListView(DeploymentAPIView):
    """The deployment's replicas, newest first, each with its placement decision."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="deployments_replicas_list", responses=page_of(ReplicaOutput),
                   parameters=[OpenApiParameter("state", str, description="Comma-separated replica states.")])
    def get(self, request, deployment_id):
        deployment = self._deployment(deployment_id)
        query = request.query_params.dict()
        if query.get("state"):
            query["state"] = query["state"].split(",")
        filters = valid(ReplicaFilter, query)
        replicas = selectors.replica_list_for_deployment(deployment, states=filters.get("state"))
        return paginated(self, replicas, ReplicaOutput)


# --- the fleet (operator routes) ------------------------------------------------------------


class NodeOutput(serializers.Serializer):
    name = serializers.CharField()
    region = serializers.CharField(source="zone.region.slug")
    zone = serializers.CharField(source="zone.slug")
    hardware = serializers.CharField(source="accelerator.slug")
    accelerators = serializers.IntegerField()
    used_accelerators = serializers.IntegerField(help_text="Held by replicas that are not stopped or failed.")
    free_accelerators = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Node.State.choices)
    labels = serializers.DictField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class NodeReplicaOutput(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    tenant = serializers.CharField(source="tenant.slug")
    deployment = serializers.CharField(source="deployment.name")
    deployment_id = serializers.UUIDField(source="deployment.public_id")
    tier = serializers.CharField(source="tier.slug")
    accelerators = serializers.IntegerField()
    generation = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Replica.State.choices)


class NodeDetailOutput(NodeOutput):
    replicas = NodeReplicaOutput(many=True, help_text="Replicas holding accelerators on the node.")


class NodeFilter(StrictSerializer):
    region = serializers.CharField(required=False, max_length=40)
    hardware = serializers.CharField(required=False, max_length=40)
    state = serializers.ChoiceField(choices=Node.State.choices, required=False)
    page = serializers.IntegerField(required=False, min_value=1)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=200)


class FleetNodeListView(OperatorAPIView):
    required_scopes = {"GET": ServiceScope.FLEET}

    @extend_schema(operation_id="fleet_nodes_list", responses=page_of(NodeOutput),
                   parameters=[OpenApiParameter("region", str), OpenApiParameter("hardware", str),
                               OpenApiParameter("state", str, enum=Node.State.values)])
    def get(self, request):
        filters = valid(NodeFilter, request.query_params.dict())
        nodes = selectors.node_list(region=filters.get("region"), hardware=filters.get("hardware"),
                                    state=filters.get("state"))
        return paginated(self, nodes, NodeOutput)


class FleetNodeDetailView(OperatorAPIView):
    required_scopes = {"GET": ServiceScope.FLEET}

    @extend_schema(operation_id="fleet_nodes_retrieve", responses=NodeDetailOutput)
    def get(self, request, node_name):
        node = selectors.node_by_name(node_name)
        return Response({**NodeOutput(node).data,
                         "replicas": NodeReplicaOutput(selectors.replica_list_on_node(node), many=True).data})


class NodeActionInput(StrictSerializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="",
                                   help_text="Kept in the fleet event log.")


class NodeActionView(OperatorAPIView):
    """Base of the node actions: one service each; the answer is the node as it is now."""

    required_scopes = {"POST": ServiceScope.FLEET}
    service = None

    def act(self, request, node_name) -> Response:
        node = selectors.node_by_name(node_name)
        data = valid(NodeActionInput, request.data or {})
        type(self).service(operator=self.operator, node=node, reason=data["reason"])
        return Response(NodeOutput(selectors.node_by_name(node_name)).data)


class NodeCordonView(NodeActionView):
    service = staticmethod(services.node_cordon)

    @extend_schema(operation_id="fleet_nodes_cordon", request=NodeActionInput, responses=NodeOutput,
                   description="No new replicas on the node; those it runs stay. From draining: stops the drain.")
    def post(self, request, node_name):
        return self.act(request, node_name)


class NodeUncordonView(NodeActionView):
    service = staticmethod(services.node_uncordon)

    @extend_schema(operation_id="fleet_nodes_uncordon", request=NodeActionInput, responses=NodeOutput,
                   description="Back in service: the node takes new replicas (also how a repaired down node "
                               "returns).")
    def post(self, request, node_name):
        return self.act(request, node_name)


class NodeDrainView(NodeActionView):
    service = staticmethod(services.node_drain)

    @extend_schema(operation_id="fleet_nodes_drain", request=NodeActionInput, responses=NodeOutput,
                   description="The reconcile loop moves the node's replicas elsewhere (replacement first); once "
                               "empty the node becomes cordoned.")
    def post(self, request, node_name):
        return self.act(request, node_name)


class NodeMarkDownView(NodeActionView):
    service = staticmethod(services.node_mark_down)

    @extend_schema(operation_id="fleet_nodes_mark_down", request=NodeActionInput, responses=NodeOutput,
                   description="The node is gone: its replicas are failed now, and the reconcile loop places "
                               "replacements elsewhere.")
    def post(self, request, node_name):
        return self.act(request, node_name)


class ZoneOutput(serializers.Serializer):
    slug = serializers.CharField()
    nodes = serializers.IntegerField(source="node_count")


class RegionCapacityOutput(serializers.Serializer):
    hardware = serializers.CharField()
    nodes = serializers.IntegerField()
    total_accelerators = serializers.IntegerField()
    free_accelerators = serializers.IntegerField(help_text="On ready nodes, held by no replica.")


class FleetRegionOutput(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    zones = ZoneOutput(many=True)
    capacity = RegionCapacityOutput(many=True)


class FleetRegionListView(OperatorAPIView):
    required_scopes = {"GET": ServiceScope.FLEET}

    @extend_schema(operation_id="fleet_regions_list", responses=FleetRegionOutput(many=True))
    def get(self, request):
        capacity = {}
        for row in selectors.fleet_capacity_by_region():
            capacity.setdefault(row.region, []).append(row)
        rows = [{"slug": region.slug, "name": region.name, "capacity": capacity.get(region.slug, []),
                 "zones": region.zones.all()} for region in selectors.fleet_region_list()]
        return Response(FleetRegionOutput(rows, many=True).data)


class QuotaOutput(serializers.Serializer):
    tier = serializers.CharField()
    max_accelerators = serializers.IntegerField()
    source = serializers.ChoiceField(choices=["tier", "tenant", "site"],
                                     help_text="tier: set for this tier; tenant: the tenant's default; site: "
                                               "SWITCHYARD_DEFAULT_ACCELERATOR_QUOTA.")
    in_use = serializers.IntegerField(help_text="Accelerators the tenant's replicas hold on the tier now.")


class TenantQuotasOutput(serializers.Serializer):
    tenant = serializers.UUIDField()
    quotas = QuotaOutput(many=True)


class QuotaInput(StrictSerializer):
    tier = serializers.CharField(max_length=60)
    max_accelerators = serializers.IntegerField(min_value=0, max_value=services.MAX_QUOTA)


class TenantQuotasInput(StrictSerializer):
    quotas = QuotaInput(many=True, help_text="The tiers with their own quota; every other tier takes the default.")

    def validate_quotas(self, quotas):
        tiers = [quota["tier"] for quota in quotas]
        repeated = sorted({tier for tier in tiers if tiers.count(tier) > 1})
        if repeated:
            raise serializers.ValidationError(f"Each tier once: {', '.join(repeated)} repeated.")
        return quotas


class FleetTenantQuotasView(OperatorAPIView):
    """A tenant's accelerator quota per hardware tier (placement never exceeds it)."""

    required_scopes = {"GET": ServiceScope.FLEET, "PUT": ServiceScope.FLEET}

    def _answer(self, tenant: Tenant) -> Response:
        body = {"tenant": tenant.public_id, "quotas": selectors.tenant_quotas(tenant)}
        return Response(TenantQuotasOutput(body).data)

    @extend_schema(operation_id="fleet_tenant_quotas_retrieve", responses=TenantQuotasOutput)
    def get(self, request, tenant_id):
        return self._answer(selectors.tenant_by_id(tenant_id))

    @extend_schema(operation_id="fleet_tenant_quotas_update", request=TenantQuotasInput,
                   responses=TenantQuotasOutput)
    def put(self, request, tenant_id):
        tenant = selectors.tenant_by_id(tenant_id)
        data = valid(TenantQuotasInput, request.data)
        services.tenant_quotas_set(operator=self.operator, tenant=tenant,
                                   quotas={quota["tier"]: quota["max_accelerators"] for quota in data["quotas"]})
        return self._answer(tenant)


class TenantLimitsOutput(serializers.Serializer):
    tenant = serializers.UUIDField()
    max_priority = serializers.IntegerField()
    default_accelerator_quota = serializers.IntegerField(allow_null=True, help_text="As set; null: the site default.")
    effective_default_accelerator_quota = serializers.IntegerField()


class TenantLimitsInput(StrictSerializer):
    max_priority = serializers.IntegerField(min_value=0, max_value=services.MAX_PRIORITY)
    default_accelerator_quota = serializers.IntegerField(min_value=0, max_value=services.MAX_QUOTA, allow_null=True)


class FleetTenantLimitsView(OperatorAPIView):
    """A tenant's limits: the highest deployment priority it may set, its default accelerator quota."""

    required_scopes = {"GET": ServiceScope.FLEET, "PUT": ServiceScope.FLEET}

    def _answer(self, tenant: Tenant) -> Response:
        limits = selectors.tenant_limits(tenant)
        body = {"tenant": tenant.public_id, "max_priority": limits.max_priority,
                "default_accelerator_quota": limits.default_accelerator_quota
                if limits.default_accelerator_quota_is_set else None,
                "effective_default_accelerator_quota": limits.default_accelerator_quota}
        return Response(TenantLimitsOutput(body).data)

    @extend_schema(operation_id="fleet_tenant_limits_retrieve", responses=TenantLimitsOutput)
    def get(self, request, tenant_id):
        return self._answer(selectors.tenant_by_id(tenant_id))

    @extend_schema(operation_id="fleet_tenant_limits_update", request=TenantLimitsInput, responses=TenantLimitsOutput)
    def put(self, request, tenant_id):
        tenant = selectors.tenant_by_id(tenant_id)
        data = valid(TenantLimitsInput, request.data)
        services.tenant_limits_set(operator=self.operator, tenant=tenant, **data)
        return self._answer(tenant)


class FleetEventOutput(serializers.Serializer):
    time = serializers.DateTimeField(source="created_at")
    actor = serializers.CharField()
    action = serializers.CharField()
    object_type = serializers.CharField()
    object_id = serializers.CharField()
    changes = serializers.JSONField()
    source_ip = serializers.IPAddressField(allow_null=True)


class FleetEventListView(OperatorAPIView):
    """The operator's log: node actions and fleet imports, newest first."""

    required_scopes = {"GET": ServiceScope.FLEET}

    @extend_schema(operation_id="fleet_events_list", responses=page_of(FleetEventOutput, cursor=True))
    def get(self, request):
        return paginated(self, selectors.fleet_event_list(), FleetEventOutput, RecentFirstCursorPagination)
