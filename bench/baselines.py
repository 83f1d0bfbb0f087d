"""The two baselines vidchat is measured against, on the same checkpoint and requests.

seed pipeline (seed/video_text_to_text.md, reimplemented here, not imported):
    OpenCV VideoCapture decodes EVERY frame of the video and converts each to an RGB PIL
    image, keeping every k-th (k = frame count // frames); the LlavaProcessor resizes the
    full-resolution frames; LlavaForConditionalGeneration.generate() answers one request
    at a time. Frames are sampled once per video and reused for its questions, as the
    seed does. Two deliberate differences from the guide's text: bfloat16 instead of float16
    (the CPU fast path, and the dtype the vLLM server runs), and the prompt rendered by the
    checkpoint's chat template (`seed_prompt`: the hub template's rendering), so both engines
    see the very same prompt tokens.
    min_new_tokens = max_new_tokens makes every answer as long as the server's ignore_eos
    ones.

naive vLLM client:
    the same vLLM server, used the obvious way: for every question, sample the video again
    (the seed's OpenCV method), send the full-resolution frames as PNG data URLs through the
    OpenAI SDK, one request after the other (no streaming, no frame cache, no concurrency).

The seed pipeline runs in its own process (`python bench/baselines.py seed JOB.json`) so that
torch and the model never share a process, or a GIL, with the client being measured.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

# ------------------------------------------------------------------ the seed's frame sampler


def seed_sample_frames(path: str | os.PathLike[str], num_frames: int) -> list[Image.Image]:
    """The seed guide's `sample_frames`, minus the download: decode every frame with OpenCV,
    convert each to RGB PIL, keep every (frame count // num_frames)-th."""
    import cv2

    video = cv2.VideoCapture(str(path))
    total_frames = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    interval = max(1, total_frames // num_frames)
    frames = []
    for i in range(total_frames):
        ret, frame = video.read()
        if not ret:  # the seed converts before checking and would crash on a short read
            continue
        pil_img = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if i % interval == 0:
            frames.append(pil_img)
    video.release()
    return frames[:num_frames]


# ------------------------------------------------------------------------- naive client


@dataclass
class NaiveResult:
    e2e_s: list[float] = field(default_factory=list)
    sample_s: list[float] = field(default_factory=list)
    request_bytes: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def png_data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def run_naive(base_url: str, model: str, requests: Sequence[tuple[str, str]], frames: int,
              max_tokens: int, *, cache_salt: str | None = None, timeout: float = 600,
              progress: bool = True) -> NaiveResult:
    """Each (video, question) in turn: sample again, full-resolution PNGs, wait for the answer."""
    import openai
    from tqdm import tqdm

    sizes: list[int] = []

    def count(request: httpx.Request) -> None:
        sizes.append(len(request.content))

    http = httpx.Client(event_hooks={"request": [count]})
    client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("VIDCHAT_API_KEY") or "EMPTY",
                           max_retries=0, timeout=timeout, http_client=http)
    out = NaiveResult()
    extra: dict[str, Any] = {"ignore_eos": True}
    if cache_salt:
        extra["cache_salt"] = cache_salt
    t_start = time.perf_counter()
    for video, question in tqdm(requests, desc="naive client", unit="req", disable=not progress):
        t0 = time.perf_counter()
        images = seed_sample_frames(video, frames)
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": png_data_url(im)}} for im in images]
        content.append({"type": "text", "text": question})
        out.sample_s.append(time.perf_counter() - t0)
        before = len(sizes)
        try:
            resp = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": content}],  # type: ignore[misc]
                max_tokens=max_tokens, temperature=0.0, extra_body=extra)
        except openai.OpenAIError as exc:
            out.errors.append(type(exc).__name__)
            continue
        finally:
            out.request_bytes.append(sum(sizes[before:]))
        out.e2e_s.append(time.perf_counter() - t0)
        if resp.usage:
            out.prompt_tokens += resp.usage.prompt_tokens
            out.completion_tokens += resp.usage.completion_tokens
    out.wall_s = time.perf_counter() - t_start
    client.close()
    http.close()
    return out


# ------------------------------------------------------------------------- seed pipeline


@dataclass
class SeedJob:
    model_dir: str
    requests: list[tuple[str, str]]  # (video path, question)
    frames: int
    max_tokens: int
    threads: int = 0  # 0: torch's default (every core)
    name: str = ""


@dataclass
class SeedResult:
    e2e_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    itl_s: list[float] = field(default_factory=list)
    sample_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    load_s: float = 0.0


_LOADED: dict[str, tuple[Any, Any, float]] = {}


def _load(model_dir: str) -> tuple[Any, Any, float]:
    """The model and processor, loaded once per process."""
    if model_dir not in _LOADED:
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        t0 = time.perf_counter()
        model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16)
        model.eval()
        processor = AutoProcessor.from_pretrained(model_dir)
        _LOADED[model_dir] = (model, processor, time.perf_counter() - t0)
    return _LOADED[model_dir]


def run_seed(job: SeedJob, progress: bool = True) -> SeedResult:
    """transformers generate(), one request at a time (call in its own process)."""
    import torch
    from tqdm import tqdm
    from transformers import LogitsProcessor

    if job.threads:
        torch.set_num_threads(job.threads)
    out = SeedResult()
    model, processor, out.load_s = _load(job.model_dir)

    class StepClock(LogitsProcessor):
        """Called once per generated token, right after its forward pass: token times."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            self.times.append(time.perf_counter())
            return scores

    frames: dict[str, list[Image.Image]] = {}
    t_start = time.perf_counter()
    for video, question in tqdm(job.requests, desc=f"seed pipeline {job.name}".strip(),
                                unit="req",
                                disable=not progress):
        t0 = time.perf_counter()
        if video not in frames:  # the seed samples each video once
            frames[video] = seed_sample_frames(video, job.frames)
            out.sample_s += time.perf_counter() - t0
        images = frames[video]
        t_ready = time.perf_counter()  # TTFT counts from here, as vidchat's (frames ready)
        prompt = seed_prompt(processor, len(images), question)
        inputs = processor(text=prompt, images=images, return_tensors="pt")
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        clock = StepClock()
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=job.max_tokens,
                                    min_new_tokens=job.max_tokens, do_sample=False,
                                    logits_processor=[clock])
        end = time.perf_counter()
        out.e2e_s.append(end - t0)
        if clock.times:
            out.ttft_s.append(clock.times[0] - t_ready)
            out.itl_s += [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
        n_in = int(inputs["input_ids"].shape[1])
        out.prompt_tokens += n_in
        out.completion_tokens += int(output.shape[1]) - n_in
    out.wall_s = time.perf_counter() - t_start
    return out


def seed_prompt(processor: Any, n_images: int, question: str) -> str:
    """The seed pipeline's prompt: the checkpoint's chat template, which renders exactly what
    the hub's does (tests/test_bench.py holds it against the hub template), instead of the
    guide's hand-built string (no newline after the role, none after <|im_end|>)."""
    messages = [{"role": "user", "content": [*({"type": "image"} for _ in range(n_images)),
                                             {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def run_seed_subprocess(jobs: Sequence[SeedJob], workdir: Path, progress: bool = True,
                        timeout: float = 3600) -> list[SeedResult]:
    """run_seed over `jobs` in one fresh Python process (the model loads once); its progress
    bars go to our stderr."""
    import subprocess

    workdir.mkdir(parents=True, exist_ok=True)
    job_file, result_file = workdir / "seed-jobs.json", workdir / "seed-results.json"
    job_file.write_text(json.dumps([asdict(j) for j in jobs]))
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "seed", str(job_file), str(result_file)]
    if not progress:
        cmd.append("--no-progress")
    subprocess.run(cmd, check=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return [SeedResult(**r) for r in json.loads(result_file.read_text())]


def main() -> int:
    parser = argparse.ArgumentParser(description="run the seed pipeline on a job file")
    parser.add_argument("mode", choices=["seed"])
    parser.add_argument("jobs", help="JSON list of SeedJob")
    parser.add_argument("results", help="where the JSON list of SeedResult goes")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    results = []
    for raw in json.loads(Path(args.jobs).read_text()):
        raw["requests"] = [tuple(r) for r in raw["requests"]]
        results.append(asdict(run_seed(SeedJob(**raw), progress=not args.no_progress)))
    Path(args.results).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
