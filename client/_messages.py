"""Frames -> OpenAI chat `messages`: N image parts and the question.

The output is plain OpenAI JSON, so any OpenAI SDK client can send it. Each frame is encoded
once (deterministic JPEG) and carries a content-hash `uuid`, which vLLM uses as the key of its
multimodal cache: a later request may send the uuid alone instead of the bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from vidchat.client._encoding import encode_frames, frame_uuid, to_data_url
from vidchat.client._sampling import Frames
from vidchat.errors import VidchatError


@dataclass(frozen=True)
class EncodedFrame:
    jpeg: bytes
    uuid: str
    timestamp: float | None

    @property
    def data_url(self) -> str:
        return to_data_url(self.jpeg)


@dataclass(frozen=True)
class EncodedVideo:
    """A video's frames, sampled and encoded once, ready to go into any number of requests."""

    frames: tuple[EncodedFrame, ...]
    source: str | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def key(self) -> str:
        """A stable id of these exact frames (used for session affinity and caching)."""
        import hashlib

        return hashlib.sha256("".join(f.uuid for f in self.frames).encode()).hexdigest()[:32]

    @property
    def payload_bytes(self) -> int:
        return sum(len(f.jpeg) for f in self.frames)


def encode_video(frames: Frames | Sequence[Image.Image] | EncodedVideo) -> EncodedVideo:
    """Encode sampled frames (or plain PIL images) once."""
    if isinstance(frames, EncodedVideo):
        return frames
    if isinstance(frames, Frames):
        images, stamps, source = frames.images, list(frames.timestamps), str(frames.source)
    else:
        images, stamps, source = list(frames), [None] * len(frames), None
    if not images:
        raise VidchatError("no frames to send: sample at least one frame from the video")
    jpegs = encode_frames(images)
    return EncodedVideo(
        tuple(EncodedFrame(j, frame_uuid(j), t) for j, t in zip(jpegs, stamps, strict=True)),
        source,
    )


def _image_part(frame: EncodedFrame, *, with_uuid: bool, with_data: bool) -> dict[str, Any]:
    part: dict[str, Any] = {
        "type": "image_url",
        "image_url": {"url": frame.data_url} if with_data else None,
    }
    if with_uuid:
        part["uuid"] = frame.uuid
    return part


def format_timestamp(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


def content_parts(
    video: EncodedVideo,
    question: str,
    *,
    timestamps: bool = False,
    with_uuid: bool = False,
    with_data: bool = True,
) -> list[dict[str, Any]]:
    """The user message's content: frames (optionally labelled with their time), then text."""
    parts: list[dict[str, Any]] = []
    for frame in video.frames:
        if timestamps:
            if frame.timestamp is None:
                raise VidchatError("timestamps=True needs sampled Frames (with times), not images")
            parts.append({"type": "text", "text": f"Frame at {format_timestamp(frame.timestamp)}:"})
        parts.append(_image_part(frame, with_uuid=with_uuid, with_data=with_data))
    parts.append({"type": "text", "text": question})
    return parts


def build_messages(
    frames: Frames | Sequence[Image.Image] | EncodedVideo,
    question: str,
    *,
    timestamps: bool = False,
) -> list[dict[str, Any]]:
    """Plain OpenAI `messages` asking `question` about `frames`.

    With ``timestamps=True`` each frame is preceded by a "Frame at m:ss.s:" label; serve with a
    profile whose chat template keeps parts in order (configs/*-timestamps templates).
    """
    if not isinstance(question, str) or not question.strip():
        raise VidchatError("the question is empty: pass the text to ask about the video")
    video = encode_video(frames)
    return [{"role": "user", "content": content_parts(video, question, timestamps=timestamps)}]
