"""OpenAI SDK and transport errors -> vidchat's error tree (vidchat/errors.py).

One sentence saying what is wrong and what to do next; the status and body in attributes.
"""

from __future__ import annotations

import httpx
import openai

from vidchat.client._constants import API_KEY_ENV, CACHE_MISS_MARKER
from vidchat.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    OverloadedError,
    ServerUnavailableError,
    StreamInterruptedError,
    VidchatError,
)

__all__ = ["broken_stream", "is_cache_miss", "map_error"]


def map_error(exc: BaseException) -> VidchatError:
    """The error tree's counterpart of an SDK / transport error."""
    if isinstance(exc, VidchatError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        status = exc.response.status_code
        detail = _server_message(exc)
        if status in (400, 422):
            return BadRequestError(f"the server rejected the request (HTTP {status}): {detail}",
                                   status_code=status, body=exc.body)
        if status == 413:
            return BadRequestError(
                "the request is larger than the server accepts (HTTP 413): send fewer frames",
                status_code=status, body=exc.body)
        if status in (401, 403):
            return AuthenticationError(
                f"the server refused the API key (HTTP {status}): set {API_KEY_ENV} to the "
                "server's key", status_code=status, body=exc.body)
        if status in (429, 503):
            return OverloadedError(
                f"the server stayed overloaded (HTTP {status}) through every retry: retry later, "
                "lower the concurrency, or add replicas", status_code=status, body=exc.body)
        return APIError(f"the server answered HTTP {status}: {detail}", status_code=status,
                        body=exc.body)
    if isinstance(exc, openai.APITimeoutError):
        return ServerUnavailableError("the server did not answer in time: check it is running "
                                      "and not overloaded, or raise timeout=")
    if isinstance(exc, openai.APIConnectionError):
        return ServerUnavailableError(f"cannot reach the server ({exc.__cause__ or exc}): is "
                                      "`vidchat serve` running at that URL?")
    if isinstance(exc, (httpx.HTTPError, ConnectionError)):
        return broken_stream(exc)
    return APIError(f"unexpected error talking to the server: {exc!r}")


def broken_stream(exc: BaseException) -> VidchatError:
    """A stream that broke while being read (its status was fine when it started)."""
    if isinstance(exc, VidchatError):
        return exc
    return StreamInterruptedError(
        f"the answer stream broke off ({exc.__class__.__name__}): ask again; streams are not "
        "retried automatically")


def is_cache_miss(exc: BaseException) -> bool:
    """vLLM no longer holds a frame that was sent as a uuid only (HTTP 400, not retryable)."""
    return isinstance(exc, openai.BadRequestError) and CACHE_MISS_MARKER in str(exc)


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        msg = body.get("message") or (body.get("error") or {}).get("message")
        if msg:
            return str(msg)[:300]
    return str(exc.message)[:300]
