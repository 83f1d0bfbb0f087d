"""The generated checkpoint: real architecture, hub key layout, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _hub import hub_render

from vidchat.server.tiny_model import checkpoint_digest, make_tiny_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny", seed=0)


def test_same_seed_same_checkpoint_other_seed_other_weights(tiny: Path, tmp_path: Path):
    assert checkpoint_digest(make_tiny_model(tmp_path / "again", seed=0)) == \
        checkpoint_digest(tiny)
    assert checkpoint_digest(make_tiny_model(tmp_path / "other", seed=1)) != \
        checkpoint_digest(tiny)


def test_config_mirrors_llava_interleave_qwen(tiny: Path):
    cfg = json.loads((tiny / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert cfg["vision_feature_select_strategy"] == "full"
    assert cfg["vision_feature_layer"] == -1
    assert cfg["projector_hidden_act"] == "gelu"
    text, vision = cfg["text_config"], cfg["vision_config"]
    assert text["model_type"] == "qwen2"
    assert text["num_key_value_heads"] == text["num_attention_heads"]
    assert text["hidden_size"] // text["num_attention_heads"] == 64  # CPU attention needs it
    assert vision["model_type"] == "siglip_vision_model"
    assert (vision["image_size"], vision["patch_size"]) == (384, 14)


def test_weights_use_the_hub_key_layout(tiny: Path):
    from safetensors import safe_open

    with safe_open(str(tiny / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert all(k.startswith(("language_model.model.", "language_model.lm_head.",
                             "vision_tower.vision_model.", "multi_modal_projector."))
               for k in keys), keys
    assert "multi_modal_projector.linear_2.weight" in keys


def test_transformers_loads_it_whole_and_renders_images_first(tiny: Path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, info = LlavaForConditionalGeneration.from_pretrained(
        str(tiny), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    processor = AutoProcessor.from_pretrained(str(tiny))
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What happens?"}, {"type": "image"}, {"type": "image"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    # The reference: what the published checkpoints' template renders for the same messages.
    assert prompt == hub_render(messages) == (
        "<|im_start|>user\n<image><image>\nWhat happens?<|im_end|>\n<|im_start|>assistant\n")
    ids = processor.tokenizer(prompt)["input_ids"]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert ids.count(image_id) == 2 and image_id == model.config.image_token_id


@pytest.mark.parametrize("n_images", [1, 8])
def test_the_seed_baseline_sends_the_hub_prompt(tiny: Path, n_images: int):
    """Throughput comparisons compare equal work: the seed pipeline's prompt is the hub's."""
    import sys

    from _hub import hub_prompt
    from transformers import AutoProcessor

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from baselines import seed_prompt

    processor = AutoProcessor.from_pretrained(str(tiny))
    question = "Are these two cats doing the same thing?"
    assert seed_prompt(processor, n_images, question) == hub_prompt(n_images, question)
