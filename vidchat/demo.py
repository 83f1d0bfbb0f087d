"""`vidchat demo` / `make demo`: the main job end to end on the generated CPU checkpoint.

Starts `vidchat serve` on the cpu-tiny profile, makes a short H.264 clip, samples 8 frames,
sends them as 8 image parts plus the question through the OpenAI SDK, prints the answer, token
usage and timings, then stops the server.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from vidchat.clips import make_clip
from vidchat.limits import TOKENS_PER_IMAGE
from vidchat.serve_process import ServeProcess, free_port


def make_demo_clip(path: Path, seconds: float = 6, size: str = "1280x720", rate: int = 30,
                   gop: int = 60, source: str = "testsrc2") -> Path:
    """The demo's clip: a short H.264 clip of one of ffmpeg's moving test patterns, made
    locally (vidchat.clips.make_clip with a keyframe every ``gop`` frames)."""
    return make_clip(path, source=source, size=size, rate=rate, seconds=seconds, gop=gop)


def run_demo(config: str, port: int = 0, frames: int = 8,
             question: str = "What is happening in this video?") -> int:
    from vidchat.client import VideoChat, sample_frames

    port = port or free_port()
    print(f"demo: starting `vidchat serve --config {config} --port {port}`", flush=True)
    server = ServeProcess.start(config, port=port)  # its progress goes to our stderr
    try:
        server.wait_ready(timeout=900)
        with tempfile.TemporaryDirectory(prefix="vidchat-demo-") as tmp:
            clip = make_demo_clip(Path(tmp) / "demo.mp4")
            t0 = time.perf_counter()
            sampled = sample_frames(clip, frames)
            t_sample = time.perf_counter() - t0
            print(f"demo: sampled {len(sampled)} frames at "
                  f"{', '.join(f'{t:.2f}' for t in sampled.timestamps)} s from a 1280x720 "
                  f"H.264 clip in {t_sample * 1000:.0f} ms", flush=True)
            with VideoChat(server.api_url, api_key=os.environ.get("VIDCHAT_API_KEY")) as chat:
                answer = chat.ask(sampled, question, max_tokens=48, temperature=0.0)
        print()
        print(f"Q: {question}")
        print(f"A: {answer.text!r}")
        print("   (random weights: the generated checkpoint answers gibberish by design; the "
              "real checkpoints on a GPU answer in English)")
        print(f"usage: prompt_tokens={answer.prompt_tokens} "
              f"({answer.frames} frames x {TOKENS_PER_IMAGE} image tokens + "
              f"{answer.prompt_tokens - answer.frames * TOKENS_PER_IMAGE} text tokens), "
              f"completion_tokens={answer.completion_tokens}")
        print(f"timings: sample {t_sample:.2f} s, encode "
              f"{answer.timings['prepare_s']:.2f} s, request {answer.timings['request_s']:.2f} s; "
              f"{answer.bytes_sent / 1024:.0f} KiB of frames sent")
        return 0
    finally:
        print("demo: stopping the server", flush=True)
        server.stop()
