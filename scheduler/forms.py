"""Forms of the model registry's and the deployments' console pages.

Forms check the shape of input; the registry's rules (what a valid source,
credential reference or config is) live in `scheduler.services`, whose
`ServiceError`s are put back on the field they name with `add_model_error`.
"""

import json
from functools import cache

from django import forms

from scheduler import selectors
from scheduler.architecture import MAX_CONFIG_BYTES, ConfigError, parse_config
from scheduler.autoscaling import Policy
from scheduler.catalog import model_templates
from scheduler.estimator import Slo, Traffic
from scheduler.models import Deployment, RegisteredModel
from tenants.errors import ServiceError

MAX_CONFIG_KIB = MAX_CONFIG_BYTES // 1024

SOURCE_HELP = "hf://org/name, s3://bucket/path, gs://…, https://…, oci://… or pvc://…"
CREDENTIAL_HELP = ("The NAME of the secret (e.g. a Kubernetes secret) holding the credentials of a private "
                   "source, such as hf-reader. Never the secret itself.")


# --- config.json as data ------------------------------------------------------------------


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def config_from_json(raw: bytes) -> dict:
    """A config.json's bytes as a JSON object: decoded as UTF-8 and parsed by `json.loads`, nothing else.

    The file is data, never code: no pickle, no YAML tags, no eval. NaN and Infinity
    are refused (they are not JSON, and PostgreSQL would refuse to store them).
    Raises forms.ValidationError with a message a person can act on.
    """
    if len(raw) > MAX_CONFIG_BYTES:
        raise forms.ValidationError(f"config.json has {len(raw) / 1024:,.0f} KiB; the limit is {MAX_CONFIG_KIB} KiB.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise forms.ValidationError(f"config.json is not UTF-8 text (byte {error.start}).") from None
    try:
        config = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise forms.ValidationError(
            f"config.json is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno}).") from None
    except ValueError as error:
        raise forms.ValidationError(f"config.json is not valid JSON: {error}.") from None
    except RecursionError:
        raise forms.ValidationError("config.json is nested too deeply to be a model config.") from None
    if not isinstance(config, dict):
        raise forms.ValidationError("config.json must hold one JSON object ({ … }), as Hugging Face's do.")
    return config


# --- Registering and editing --------------------------------------------------------------


@cache
def template_choices() -> list[tuple[str, str]]:
    """The built-in templates, each with its size, for a select."""
    choices = []
    for slug, template in model_templates().items():
        try:
            arch = parse_config(template["config"], modality=template["modality"])
        except ConfigError:
            # A broken built-in template is the catalog's bug; it is still offered, and the
            # service reports the field if someone picks it.
            choices.append((slug, template["name"]))
            continue
        size = f"{arch.total_params / 1e9:,.1f} B"
        if arch.is_moe:
            size += f", {arch.active_params / 1e9:,.1f} B active"
        choices.append((slug, f"{template['name']} — {size}, {template['modality']}"))
    return choices


DTYPE_CHOICES = [
    ("bf16", "bf16 — 16-bit weights"),
    ("fp8", "fp8 — 8-bit floating point"),
    ("int8", "int8 — 8-bit weight-only"),
    ("int4", "int4 — 4-bit weight-only (GPTQ/AWQ)"),
]


class ModelCreateForm(forms.Form):
    """Register a model. The architecture comes from exactly one of a template, pasted
    config.json text or an uploaded config.json file: `architecture` says which, and
    the other two inputs are ignored."""

    class Architecture:
        TEMPLATE = "template"
        PASTE = "paste"
        UPLOAD = "upload"

    ARCHITECTURE_CHOICES = [
        (Architecture.TEMPLATE, "Built-in template"),
        (Architecture.PASTE, "Paste config.json"),
        (Architecture.UPLOAD, "Upload config.json"),
    ]

    name = forms.CharField(label="Name", max_length=100,
                           widget=forms.TextInput(attrs={"placeholder": "e.g. support-chat", "autocomplete": "off"}))
    dtype = forms.ChoiceField(label="Weights dtype", choices=DTYPE_CHOICES, initial="bf16",
                              help_text="How the weights are stored when served. fp8 halves the memory of bf16.")
    source_uri = forms.CharField(
        label="Source URI", max_length=500, required=False,
        widget=forms.TextInput(attrs={"placeholder": "hf://meta-llama/Llama-3.1-8B-Instruct", "spellcheck": "false"}),
        help_text=f"Where the weights are: {SOURCE_HELP}. "
                  "With a template, leave empty for its Hugging Face repository.",
    )
    credential_ref = forms.CharField(
        label="Credential reference", max_length=253, required=False,
        widget=forms.TextInput(attrs={"placeholder": "hf-reader", "autocomplete": "off", "spellcheck": "false"}),
        help_text=CREDENTIAL_HELP,
    )
    modality = forms.ChoiceField(
        label="Modality", required=False,
        choices=[("", "Automatic (the template's, else text)"), *RegisteredModel.Modality.choices],
    )
    architecture = forms.ChoiceField(label="Architecture", choices=ARCHITECTURE_CHOICES, initial=Architecture.TEMPLATE,
                                     widget=forms.RadioSelect)
    template = forms.ChoiceField(label="Template", required=False)
    config_text = forms.CharField(
        label="config.json", required=False, strip=True,
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false", "class": "mono",
                                     "placeholder": '{"model_type": "llama", "num_hidden_layers": 32, …}'}),
        help_text=f"The model's Hugging Face config.json, up to {MAX_CONFIG_KIB} KiB.",
    )
    config_file = forms.FileField(
        label="config.json file", required=False,
        widget=forms.ClearableFileInput(attrs={"accept": "application/json,.json"}),
        help_text=f"Up to {MAX_CONFIG_KIB} KiB. Read as JSON data only.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].choices = [("", "Choose a template…"), *template_choices()]

    @property
    def config_field(self) -> str:
        """The input the architecture came from: where a config error is shown."""
        return {self.Architecture.TEMPLATE: "template", self.Architecture.PASTE: "config_text",
                self.Architecture.UPLOAD: "config_file"}.get(self.cleaned_data.get("architecture"), "template")

    def clean_config_file(self):
        upload = self.cleaned_data.get("config_file")
        if upload and upload.size > MAX_CONFIG_BYTES:
            # Refused on its declared size, before reading it.
            raise forms.ValidationError(
                f"The file has {upload.size / 1024:,.0f} KiB; config.json may have at most {MAX_CONFIG_KIB} KiB.")
        return upload

    def clean(self):
        cleaned = super().clean()
        architecture = cleaned.get("architecture")
        cleaned["config"] = None
        if architecture == self.Architecture.TEMPLATE:
            if not cleaned.get("template"):
                self.add_error("template", "Choose a template.")
        elif architecture == self.Architecture.PASTE:
            text = cleaned.get("config_text")
            if not text:
                self.add_error("config_text", "Paste the model's config.json.")
            else:
                try:
                    cleaned["config"] = config_from_json(text.encode("utf-8"))
                except forms.ValidationError as error:
                    self.add_error("config_text", error)
        elif architecture == self.Architecture.UPLOAD and "config_file" not in self.errors:
            upload = cleaned.get("config_file")
            if not upload:
                self.add_error("config_file", "Choose a config.json file.")
            else:
                try:
                    # One byte past the limit is enough to know it is too big, whatever the header said.
                    cleaned["config"] = config_from_json(upload.read(MAX_CONFIG_BYTES + 1))
                except forms.ValidationError as error:
                    self.add_error("config_file", error)
        return cleaned

    def service_arguments(self) -> dict:
        """`scheduler.services.model_create`'s arguments from the cleaned form."""
        data = self.cleaned_data
        from_template = data["architecture"] == self.Architecture.TEMPLATE
        return {
            "name": data["name"], "source_uri": data["source_uri"], "credential_ref": data["credential_ref"],
            "modality": data["modality"] or None, "dtype": data["dtype"],
            "template": data["template"] if from_template else "",
            "config": None if from_template else data["config"],
        }


class ModelEditForm(forms.Form):
    """What may change on a registered model; only the fields a person changed are sent."""

    name = forms.CharField(label="Name", max_length=100)
    dtype = forms.ChoiceField(label="Weights dtype", choices=DTYPE_CHOICES,
                              help_text="Changing it recomputes the weight size and every estimate.")
    source_uri = forms.CharField(label="Source URI", max_length=500, help_text=SOURCE_HELP,
                                 widget=forms.TextInput(attrs={"spellcheck": "false"}))
    credential_ref = forms.CharField(label="Credential reference", max_length=253, required=False,
                                     help_text=CREDENTIAL_HELP,
                                     widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}))

    field_order = ["name", "dtype", "source_uri", "credential_ref"]

    @classmethod
    def for_model(cls, model: RegisteredModel, data=None) -> "ModelEditForm":
        initial = {"name": model.name, "dtype": model.dtype, "source_uri": model.source_uri,
                   "credential_ref": model.credential_ref}
        return cls(data, initial=initial)

    def changes(self) -> dict:
        return {field: self.cleaned_data[field] for field in self.changed_data}


def add_model_error(form: forms.Form, error: ServiceError, config_field: str | None = None) -> None:
    """Show a registry service's refusal beside the input it names.

    Config errors name the config's own field (`config.num_key_value_heads`); they go
    beside the input the config came from, with that name in front, so the person
    knows which line of their config.json to fix.
    """
    field = error.field or ""
    if field == "config" or field.startswith("config."):
        message = error.message.removeprefix("Not a valid transformer config: ")
        text = message if field == "config" else f"{field}: {message}"
        form.add_error(config_field if config_field in form.fields else None, text)
        return
    form.add_error(field if field in form.fields else None, error.message)


def forget_credential_input(form: forms.Form) -> None:
    """Render a refused credential reference empty: it may be a pasted secret, which
    the page must not echo back."""
    if form.is_bound and "credential_ref" in form.errors:
        form.data = form.data.copy()
        form.data["credential_ref"] = ""


# --- Tier comparison ----------------------------------------------------------------------

# Azure LLM inference trace 2023, conversation: median and p95 prompt and output tokens.
TRACE_DEFAULTS = {
    "requests_per_s": 5, "input_tokens": 1020, "input_tokens_p95": 2734, "output_tokens": 129,
    "output_tokens_p95": 424, "ttft_p95_ms": 1500, "tpot_p95_ms": 60,
}


def _tokens(label: str) -> forms.IntegerField:
    return forms.IntegerField(label=label, min_value=1, max_value=1_000_000,
                              widget=forms.NumberInput(attrs={"step": 1, "inputmode": "numeric"}))


class EstimateForm(forms.Form):
    """Traffic and SLO to quote every tier for (GET parameters, so a comparison can be shared).

    Parameters left out of the URL take the trace defaults; one given empty or wrong is an error.
    """

    requests_per_s = forms.FloatField(label="Requests / s", min_value=0.001, max_value=1_000_000,
                                      widget=forms.NumberInput(attrs={"step": "any"}))
    input_tokens = _tokens("Input tokens, typical")
    input_tokens_p95 = _tokens("Input tokens, p95")
    output_tokens = _tokens("Output tokens, typical")
    output_tokens_p95 = _tokens("Output tokens, p95")
    ttft_p95_ms = forms.FloatField(label="p95 TTFT (ms)", min_value=1, max_value=600_000,
                                   widget=forms.NumberInput(attrs={"step": "any"}))
    tpot_p95_ms = forms.FloatField(label="p95 TPOT (ms)", min_value=0.1, max_value=60_000,
                                   widget=forms.NumberInput(attrs={"step": "any"}))
    dtype = forms.ChoiceField(label="Dtype", required=False)

    def __init__(self, query, *, model: RegisteredModel):
        data = {name: str(value) for name, value in TRACE_DEFAULTS.items()}
        data["dtype"] = ""
        data.update({name: query[name] for name in self.base_fields if name in query})
        super().__init__(data, auto_id="estimate_%s")
        self.fields["dtype"].choices = [("", f"The model's ({model.dtype})"), *DTYPE_CHOICES]

    def clean(self):
        cleaned = super().clean()
        for typical, p95 in (("input_tokens", "input_tokens_p95"), ("output_tokens", "output_tokens_p95")):
            if cleaned.get(typical) and cleaned.get(p95) and cleaned[p95] < cleaned[typical]:
                self.add_error(p95, f"Must be at least the typical size ({cleaned[typical]:,}).")
        return cleaned

    @property
    def traffic(self) -> Traffic:
        data = self.cleaned_data
        return Traffic(requests_per_s=data["requests_per_s"], input_tokens=data["input_tokens"],
                       output_tokens=data["output_tokens"], input_tokens_p95=data["input_tokens_p95"],
                       output_tokens_p95=data["output_tokens_p95"])

    @property
    def slo(self) -> Slo:
        return Slo(ttft_p95_ms=self.cleaned_data["ttft_p95_ms"], tpot_p95_ms=self.cleaned_data["tpot_p95_ms"])

    @property
    def dtype_override(self) -> str | None:
        return self.cleaned_data["dtype"] or None

    def query(self) -> dict[str, str]:
        """The parameters as given (defaults filled in), for the chart's URL and shared links."""
        return {name: self.data[name] for name in self.fields if self.data.get(name) not in (None, "")}


# --- Deployments --------------------------------------------------------------------------

TIER_AUTO, TIER_CHOOSE = "auto", "choose"

# A service's error field → the form field it is shown beside.
DEPLOYMENT_ERROR_FIELDS = {
    "slo.ttft_p95_ms": "ttft_p95_ms", "slo.tpot_p95_ms": "tpot_p95_ms",
    "traffic.requests_per_s": "requests_per_s",
    "traffic.input_tokens.typical": "input_tokens", "traffic.input_tokens.p95": "input_tokens_p95",
    "traffic.output_tokens.typical": "output_tokens", "traffic.output_tokens.p95": "output_tokens_p95",
    "autoscaling.target_concurrency_per_replica": "target_concurrency_per_replica",
    "autoscaling.scale_down_delay": "scale_down_delay",
    "autoscaling.scale_to_zero_after": "scale_to_zero_after",
}

# The policy fields the form edits; the others (window, panic …) are kept as the API set them.
FORM_POLICY_FIELDS = ("target_concurrency_per_replica", "scale_down_delay", "scale_to_zero_after")


def add_deployment_error(form: forms.Form, error: ServiceError) -> None:
    """Show a deployment service's refusal beside the input it names (`slo.ttft_p95_ms` → p95 TTFT)."""
    field = DEPLOYMENT_ERROR_FIELDS.get(error.field or "", error.field)
    if field == "tiers" and form.cleaned_data.get("tier_mode") == TIER_AUTO:
        field = "tier_mode"
    form.add_error(field if field in form.fields else None, error.message)


class DeploymentForm(forms.Form):
    """A deployment's desired state, as `deployment_create` takes it (`deployment_update` too, less the name).

    Shapes only: what a tier can serve, quotas and priority caps are the services' to judge.
    """

    name = forms.CharField(label="Name", max_length=63,
                           widget=forms.TextInput(attrs={"placeholder": "e.g. support-chat", "autocomplete": "off",
                                                         "spellcheck": "false"}),
                           help_text="Lowercase letters, digits and '-'. It names the Kubernetes objects and "
                                     "metrics, so it cannot be changed later.")
    model = forms.ModelChoiceField(label="Model", queryset=RegisteredModel.objects.none(), to_field_name="public_id",
                                   empty_label="Choose a model…")
    tier_mode = forms.ChoiceField(label="Hardware", widget=forms.RadioSelect, initial=TIER_AUTO,
                                  choices=[(TIER_AUTO, "Auto: the cheapest tier meeting the SLO"),
                                           (TIER_CHOOSE, "Choose the allowed tiers")])
    tiers = forms.MultipleChoiceField(label="Allowed tiers", required=False, widget=forms.CheckboxSelectMultiple)
    regions = forms.MultipleChoiceField(label="Regions", widget=forms.CheckboxSelectMultiple,
                                        error_messages={"required": "Choose at least one region."})
    min_replicas = forms.IntegerField(label="Min replicas", min_value=0, max_value=1000, initial=1)
    max_replicas = forms.IntegerField(label="Max replicas", min_value=1, max_value=1000, initial=1)
    ttft_p95_ms = EstimateForm.base_fields["ttft_p95_ms"]
    tpot_p95_ms = EstimateForm.base_fields["tpot_p95_ms"]
    requests_per_s = EstimateForm.base_fields["requests_per_s"]
    input_tokens = EstimateForm.base_fields["input_tokens"]
    input_tokens_p95 = EstimateForm.base_fields["input_tokens_p95"]
    output_tokens = EstimateForm.base_fields["output_tokens"]
    output_tokens_p95 = EstimateForm.base_fields["output_tokens_p95"]
    priority = forms.IntegerField(label="Priority", min_value=0, max_value=1000, initial=0,
                                  help_text="Higher is served first when capacity is short; the operator sets "
                                            "your maximum (0 unless agreed).")
    token_usage_source = forms.ChoiceField(label="Token usage from", choices=Deployment.TokenUsageSource.choices,
                                           initial=Deployment.TokenUsageSource.SCRAPE, widget=forms.RadioSelect)
    target_concurrency_per_replica = forms.FloatField(
        label="Target concurrency per replica", required=False, min_value=0.1, max_value=10_000,
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": "From the performance model"}),
        help_text="In-flight requests one replica should carry. Empty: what the performance model says a "
                  "replica serves within the SLO.")
    scale_down_delay = forms.FloatField(
        label="Scale-down delay (s)", min_value=0, max_value=86_400, initial=Policy().scale_down_delay,
        widget=forms.NumberInput(attrs={"step": "any"}),
        help_text="How long lower demand must hold before replicas are removed.")
    scale_to_zero_after = forms.FloatField(
        label="Scale to zero after (s)", required=False, min_value=30, max_value=30 * 86_400,
        widget=forms.NumberInput(attrs={"step": "any", "placeholder": "Never"}),
        help_text="Idle seconds before stopping the last replica; needs min replicas 0. Empty: never.")

    def __init__(self, data=None, *, tenant, initial=None, stored_policy: dict | None = None):
        super().__init__(data, initial=initial)
        self.stored_policy = dict(stored_policy or {})
        # The tenant's own models only: another tenant's id is "not a valid choice", like a missing one.
        self.fields["model"].queryset = selectors.model_list_for_tenant(tenant).order_by("name")
        self.fields["model"].label_from_instance = lambda model: f"{model.name} ({model.dtype})"
        tiers = list(selectors.hardware_tier_list().order_by("accelerator__name", "price_per_accelerator_hour"))
        self.fields["tiers"].choices = [
            (tier.slug, f"{tier.capacity_class} · {tier.price_per_accelerator_hour.normalize():f} {tier.currency}/h")
            for tier in tiers]
        self.tier_hardware = {tier.slug: tier.accelerator for tier in tiers}
        self.fields["regions"].choices = [(region.slug, f"{region.name} ({region.slug})" if region.name != region.slug
                                           else region.slug) for region in selectors.region_list()]

    def tier_groups(self) -> list[tuple[object, list]]:
        """The tier checkboxes grouped by hardware (accelerator type), for the template."""
        groups: dict = {}
        for checkbox in self["tiers"]:
            accelerator = self.tier_hardware[checkbox.data["value"]]
            groups.setdefault(accelerator, []).append(checkbox)
        return list(groups.items())

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("tier_mode") == TIER_CHOOSE and not cleaned.get("tiers") and "tiers" not in self.errors:
            self.add_error("tiers", "Choose at least one tier, or let auto pick.")
        minimum, maximum = cleaned.get("min_replicas"), cleaned.get("max_replicas")
        if minimum is not None and maximum is not None and minimum > maximum:
            self.add_error("min_replicas", f"Must not exceed max replicas ({maximum}).")
        for typical, p95 in (("input_tokens", "input_tokens_p95"), ("output_tokens", "output_tokens_p95")):
            if cleaned.get(typical) and cleaned.get(p95) and cleaned[p95] < cleaned[typical]:
                self.add_error(p95, f"Must be at least the typical size ({cleaned[typical]:,}).")
        return cleaned

    def _autoscaling(self) -> dict:
        """The stored policy with the form's fields set; a field at its default is left out, so an
        unchanged form does not show as a change."""
        policy = {name: value for name, value in self.stored_policy.items() if name not in FORM_POLICY_FIELDS}
        defaults = Policy()
        for name in FORM_POLICY_FIELDS:
            value = self.cleaned_data.get(name)
            if value is not None and value != getattr(defaults, name):
                policy[name] = value
        return policy

    def service_arguments(self) -> dict:
        """`deployment_create`'s arguments (without `name` for `deployment_update`)."""
        data = self.cleaned_data
        arguments = {
            "model": data["model"],
            "tiers": "auto" if data["tier_mode"] == TIER_AUTO else list(data["tiers"]),
            "regions": list(data["regions"]),
            "min_replicas": data["min_replicas"], "max_replicas": data["max_replicas"],
            "slo": Slo(ttft_p95_ms=data["ttft_p95_ms"], tpot_p95_ms=data["tpot_p95_ms"]),
            "traffic": Traffic(requests_per_s=data["requests_per_s"], input_tokens=data["input_tokens"],
                               output_tokens=data["output_tokens"], input_tokens_p95=data["input_tokens_p95"],
                               output_tokens_p95=data["output_tokens_p95"]),
            "autoscaling": self._autoscaling(), "priority": data["priority"],
            "token_usage_source": data["token_usage_source"],
        }
        if "name" in self.fields:
            arguments["name"] = data["name"]
        return arguments

    @staticmethod
    def initial_for_create(query) -> dict:
        """Defaults (the trace's traffic and SLO), overridden by a link's query parameters — the
        model page's "Deploy…" carries the comparison over. Bad values are simply not used."""
        initial = {name: value for name, value in TRACE_DEFAULTS.items()}
        for name in ("model", *TRACE_DEFAULTS):
            if query.get(name):
                initial[name] = query[name]
        return initial


class DeploymentEditForm(DeploymentForm):
    """What may change on a deployment: everything but its name."""

    def __init__(self, data=None, *, deployment: Deployment):
        policy = deployment.policy() if deployment.autoscaling else Policy()
        initial = {
            "model": deployment.model.public_id,
            "tier_mode": TIER_AUTO if deployment.tier_auto else TIER_CHOOSE,
            "tiers": [tier.slug for tier in deployment.tiers.all()],
            "regions": [region.slug for region in deployment.regions.all()],
            "min_replicas": deployment.min_replicas, "max_replicas": deployment.max_replicas,
            "ttft_p95_ms": deployment.slo_ttft_p95_ms, "tpot_p95_ms": deployment.slo_tpot_p95_ms,
            "requests_per_s": deployment.requests_per_s,
            "input_tokens": deployment.input_tokens, "input_tokens_p95": deployment.input_tokens_p95,
            "output_tokens": deployment.output_tokens, "output_tokens_p95": deployment.output_tokens_p95,
            "priority": deployment.priority, "token_usage_source": deployment.token_usage_source,
            "target_concurrency_per_replica": policy.target_concurrency_per_replica,
            "scale_down_delay": policy.scale_down_delay, "scale_to_zero_after": policy.scale_to_zero_after,
        }
        super().__init__(data, tenant=deployment.tenant, initial=initial, stored_policy=deployment.autoscaling)
        del self.fields["name"]
