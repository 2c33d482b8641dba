"""A model's architecture from its Hugging Face `config.json`. Pure: no Django.

`parse_config` validates a config as a transformer config and derives what the
performance model and the console need: parameter counts (total, and active per
token for mixture-of-experts), weight bytes for a dtype, KV-cache bytes per token,
context length. A config that is not a valid transformer config raises
ConfigError naming the field.
"""

from dataclasses import dataclass
from typing import Any

# Bytes per weight for each dtype / quantisation we serve.
WEIGHT_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
DTYPES = ("bf16", "fp8", "int8", "int4")

# Quantised checkpoints carry scales: one 2-byte scale per group of 128 weights for int4
# (GPTQ/AWQ group size 128), per output channel for fp8/int8 (negligible).
QUANT_SCALE_OVERHEAD = {"int4": 2.0 / 128}

# Activation functions of gated MLPs (three matrices: gate, up, down) vs plain MLPs (two).
GATED_ACTIVATIONS = {"silu", "swiglu", "geglu", "gelu_pytorch_tanh"}
GATED_MODEL_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen2_vl", "qwen2_5_vl", "gemma", "gemma2",
                     "phi3", "deepseek_v2", "deepseek_v3", "granite", "olmo2", "qwen3", "qwen3_moe"}

MAX_CONFIG_BYTES = 256 * 1024


class ConfigError(ValueError):
    """The config is not a usable transformer config; `field` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Architecture:
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    tie_word_embeddings: bool
    gated_mlp: bool
    num_experts: int = 1  # 1 = dense
    experts_per_token: int = 1
    expert_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    vision_params: int = 0  # a vision encoder's parameters, for vision-language models
    is_embedding: bool = False

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def attention_params_per_layer(self) -> int:
        q_and_o = 2 * self.hidden_size * self.num_attention_heads * self.head_dim
        k_and_v = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        return q_and_o + k_and_v

    def _mlp_params(self, intermediate: int) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * intermediate

    @property
    def expert_params_per_layer(self) -> int:
        """All routed experts' weights in one layer (0 for dense models)."""
        if not self.is_moe:
            return 0
        return self.num_experts * self._mlp_params(self.expert_intermediate_size)

    @property
    def dense_params_per_layer(self) -> int:
        """Weights every token uses in one layer: attention, norms, the dense or shared MLP, the router."""
        mlp = self._mlp_params(self.shared_expert_intermediate_size) + self.hidden_size * self.num_experts \
            if self.is_moe else self._mlp_params(self.intermediate_size)
        return self.attention_params_per_layer + mlp + 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        tables = 1 if self.tie_word_embeddings or self.is_embedding else 2
        return tables * self.vocab_size * self.hidden_size + self.hidden_size

    @property
    def total_params(self) -> int:
        per_layer = self.dense_params_per_layer + self.expert_params_per_layer
        return self.num_layers * per_layer + self.embedding_params + self.vision_params

    @property
    def active_params(self) -> int:
        """Parameters one token's forward pass multiplies through (routed experts: only its top-k)."""
        routed = self.experts_per_token * self._mlp_params(self.expert_intermediate_size) if self.is_moe else 0
        return self.num_layers * (self.dense_params_per_layer + routed) + self.embedding_params + self.vision_params

    @property
    def expert_params(self) -> int:
        return self.num_layers * self.expert_params_per_layer

    def weight_bytes(self, dtype: str) -> float:
        per_weight = WEIGHT_BYTES[dtype] + QUANT_SCALE_OVERHEAD.get(dtype, 0.0)
        # Embeddings and norms stay in 16-bit in quantised checkpoints.
        quantised = self.total_params - self.embedding_params
        return quantised * per_weight + self.embedding_params * 2.0

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2.0) -> float:
        """K and V for every layer: 2 × layers × KV heads × head dim × bytes."""
        if self.is_embedding:
            return 0.0
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * kv_dtype_bytes


def _int(config: dict, field: str, *, required: bool = True, default: int | None = None, minimum: int = 1) -> int:
    value = config.get(field, default)
    if value is None:
        if required:
            raise ConfigError(field, "is required in a transformer config.")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(field, f"must be an integer, not {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ConfigError(field, f"must be at least {minimum}, not {value}.")
    return value


def _vision_params(vision: dict) -> int:
    """A ViT encoder's parameters from its sub-config (layers × (attention + MLP))."""
    if not isinstance(vision, dict):
        raise ConfigError("vision_config", "must be an object.")
    layers = vision.get("depth") or vision.get("num_hidden_layers")
    width = vision.get("embed_dim") or vision.get("hidden_size")
    if not isinstance(layers, int) or not isinstance(width, int) or layers < 1 or width < 1:
        raise ConfigError("vision_config", "needs integer depth (or num_hidden_layers) and embed_dim (or hidden_size).")
    mlp = vision.get("intermediate_size") or int(width * vision.get("mlp_ratio", 4))
    merger = width * 4 * width * 4 + width * 4 * int(vision.get("out_hidden_size") or vision.get("hidden_size") or width)
    return layers * (4 * width * width + 2 * width * mlp) + merger


def parse_config(config: Any, *, modality: str = "text") -> Architecture:
    """Validate a Hugging Face config.json (already parsed JSON) and derive its architecture."""
    if not isinstance(config, dict):
        raise ConfigError("config", "must be a JSON object.")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    model_type = str(config.get("model_type") or text.get("model_type") or "")
    if not model_type:
        raise ConfigError("model_type", "is required (e.g. llama, mistral, qwen2, mixtral).")

    num_layers = _int(text, "num_hidden_layers")
    hidden = _int(text, "hidden_size")
    heads = _int(text, "num_attention_heads")
    kv_heads = _int(text, "num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise ConfigError("num_key_value_heads", f"must divide num_attention_heads ({heads}), not {kv_heads}.")
    head_dim = _int(text, "head_dim", required=False) or hidden // heads
    if not text.get("head_dim") and hidden % heads:
        raise ConfigError("num_attention_heads", f"must divide hidden_size ({hidden}) when head_dim is not given.")
    vocab = _int(text, "vocab_size")
    context = _int(text, "max_position_embeddings")
    intermediate = _int(text, "intermediate_size")

    experts = _int(text, "num_local_experts", required=False) or _int(text, "num_experts", required=False) or 1
    top_k = 1
    expert_intermediate = shared_intermediate = 0
    if experts > 1:
        top_k = _int(text, "num_experts_per_tok")
        if top_k > experts:
            raise ConfigError("num_experts_per_tok", f"cannot exceed the number of experts ({experts}).")
        expert_intermediate = _int(text, "moe_intermediate_size", required=False) or intermediate
        shared_intermediate = _int(text, "shared_expert_intermediate_size", required=False)

    activation = str(text.get("hidden_act") or text.get("hidden_activation") or "")
    gated = model_type in GATED_MODEL_TYPES or activation in GATED_ACTIVATIONS
    vision = _vision_params(config["vision_config"]) if "vision_config" in config else 0
    if modality == "vision-language" and not vision:
        raise ConfigError("vision_config", "is required for a vision-language model.")

    return Architecture(
        model_type=model_type, num_layers=num_layers, hidden_size=hidden, intermediate_size=intermediate,
        num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, vocab_size=vocab,
        context_length=context, tie_word_embeddings=bool(text.get("tie_word_embeddings", False)),
        gated_mlp=gated, num_experts=experts, experts_per_token=top_k,
        expert_intermediate_size=expert_intermediate, shared_expert_intermediate_size=shared_intermediate,
        vision_params=vision, is_embedding=modality == "embedding",
    )
