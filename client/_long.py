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

from vidchat.client import _flows as F
from vidchat.client._core import TEMPLATE_TOKENS, ClientCore, VideoInput
from vidchat.client._messages import format_timestamp
from vidchat.client._results import Answer
from vidchat.errors import FrameBudgetError, SamplingArgumentError, VidchatError

__all__ = ["LongAnswer", "Window", "plan_reduce", "plan_windows", "reduce_prompt"]

# How the combining request is worded. Plain instructions: the model sees text only.
REDUCE_HEADER = ("Below are answers about consecutive parts of one video, each marked with "
                 "its time range.")
REDUCE_FOOTER = "Using all of them, answer this question about {scope}: {question}"


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
    def time_range(self) -> str:
        """"[m:ss.s-m:ss.s]", as the combining request shows it."""
        return time_range(self.start, self.end)



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
    reduce_prompts: list[str] = field(default_factory=list)
    """The text of every combining request, in the order sent (the last one is final)."""
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
    n = max(1, math.ceil((hi - lo - overlap_s) / step - 1e-9))
    windows = [Window(lo + i * step, min(lo + i * step + window_s, hi)) for i in range(n)]
    # A last sliver shorter than a tenth of a window joins the one before.
    if n > 1 and hi - windows[-1].start < 0.1 * window_s:
        windows.pop()
    windows[-1].end = hi
    return windows


Part = tuple[float, float, str]
"""(start s, end s, answer) of one stretch of the video."""


def time_range(start: float, end: float) -> str:
    return f"[{format_timestamp(start)}-{format_timestamp(end)}]"


def reduce_prompt(question: str, parts: Sequence[Part], scope: str = "the whole video") -> str:
    """The combining request's text: each answer after its time range, then the question."""
    lines = [REDUCE_HEADER, ""]
    lines += [f"{time_range(a, b)} {text.strip() or '(no answer)'}" for a, b, text in parts]
    lines += ["", REDUCE_FOOTER.format(question=question, scope=scope)]
    return "\n".join(lines)


def plan_reduce(question: str, parts: Sequence[Part], max_model_len: int,
                max_tokens: int) -> list[list[int]]:
    """Group consecutive parts so that each group's reduce prompt fits the context (UTF-8
    bytes bound the tokens of a byte-level BPE). One group: a single, final reduce step."""
    budget = max_model_len - max_tokens - TEMPLATE_TOKENS

    def fits(idx: list[int]) -> bool:
        chosen = [parts[i] for i in idx]
        scope = time_range(chosen[0][0], chosen[-1][1])
        return len(reduce_prompt(question, chosen, scope).encode()) <= budget

    everything = list(range(len(parts)))
    if fits(everything):
        return [everything]
    groups: list[list[int]] = [[]]
    for i in everything:
        if groups[-1] and not fits([*groups[-1], i]):
            groups.append([])
        groups[-1].append(i)
        if not fits(groups[-1]):
            raise FrameBudgetError(
                f"the answer for {time_range(parts[i][0], parts[i][1])} is too long to "
                f"combine within the server's context ({max_model_len} tokens): lower "
                "max_tokens or use shorter windows")
    if len(groups) == len(parts):
        raise FrameBudgetError(
            f"the window answers are too long to combine two at a time within the server's "
            f"context ({max_model_len} tokens): lower max_tokens")
    return groups


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


def ask_long(core: ClientCore, video: VideoInput, question: str, *, window_s: float,
             frames_per_window: int, overlap_s: float, concurrency: int,
             sampling: dict[str, Any] | None, progress: bool,
             gen: dict[str, Any]) -> F.Flow[LongAnswer]:
    """Map the question over the video's windows, then reduce the answers (module docs)."""
    from tqdm import tqdm

    clock = F.Clock()
    check_long_request(core, video, frames_per_window)
    yield from F.limits(core)
    check_long_request(core, video, frames_per_window)
    max_tokens = F.max_tokens_of(gen)
    core.check_budget(frames_per_window, question, max_tokens)  # one window's request
    local = yield F.Localize(video)
    window_sampling = dict(sampling or {})
    start, end = window_sampling.pop("start", None), window_sampling.pop("end", None)
    windows = plan_windows(local.duration, window_s, overlap_s=overlap_s, start=start, end=end)
    flows = [F.ask(core, local.path, question, frames_per_window, True,
                   {**window_sampling, "start": w.start, "end": w.end}, gen) for w in windows]
    bar = tqdm(total=len(windows), disable=not progress, unit="window", desc="vidchat windows")
    try:
        handle = yield F.Spawn(flows, max(1, concurrency), on_done=lambda _i, _r: bar.update())
        results = yield F.Gather(handle, capture=True)
    finally:
        bar.close()
    for window, result in zip(windows, results, strict=True):
        if isinstance(result, VidchatError):
            window.error = result
        else:
            window.answer, window.text = result, result.text
            window.frames = list(result.frame_times or [])
    answered = [w for w in windows if w.error is None]
    if not answered:
        first = windows[0].error
        raise VidchatError(f"every one of the {len(windows)} windows failed; the first: "
                           f"{first}") from first
    out = LongAnswer("", windows, requests=len(windows))
    for w in answered:
        out.prompt_tokens += w.answer.prompt_tokens  # type: ignore[union-attr]
        out.completion_tokens += w.answer.completion_tokens  # type: ignore[union-attr]
    parts: list[Part] = [(w.start, w.end, w.text) for w in answered]
    limits = core.limits
    assert limits is not None
    while True:
        groups = plan_reduce(question, parts, limits.max_model_len, max_tokens)
        final = len(groups) == 1
        prompts = [reduce_prompt(question, [parts[i] for i in g],
                                 "the whole video" if final else
                                 time_range(parts[g[0]][0], parts[g[-1]][1]))
                   for g in groups]
        reduce_handle = yield F.Spawn([F.ask_text(core, p, gen) for p in prompts],
                                      max(1, concurrency))
        answers = yield F.Gather(reduce_handle)
        out.reduce_prompts += prompts
        out.reduce_steps += len(groups)
        out.requests += len(groups)
        for a in answers:
            out.prompt_tokens += a.prompt_tokens
            out.completion_tokens += a.completion_tokens
        if final:
            out.text = answers[0].text
            out.timings = {"total_s": clock.since()}
            return out
        parts = [(parts[g[0]][0], parts[g[-1]][1], a.text)
                 for g, a in zip(groups, answers, strict=True)]
