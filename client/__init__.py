"""vidchat's client: frames from a video, sent as image parts over the OpenAI API.

    from vidchat.client import VideoChat
    chat = VideoChat("http://127.0.0.1:8000/v1")
    print(chat.ask("clip.mp4", "What happens?").text)
"""

from vidchat.client._chat import (
    Answer,
    AsyncChunkStream,
    AsyncVideoChat,
    ChunkStream,
    ServerLimits,
    VideoChat,
)
from vidchat.client._constants import default_api_key, default_base_url
from vidchat.client._decode_worker import shutdown as shutdown_decode_workers
from vidchat.client._messages import EncodedVideo, build_messages, encode_video
from vidchat.client._remote import FetchLimits
from vidchat.client._sampling import Frames, sample_frames
from vidchat.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    FrameBudgetError,
    OverloadedError,
    RemoteVideoError,
    SamplingArgumentError,
    ServerUnavailableError,
    StreamInterruptedError,
    VidchatError,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
)

__all__ = [
    "APIError",
    "Answer",
    "AsyncChunkStream",
    "AsyncVideoChat",
    "AuthenticationError",
    "BadRequestError",
    "ChunkStream",
    "EncodedVideo",
    "FetchLimits",
    "FrameBudgetError",
    "Frames",
    "OverloadedError",
    "RemoteVideoError",
    "SamplingArgumentError",
    "ServerLimits",
    "ServerUnavailableError",
    "StreamInterruptedError",
    "VideoChat",
    "VideoDecodeError",
    "VideoError",
    "VideoNotFoundError",
    "VidchatError",
    "build_messages",
    "default_api_key",
    "default_base_url",
    "encode_video",
    "sample_frames",
    "shutdown_decode_workers",
]
