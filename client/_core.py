"""The client's state and the decisions that need no I/O: where the server is, what a request
body holds, whether it fits the server's context, which frames the server already has.

`VideoChat` and `AsyncVideoChat` each hold one `ClientCore`; the step order lives in
`_flows`, the waiting in the two drivers.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from vidchat.client import _constants as C
from vidchat.client._messages import EncodedVideo, content_parts, encode_video
from vidchat.client._remote import FetchLimits
from vidchat.client._results import Answer, ServerLimits
from vidchat.client._sampling import Frames, sample_frames
from vidchat.client._source import resolve_source
from vidchat.client._streams import make_answer
from vidchat.errors import APIError, FrameBudgetError, VidchatError
from vidchat.limits import DEFAULT_FRAMES, MAX_CONTEXT_TOKENS, TOKENS_PER_IMAGE

__all__ = ["ClientCore", "UploadedFrames", "VideoInput"]

VideoInput = str | os.PathLike[str] | Frames | EncodedVideo

# vLLM sampling parameters the OpenAI SDK has no argument for: they travel in extra_body.
VLLM_EXTRA_PARAMS = ("ignore_eos", "top_k", "min_p", "min_tokens", "repetition_penalty",
                     "skip_special_tokens", "cache_salt", "return_tokens_as_token_ids")
# Tokens of chat template around a question (role markers, newlines), on top of its bytes.
TEMPLATE_TOKENS = 32


class UploadedFrames:
    """uuids this client has uploaded to the server recently (thread-safe LRU)."""

    def __init__(self, capacity: int = C.UUID_MEMORY) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def all_known(self, uuids: Iterable[str]) -> bool:
        with self._lock:
            return all(u in self._seen for u in uuids)

    def add(self, uuids: Iterable[str]) -> None:
        with self._lock:
            for u in uuids:
                self._seen[u] = None
                self._seen.move_to_end(u)
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)

    def forget(self, uuids: Iterable[str]) -> None:
        with self._lock:
            for u in uuids:
                self._seen.pop(u, None)


@dataclass
class LocalVideo:
    """A video as a readable local file (downloaded if it was a URL), until closed."""

    path: str
    duration: float
    _stack: ExitStack

    def close(self) -> None:
        self._stack.close()


class ClientCore:
    """Everything both clients decide without doing I/O."""

    def __init__(self, base_url: str | None, api_key: str | None, model: str | None,
                 frame_cache: bool, fetch_limits: FetchLimits | None = None) -> None:
        self.fetch_limits = fetch_limits
        self.base_url = (base_url or C.default_base_url()).rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.api_key = api_key or C.default_api_key()
        self.model = model
        self.frame_cache = frame_cache
        self.uploaded = UploadedFrames()
        self.limits: ServerLimits | None = None

    # -- the video ------------------------------------------------------------------------

    def prepare(self, video: VideoInput, frames: int = DEFAULT_FRAMES,
                sampling: dict[str, Any] | None = None) -> EncodedVideo:
        """Sample (if needed) and encode: the blocking part of a question, done once."""
        if isinstance(video, (EncodedVideo, Frames)):
            return encode_video(video)
        return encode_video(sample_frames(video, frames, fetch_limits=self.fetch_limits,
                                          **(sampling or {})))

    def localize(self, video: VideoInput) -> LocalVideo:
        """The video as a local file and its length, for work that samples it many times
        (an http(s) video is downloaded once, within the fetch limits)."""
        if isinstance(video, (EncodedVideo, Frames)):
            raise VidchatError("this samples the video itself: pass its path or URL, not "
                               "frames")
        stack = ExitStack()
        try:
            path = stack.enter_context(resolve_source(video, self.fetch_limits))
            # The sampler's own index gives the length its planner uses.
            duration = sample_frames(path, 1).duration
        except BaseException:
            stack.close()
            raise
        return LocalVideo(path, duration, stack)

    def should_send_data(self, video: EncodedVideo) -> bool:
        return not (self.frame_cache and self.uploaded.all_known(f.uuid for f in video.frames))

    def remember_upload(self, video: EncodedVideo) -> None:
        if self.frame_cache:
            self.uploaded.add(f.uuid for f in video.frames)

    def forget_upload(self, video: EncodedVideo) -> None:
        self.uploaded.forget(f.uuid for f in video.frames)

    # -- the server's limits ---------------------------------------------------------------

    def set_limits(self, listing: Any) -> ServerLimits:
        """Take the served model and its context from a /v1/models listing."""
        models = list(listing.data)
        if not models:
            raise APIError("the server lists no model: is it a vLLM server started by vidchat?")
        chosen = next((m for m in models if m.id == self.model), None) if self.model else None
        if self.model and chosen is None:
            names = ", ".join(m.id for m in models)
            raise VidchatError(f"the server does not serve {self.model!r}: it has {names}")
        chosen = chosen or models[0]
        max_len = getattr(chosen, "max_model_len", None) or (chosen.model_extra or {}).get(
            "max_model_len")
        self.limits = ServerLimits(chosen.id, int(max_len) if max_len else MAX_CONTEXT_TOKENS)
        self.model = self.model or self.limits.model
        return self.limits

    def check_budget(self, frames: int, text: str, max_tokens: int) -> None:
        """Refuse, before anything is sent, a request of ``frames`` frames and ``text``
        that cannot fit the server."""
        limits = self.limits
        if limits is None:
            return
        if frames > limits.max_frames:
            raise FrameBudgetError(
                f"{frames} frames exceed the server's limit of {limits.max_frames} per "
                f"request (max_model_len {limits.max_model_len}): ask with frames="
                f"{limits.max_frames} or fewer")
        # A byte-level BPE never needs more tokens than UTF-8 bytes: a safe upper bound.
        need = frames * TOKENS_PER_IMAGE + len(text.encode()) + TEMPLATE_TOKENS + max_tokens
        if need > limits.max_model_len:
            raise FrameBudgetError(
                f"{frames} frames ({frames * TOKENS_PER_IMAGE} tokens), the text and "
                f"max_tokens={max_tokens} need up to {need} tokens but the server's context is "
                f"{limits.max_model_len}: use fewer frames, shorter text or a smaller "
                "max_tokens")

    # -- the request -----------------------------------------------------------------------

    def video_messages(self, video: EncodedVideo, question: str, timestamps: bool,
                       send_data: bool) -> list[dict[str, Any]]:
        parts = content_parts(video, question, timestamps=timestamps,
                              with_uuid=self.frame_cache, with_data=send_data)
        return [{"role": "user", "content": parts}]

    def body(self, messages: list[dict[str, Any]], session: str | None,
             gen: dict[str, Any]) -> dict[str, Any]:
        """chat.completions.create keyword arguments; ``session`` goes in the header a
        router hashes, so questions about one video reach the replica caching its frames."""
        kwargs = {"max_tokens": C.DEFAULT_MAX_TOKENS, "temperature": 0.0, **gen}
        extra_body = kwargs.pop("extra_body", None) or {}
        for key in VLLM_EXTRA_PARAMS:
            if key in kwargs:
                extra_body[key] = kwargs.pop(key)
        headers = {**({C.SESSION_HEADER: session} if session else {}),
                   **(kwargs.pop("extra_headers", None) or {})}
        body = {"model": self.model, "messages": messages, "extra_headers": headers, **kwargs}
        if extra_body:
            body["extra_body"] = extra_body
        return body

    def answer(self, resp: Any, video: EncodedVideo | None, sent: int,
               timings: dict[str, float]) -> Answer:
        choice = resp.choices[0]
        logprobs = choice.logprobs.content if choice.logprobs is not None else None
        return make_answer(choice.message.content or "", resp.model, choice.finish_reason,
                           resp.usage, video, sent, timings, logprobs,
                           resp.model_dump(mode="json"))
