"""Questions over long videos: cut into windows, ask each (map), combine the answers (reduce).

    video ──► plan_windows(duration, window_s, overlap_s) ──► [Window(start, end)] (pure)
          ──► per window: frames_per_window frames, labelled with their absolute times,
              and the question (concurrent, bounded)
          ──► reduce: the window answers, each prefixed with its time range, and the question
              in one text request; when they do not fit the context, consecutive groups are
              combined first (hierarchically) until they do

llava-interleave takes at most ~44 frames (32k context): 32 uniform frames of an hour are one
every ~2 minutes. Windows see every part of the video at the density asked for, and every
window's answer stays in the result as evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vidchat.client._core import TEMPLATE_TOKENS, ClientCore, VideoInput
from vidchat.client._messages import format_timestamp
from vidchat.client._results import Answer
from vidchat.errors import FrameBudgetError, SamplingArgumentError, VidchatError

__all__ = ["LongAnswer", "Window", "plan_reduce", "plan_windows", "reduce_prompt"]

# How the combining request is worded. Plain instructions: the model sees text only.
REDUCE_HEADER = ("Below are answers about consecutive parts of one video, each marked with "
                 "its time range.")
REDUCE_FOOTER = "Using all of them, answer this question about the whole video: {question}"


@dataclass
class Window:
    """One stretch of the video, what its frames were and what the model said about it."""

    start: float
    end: float
    text: str = ""
    frames: list[float] = field(default_factory=list)
    """The timestamps (s) of the frames sent for this window."""
    answer: Answer | None = None
    error: VidchatError | None = None
    """Set when this window's request failed; its text is then empty."""

    @property
    def label(self) -> str:
        return f"[{format_timestamp(self.start)}-{format_timestamp(self.end)}]"


@dataclass
class LongAnswer:
    """The combined answer, every window's evidence, and what it all cost."""

    text: str
    windows: list[Window]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    """Requests sent: one per window that was asked, plus the reduce steps."""
    reduce_steps: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[Window]:
        return [w for w in self.windows if w.error is not None]


def plan_windows(duration: float, window_s: float, *, overlap_s: float = 0.0,
                 start: float | None = None, end: float | None = None) -> list[Window]:
    """Consecutive windows of ``window_s`` covering [start, end] without gaps; each starts
    ``window_s - overlap_s`` after the one before; the last one ends at ``end``."""
    if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
        raise SamplingArgumentError(
            f"window_s must be a positive number of seconds, got {window_s!r}; pass e.g. "
            "window_s=300.")
    if not (0 <= overlap_s < window_s):
        raise SamplingArgumentError(
            f"overlap_s must be at least 0 and shorter than the window ({window_s:g}s), got "
            f"{overlap_s!r}.")
    lo = 0.0 if start is None else float(start)
    hi = duration if end is None else min(float(end), duration)
    if lo >= hi:
        raise SamplingArgumentError(
            f"the range {lo:g}s-{hi:g}s is empty for a {duration:.1f}s video; choose a start "
            "before its end.")
    if window_s > hi - lo:
        raise SamplingArgumentError(
            f"window_s={window_s:g}s is longer than the {hi - lo:.1f}s to cover; use a window "
            f"of at most {hi - lo:.1f}s, or ask() for the whole video.")
    step = window_s - overlap_s
    windows, t = [], lo
    while True:
        w_end = min(t + window_s, hi)
        windows.append(Window(t, w_end))
        # A last sliver shorter than a tenth of a window joins the one before.
        if w_end >= hi or hi - (t + step) < 0.1 * window_s and windows[-1].end < hi:
            windows[-1].end = hi
            return windows
        t += step


def reduce_prompt(question: str, parts: Sequence[tuple[str, str]]) -> str:
    """The combining request's text: (time-range label, answer) pairs, then the question."""
    lines = [REDUCE_HEADER, ""]
    lines += [f"{label} {text.strip() or '(no answer)'}" for label, text in parts]
    lines += ["", REDUCE_FOOTER.format(question=question)]
    return "\n".join(lines)


def plan_reduce(question: str, parts: Sequence[tuple[str, str]], max_model_len: int,
                max_tokens: int) -> list[list[int]]:
    """Group consecutive parts so that each group's reduce prompt fits the context (UTF-8
    bytes bound the tokens of a byte-level BPE). One group: a single reduce step."""
    budget = max_model_len - max_tokens - TEMPLATE_TOKENS

    def fits(idx: list[int]) -> bool:
        return len(reduce_prompt(question, [parts[i] for i in idx]).encode()) <= budget

    if fits(list(range(len(parts)))):
        return [list(range(len(parts)))]
    groups: list[list[int]] = [[]]
    for i in range(len(parts)):
        if groups[-1] and not fits([*groups[-1], i]):
            groups.append([])
        groups[-1].append(i)
        if not fits(groups[-1]):
            raise FrameBudgetError(
                f"one window's answer is too long to combine within the server's context "
                f"({max_model_len} tokens): lower max_tokens or use shorter windows")
    return groups


def text_messages(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": prompt}]}]


def check_long_request(core: ClientCore, video: VideoInput, frames_per_window: int) -> None:
    """Refuse, before anything is sent, what cannot work: frames instead of a video, or a
    window holding more frames than the server takes."""
    from vidchat.client._messages import EncodedVideo
    from vidchat.client._sampling import Frames

    if isinstance(video, (EncodedVideo, Frames)):
        raise VidchatError("ask_long samples each window itself: pass the video's path or URL, "
                           "not frames")
    limits = core.limits
    if limits is not None and frames_per_window > limits.max_frames:
        raise FrameBudgetError(
            f"frames_per_window={frames_per_window} exceeds the server's limit of "
            f"{limits.max_frames} frames per request: use {limits.max_frames} or fewer")
