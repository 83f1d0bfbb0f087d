"""What the page sends, checked and turned into the client's arguments (pure: no I/O).

    {"video": id | "url": URL, "frames", "fps", "start", "end", "mode"}  ──► SampleForm
    {"sample": id, "questions", "timestamps", "max_tokens", "temperature"} ──► AskForm

A blank field is "not set" (the library's default); a value the library would refuse is left
for the library to refuse, so the page shows the library's own message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vidchat.client import SAMPLING_MODES
from vidchat.errors import PlaygroundError
from vidchat.limits import DEFAULT_FRAMES

__all__ = ["MODES", "AskForm", "SampleForm", "parse_ask", "parse_sample"]

# The page offers every mode sample_frames takes; the first, "uniform", is the library's
# default and is not sent, the others reach sample_frames(mode=...) as they are.
MODES = SAMPLING_MODES
DEFAULT_MODE = MODES[0]
DEFAULT_MAX_TOKENS = 128
# One request per question: the page is a playground, not a batch tool (`vidchat batch`).
MAX_QUESTIONS = 8


@dataclass(frozen=True)
class SampleForm:
    """Which video, and the keyword arguments for sample_frames."""

    video_id: str | None
    url: str | None
    frames: int
    sampling: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AskForm:
    """Questions about one sampled set of frames, and the generation settings."""

    sample_id: str
    questions: tuple[str, ...]
    timestamps: bool
    gen: dict[str, Any]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(form: dict[str, Any], name: str, what: str) -> float | None:
    value = form.get(name)
    if _blank(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlaygroundError(f"{what} must be a number, got {value!r}: type a number or leave it "
                        "empty") from None
    if not math.isfinite(number):
        raise PlaygroundError(f"{what} must be a finite number, got {value!r}")
    return number


def _integer(form: dict[str, Any], name: str, what: str, default: int) -> int:
    number = _number(form, name, what)
    if number is None:
        return default
    if number != int(number):
        raise PlaygroundError(f"{what} must be a whole number, got {form[name]!r}")
    return int(number)


def parse_sample(form: Any) -> SampleForm:
    """The sampling form: one video source, frames, and only the options that are set."""
    if not isinstance(form, dict):
        raise PlaygroundError("the sampling request must be a JSON object")
    video_id = None if _blank(form.get("video")) else str(form["video"])
    url = None if _blank(form.get("url")) else str(form["url"]).strip()
    if (video_id is None) == (url is None):
        raise PlaygroundError("choose one video: upload a file or give an http(s) URL")
    frames = _integer(form, "frames", "frames", DEFAULT_FRAMES)
    sampling: dict[str, Any] = {}
    for name, what in (("fps", "fps"), ("start", "start (s)"), ("end", "end (s)")):
        value = _number(form, name, what)
        if value is not None:
            sampling[name] = value
    mode = DEFAULT_MODE if _blank(form.get("mode")) else str(form["mode"])
    if mode not in MODES:
        raise PlaygroundError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != DEFAULT_MODE:
        sampling["mode"] = mode
    return SampleForm(video_id, url, frames, sampling)


def parse_ask(form: Any) -> AskForm:
    """The question form: one question a line (blank lines dropped)."""
    if not isinstance(form, dict):
        raise PlaygroundError("the question request must be a JSON object")
    if _blank(form.get("sample")):
        raise PlaygroundError("sample the video first: the questions go with its frames")
    raw = form.get("questions")
    lines = raw.splitlines() if isinstance(raw, str) else raw
    if not isinstance(lines, list) or not all(isinstance(q, str) for q in lines):
        raise PlaygroundError("questions must be text, one question a line")
    questions = tuple(q.strip() for q in lines if q.strip())
    if not questions:
        raise PlaygroundError("type a question first (one question a line)")
    if len(questions) > MAX_QUESTIONS:
        raise PlaygroundError(f"{len(questions)} questions: ask at most {MAX_QUESTIONS} at once "
                        "(`vidchat batch` answers many)")
    gen: dict[str, Any] = {
        "max_tokens": _integer(form, "max_tokens", "max tokens", DEFAULT_MAX_TOKENS)}
    if gen["max_tokens"] < 1:
        raise PlaygroundError(f"max tokens must be at least 1, got {gen['max_tokens']}")
    temperature = _number(form, "temperature", "temperature")
    if temperature is not None:
        if temperature < 0:
            raise PlaygroundError(f"temperature must be 0 or more, got {temperature:g}")
        gen["temperature"] = temperature
    return AskForm(str(form["sample"]), questions, bool(form.get("timestamps")), gen)
