"""What the clients return: an answer with what it cost, and the server's limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidchat.limits import max_frames_for_context


@dataclass
class Answer:
    """One answer, with what it cost."""

    text: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    frames: int
    bytes_sent: int  # image payload bytes uploaded for this request (0 when all were cached)
    timings: dict[str, float] = field(default_factory=dict)
    logprobs: list[Any] | None = None
    """Per generated token, the SDK's ``ChatCompletionTokenLogprob`` (with its
    ``top_logprobs``), when the request asked for ``logprobs=True``."""
    frame_times: list[float] | None = None
    """When each frame sent was shown in the video (s); None for plain images."""
    completion: dict[str, Any] | None = field(default=None, repr=False)
    """The answer as an OpenAI ``chat.completion`` object (JSON), as the server sent it or,
    for a streamed answer, assembled from its chunks."""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out.pop("completion")
        if self.logprobs is not None:
            out["logprobs"] = [lp.model_dump() for lp in self.logprobs]
        return out


@dataclass(frozen=True)
class ServerLimits:
    """The served model and its context, as /v1/models reports them."""

    model: str
    max_model_len: int

    @property
    def max_frames(self) -> int:
        # Profiles size max_model_len as frames x 729 + a text reserve, so this inverts it.
        return max_frames_for_context(self.max_model_len)
