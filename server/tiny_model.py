"""`vidchat make-tiny-model DIR`: a random-weight llava-interleave-qwen checkpoint.

There is no model hub on the test machines, so the project makes its own checkpoint with the
real architecture scaled down: `LlavaForConditionalGeneration` = Qwen2 text model (as many KV
heads as attention heads, like Qwen1.5) + SigLIP vision tower (384 px, patch 14: 729 tokens per
image, every feature kept, last layer) + 2-layer GELU projector, a byte-level BPE tokenizer
trained here with the Qwen specials and `<image>`, and the llava-interleave chat template.

The weights are written in the hub's key layout (`language_model.model.*`,
`vision_tower.vision_model.*`, `multi_modal_projector.*`), which both transformers and vLLM
load. Output is deterministic for a given preset and seed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vidchat.errors import VidchatError
from vidchat.limits import FRAME_SIZE, PATCH_SIZE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
TEMPLATE_FILE = Path(__file__).with_name("llava_interleave.jinja")
# Bumped whenever the generator's output changes, so that profiles regenerate checkpoints
# made by an older one (2: the chat template renders like the hub's, no "\n" after images).
GENERATOR_VERSION = 2
STAMP_FILE = "vidchat-checkpoint.json"


@dataclass(frozen=True)
class Preset:
    """Sizes of one generated checkpoint. Everything else mirrors the real config."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_mlp: int
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    bpe_vocab: int


PRESETS = {
    # Smallest that vLLM's CPU attention accepts (head_dim 64): fast to load and run in tests.
    "tiny": Preset(
        text_hidden=128, text_layers=2, text_heads=2, text_mlp=256,
        vision_hidden=128, vision_layers=2, vision_heads=2, vision_mlp=256, bpe_vocab=1024,
    ),
    # For benchmarks (docs/benchmarks.md): the real 0.5b's layer shape (hidden 1024, 16 heads
    # of 64, MLP 2816, no GQA) with 8 of its 24 layers: ~0.1 B parameters, 0.2 GB of bf16
    # weights and 32 KiB of KV per token. Measured on 2 cores with transformers at batch 1, a
    # decode step costs 11 / 22 / 46 ms at 4 / 8 / 16 layers: proportional to the bytes read,
    # i.e. bound by memory traffic as on the real model (the "tiny" preset: 1.7 ms, all
    # overhead). 8 layers keep that property at half the time of 16, so the whole benchmark,
    # sequential transformers baseline included, runs in minutes. The vision tower stays tiny:
    # prefill of 729-token frames is the part that costs the same in every engine.
    "bench": Preset(
        text_hidden=1024, text_layers=8, text_heads=16, text_mlp=2816,
        vision_hidden=128, vision_layers=2, vision_heads=2, vision_mlp=256, bpe_vocab=1024,
    ),
}


class TinyModelError(VidchatError):
    """The checkpoint could not be generated."""


def _corpus() -> list[str]:
    """Training text for the BPE tokenizer: plain English about videos, made here."""
    subjects = ["the cat", "a dog", "two people", "the car", "a bird", "the camera", "a child"]
    verbs = ["walks", "runs", "sits", "jumps", "looks", "moves", "sleeps", "plays", "turns"]
    places = ["in the room", "on the street", "near the window", "in the park", "at night",
              "under the table", "in the first frame", "at the end of the video"]
    questions = ["What is happening in this video?", "Describe the scene.",
                 "How many objects are there?", "What color is it?", "Are they the same?",
                 "Summarize the video in one sentence.", "What changes between the frames?"]
    lines = []
    for s in subjects:
        for v in verbs:
            for p in places:
                lines.append(f"{s.capitalize()} {v} {p}.")
    lines += questions * 20
    lines += [f"Frame {i} at {i * 0.5:.1f} s, {i}:{i:02d}" for i in range(200)]
    return lines


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    # Specials go after the learned vocabulary, in Qwen's order, like the real checkpoint.
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def _round_up(n: int, multiple: int = 64) -> int:
    return (n + multiple - 1) // multiple * multiple


def build_config(preset: Preset, token_ids: dict[str, int], vocab_size: int) -> dict:
    """config.json, field for field as llava-interleave-qwen-0.5b-hf, sizes from the preset."""
    return {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "ignore_index": -100,
        "image_token_index": token_ids["<image>"],
        "projector_hidden_act": "gelu",
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "image_seq_length": (FRAME_SIZE // PATCH_SIZE) ** 2,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "text_config": {
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_size": preset.text_hidden,
            "intermediate_size": preset.text_mlp,
            "num_hidden_layers": preset.text_layers,
            "num_attention_heads": preset.text_heads,
            # Qwen1.5 has no grouped-query attention: as many KV heads as heads.
            "num_key_value_heads": preset.text_heads,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "use_sliding_window": False,
            "sliding_window": None,
            "max_window_layers": preset.text_layers,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "tie_word_embeddings": False,
            "use_cache": True,
            "vocab_size": vocab_size,
            "bos_token_id": token_ids["<|endoftext|>"],
            "eos_token_id": token_ids["<|im_end|>"],
            "torch_dtype": "bfloat16",
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": preset.vision_hidden,
            "intermediate_size": preset.vision_mlp,
            "num_hidden_layers": preset.vision_layers,
            "num_attention_heads": preset.vision_heads,
            "image_size": FRAME_SIZE,
            "patch_size": PATCH_SIZE,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
            "vision_use_head": False,
        },
    }


def _hub_key(key: str) -> str:
    """transformers' in-memory parameter name -> the hub checkpoint's name."""
    if key.startswith("model.language_model."):
        return "language_model.model." + key.removeprefix("model.language_model.")
    if key.startswith("lm_head."):
        return "language_model." + key
    if key.startswith("model.vision_tower."):
        rest = key.removeprefix("model.vision_tower.")
        if not rest.startswith("vision_model."):
            rest = "vision_model." + rest
        return "vision_tower." + rest
    if key.startswith("model.multi_modal_projector."):
        return key.removeprefix("model.")
    raise TinyModelError(f"unexpected parameter {key!r}: transformers changed its layout")


def _write_tokenizer_files(out: Path, tok, token_ids: dict[str, int]) -> None:
    template = TEMPLATE_FILE.read_text()
    tok.save(str(out / "tokenizer.json"))
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for t, i in token_ids.items()
    }
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<image>"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "extra_special_tokens": {"image_token": "<image>"},
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "errors": "replace",
        "chat_template": template,
        "processor_class": "LlavaProcessor",
    }, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<image>"],
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
    }, indent=2))
    (out / "chat_template.jinja").write_text(template)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor",
        "processor_class": "LlavaProcessor",
        "do_resize": True, "size": {"height": FRAME_SIZE, "width": FRAME_SIZE},
        "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }, indent=2))
    (out / "processor_config.json").write_text(json.dumps({
        "processor_class": "LlavaProcessor",
        "image_token": "<image>",
        "patch_size": PATCH_SIZE,
        "vision_feature_select_strategy": "full",
        "num_additional_image_tokens": 0,
    }, indent=2))


def is_current(model_dir: str | Path, preset: str) -> bool:
    """Whether ``model_dir`` holds a checkpoint this version of the generator made."""
    try:
        stamp = json.loads((Path(model_dir) / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("generator_version") == GENERATOR_VERSION and stamp.get("preset") == preset


def make_tiny_model(out_dir: str | Path, *, preset: str = "tiny", seed: int = 0,
                    replace: bool = False) -> Path:
    """Write a random-weight checkpoint to `out_dir` (atomically) and return its path.

    ``replace=True`` swaps out a checkpoint already there (an older generator's)."""
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import LlavaConfig, LlavaForConditionalGeneration
    except ImportError as exc:
        raise TinyModelError(
            f"make-tiny-model needs torch and transformers ({exc.name} is missing): "
            "run `make setup`, or `pip install 'vidchat[tiny]'`"
        ) from None
    if preset not in PRESETS:
        raise TinyModelError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    sizes = PRESETS[preset]
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()) and not replace:
        raise TinyModelError(f"{out} exists and is not empty: pick a new directory or delete it")

    tok = _train_tokenizer(sizes.bpe_vocab)
    token_ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    config = build_config(sizes, token_ids, _round_up(tok.get_vocab_size()))

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(LlavaConfig.from_dict(config)).to(torch.bfloat16)
    tensors = {_hub_key(k): v.contiguous() for k, v in model.state_dict().items()}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "generation_config.json").write_text(json.dumps({
            "bos_token_id": token_ids["<|endoftext|>"],
            "eos_token_id": [token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
            "pad_token_id": token_ids["<|endoftext|>"],
        }, indent=2))
        _write_tokenizer_files(tmp, tok, token_ids)
        (tmp / STAMP_FILE).write_text(json.dumps(
            {"generator_version": GENERATOR_VERSION, "preset": preset, "seed": seed}))
        (tmp / "README.md").write_text(
            f"Random-weight llava-interleave-qwen checkpoint generated by vidchat "
            f"(preset {preset}, seed {seed}). It answers gibberish: it exists to exercise the "
            "real serving path without a model hub.\n"
        )
        if out.exists():
            old = out.with_name(f".{out.name}-old-{tmp.name}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def checkpoint_digest(model_dir: str | Path) -> str:
    """sha256 over the checkpoint's files: equal digests mean identical checkpoints."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()
