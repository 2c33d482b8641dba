"""REST API of the catalog, the model registry and the estimator."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from scheduler import selectors, services
from scheduler.catalog import model_templates
from scheduler.estimator import Slo, Traffic
from scheduler.models import HardwareTier, RegisteredModel
from scheduler.selectors import quote_rows
from scheduler.services import architecture_from
from tenants.rest import StrictSerializer, TenantAPIView, page_of, paginated, valid
from tenants.roles import Scope

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


class HardwareTierOutput(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    accelerator = AcceleratorOutput(read_only=True)
    price_per_accelerator_hour = serializers.DecimalField(max_digits=12, decimal_places=6, coerce_to_string=True)

    class Meta:
        model = HardwareTier
        fields = ["id", "slug", "accelerator", "capacity_class", "price_per_accelerator_hour", "currency"]


class HardwareTierListView(TenantAPIView):
    """The tiers a deployment can run on, with specifications and prices."""

    required_scopes = {"GET": Scope.READ}

    @extend_schema(operation_id="hardware_tiers_list", responses=page_of(HardwareTierOutput))
    def get(self, request):
        return paginated(self, selectors.hardware_tier_list(), HardwareTierOutput)


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
