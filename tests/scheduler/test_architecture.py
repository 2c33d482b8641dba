"""Hugging Face configs → architecture: parameter counts against published figures, clear errors."""

import copy

import pytest

from scheduler.architecture import ConfigError, parse_config
from scheduler.catalog import model_templates

# Published parameter counts (model cards) and KV-cache sizes (shared/reference).
PUBLISHED = {
    "llama-3.1-8b": (8.03e9, 8.03e9, 128 * 1024),
    "llama-3.1-70b": (70.6e9, 70.6e9, 320 * 1024),
    "qwen2.5-7b": (7.61e9, 7.61e9, 56 * 1024),
    "qwen2.5-72b": (72.7e9, 72.7e9, 320 * 1024),
    "mistral-7b": (7.25e9, 7.25e9, 128 * 1024),
    "mixtral-8x7b": (46.7e9, 12.9e9, 128 * 1024),
    "qwen2-vl-7b": (8.29e9, 8.29e9, 56 * 1024),
    "bge-large-en-v1.5": (0.335e9, 0.335e9, 0),
}


@pytest.mark.parametrize("slug", sorted(PUBLISHED))
def test_templates_match_published_parameter_counts(slug):
    template = model_templates()[slug]
    arch = parse_config(template["config"], modality=template["modality"])
    total, active, kv = PUBLISHED[slug]
    assert arch.total_params == pytest.approx(total, rel=0.01)
    assert arch.active_params == pytest.approx(active, rel=0.01)
    assert arch.kv_bytes_per_token(2.0) == kv


def test_every_required_template_exists():
    assert {"llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "qwen2.5-72b", "mistral-7b", "mixtral-8x7b"} <= set(
        model_templates())
    modalities = {t["modality"] for t in model_templates().values()}
    assert {"text", "vision-language", "embedding"} <= modalities


def test_weight_bytes_follow_the_dtype():
    arch = parse_config(model_templates()["llama-3.1-8b"]["config"])
    assert arch.weight_bytes("bf16") == pytest.approx(16.06e9, rel=0.01)
    assert arch.weight_bytes("fp8") < arch.weight_bytes("bf16") * 0.6
    assert arch.weight_bytes("int4") < arch.weight_bytes("int8") < arch.weight_bytes("bf16")


def _llama():
    return copy.deepcopy(model_templates()["llama-3.1-8b"]["config"])


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda c: c.pop("num_hidden_layers"), "num_hidden_layers"),
        (lambda c: c.update(hidden_size="4096"), "hidden_size"),
        (lambda c: c.update(num_attention_heads=0), "num_attention_heads"),
        (lambda c: c.update(num_key_value_heads=5), "num_key_value_heads"),
        (lambda c: c.update(vocab_size=True), "vocab_size"),
        (lambda c: c.pop("model_type"), "model_type"),
        (lambda c: c.update(num_local_experts=8), "num_experts_per_tok"),
        (lambda c: c.update(num_local_experts=4, num_experts_per_tok=6), "num_experts_per_tok"),
    ],
)
def test_invalid_configs_name_the_field(change, field):
    config = _llama()
    change(config)
    with pytest.raises(ConfigError) as error:
        parse_config(config)
    assert error.value.field == field


def test_non_object_config_is_refused():
    with pytest.raises(ConfigError) as error:
        parse_config(["not", "a", "config"])
    assert error.value.field == "config"


def test_vision_language_needs_a_vision_config():
    with pytest.raises(ConfigError) as error:
        parse_config(_llama(), modality="vision-language")
    assert error.value.field == "vision_config"
