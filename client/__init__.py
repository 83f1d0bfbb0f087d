"""vidchat's client: frames from a video, sent as image parts over the OpenAI API.

    from vidchat.client import VideoChat
    chat = VideoChat("http://127.0.0.1:8000/v1")
    print(chat.ask("clip.mp4", "What happens?").text)

The folder ``client/`` is installed as ``vidchat.client`` (pyproject's package-dir), so
nothing called plain ``client`` lands in site-packages. Its modules follow the data path;
everything users need is re-exported here, the underscored modules are private:

    _source   a path, file:// or http(s) URL -> a local file (_remote: the safe download)
    _plan     SamplingSpec (arguments checked once) -> which frames, seek or read on, which
              stretches go to decoders running at once (pure)
    _decode   DecodeRequest -> the backend: _pyav (default) or _decord; _decode_worker runs
              it in a child process a decoder crash or hang cannot take down; the other
              sampling modes: _keyframes (the keyframes nearest the uniform targets),
              _scenes (a frame of every scene change)
    _resize   decoded frames -> size x size RGB, the reference's pixels (full-resolution RGB,
              PIL bicubic), in row bands
    _sampling sample_frames() -> Frames
    _encoding deterministic JPEG bytes and content-hash uuids
    _messages Frames -> EncodedVideo -> OpenAI chat messages (build_messages)
    _core     ClientCore: the state and the I/O-free decisions (budget, request body, which
              frames the server holds)
    _flows    every multi-step operation (ask, stream, ask_many, batch...) written once as
              a generator of effects; _sync (VideoChat) and _async (AsyncVideoChat) only
              perform the effects, by blocking or by awaiting
    _streams  StreamTally (did a stream end as an answer should), raw chunk streams
    _long     long videos: windows (pure planning), asked concurrently, answers combined
    _manifest, _jobs  batch jobs: manifests checked and indexed without loading them whole,
              rows grouped per video, results appended line by line (run_manifest)
    _sdk_errors  OpenAI SDK / transport errors -> the tree in vidchat/errors.py
    _results  Answer, ServerLimits
"""

from vidchat.client._async import AsyncVideoChat
from vidchat.client._constants import default_api_key, default_base_url
from vidchat.client._decode_worker import shutdown as shutdown_decode_workers
from vidchat.client._jobs import JobSummary
from vidchat.client._long import LongAnswer, Window
from vidchat.client._messages import EncodedVideo, build_messages, encode_video
from vidchat.client._plan import MODES as SAMPLING_MODES
from vidchat.client._remote import FetchLimits
from vidchat.client._results import Answer, ServerLimits
from vidchat.client._sampling import Frames, sample_frames
from vidchat.client._streams import AsyncChunkStream, ChunkStream
from vidchat.client._sync import VideoChat
from vidchat.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    FrameBudgetError,
    ManifestError,
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
    "ManifestError",
    "JobSummary",
    "LongAnswer",
    "OverloadedError",
    "RemoteVideoError",
    "SAMPLING_MODES",
    "SamplingArgumentError",
    "ServerLimits",
    "ServerUnavailableError",
    "StreamInterruptedError",
    "VideoChat",
    "VideoDecodeError",
    "VideoError",
    "VideoNotFoundError",
    "Window",
    "VidchatError",
    "build_messages",
    "default_api_key",
    "default_base_url",
    "encode_video",
    "sample_frames",
    "shutdown_decode_workers",
]
