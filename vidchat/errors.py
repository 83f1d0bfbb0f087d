"""Every error vidchat raises on purpose.

    VidchatError                  base: catch this to catch them all
    ├── ConfigError               a profile or --set value is wrong (names the key and file)
    ├── VideoError                a video cannot be turned into frames
    │   ├── VideoNotFoundError    the path does not exist or is not a file
    │   ├── VideoDecodeError      not a video, truncated, no video stream, decoder failure
    │   ├── RemoteVideoError      an http(s) video could not be fetched safely
    │   └── SamplingArgumentError a sampling argument is out of range (also a ValueError)
    ├── FrameBudgetError          the request cannot fit the server's context or frame limit
    ├── ManifestError             a batch manifest (or its results file) is malformed
    ├── PlaygroundError           `vidchat ui`: a form value or an upload the page cannot use
    ├── APIError                  the server answered with an error or did not answer
    │   ├── BadRequestError       HTTP 400: the request is wrong; retrying will not help
    │   ├── AuthenticationError   HTTP 401/403: wrong or missing API key
    │   ├── OverloadedError       HTTP 429/503 after the retries ran out
    │   ├── ServerUnavailableError  connection refused, reset or timed out
    │   └── StreamInterruptedError  a streamed answer stopped before it finished
    └── EngineError               the launcher could not start or keep the engine running

Messages are one sentence saying what is wrong and what to do next; the data is in attributes.
"""

from __future__ import annotations


class VidchatError(Exception):
    """Base class of every error vidchat raises on purpose."""


class ConfigError(VidchatError):
    """A deployment profile or an override is invalid."""


class VideoError(VidchatError):
    """A video could not be turned into frames."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class VideoNotFoundError(VideoError):
    """The video path does not exist or is not a regular file."""


class VideoDecodeError(VideoError):
    """The file is not a decodable video (empty, truncated, audio-only, corrupt)."""


class RemoteVideoError(VideoError):
    """An http(s) video could not be downloaded within the safety limits."""


class SamplingArgumentError(VideoError, ValueError):
    """An argument of `sample_frames` is out of range (frame count, window, size, backend)."""


class FrameBudgetError(VidchatError):
    """The request would not fit the server's context length or per-prompt frame limit."""


class ManifestError(VidchatError):
    """A batch manifest has bad lines or repeated custom_ids (nothing is sent then)."""


class PlaygroundError(VidchatError):
    """`vidchat ui` refused what the page sent: a form value, or an upload (too large, gone)."""

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code
        """The HTTP status the playground answers with."""


class APIError(VidchatError):
    """The server answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status_code: int | None = None, body: object = None):
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class BadRequestError(APIError):
    """HTTP 400: the server rejected the request; sending it again will not help."""


class AuthenticationError(APIError):
    """HTTP 401/403: the API key is wrong or missing."""


class OverloadedError(APIError):
    """HTTP 429/503: the server stayed overloaded through every retry."""


class ServerUnavailableError(APIError):
    """The server could not be reached (refused, reset, timed out)."""


class StreamInterruptedError(APIError):
    """A streamed answer broke off; streams are never retried silently."""


class EngineError(VidchatError):
    """The launcher could not start the engine, or the engine exited."""
