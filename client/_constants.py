"""Every timeout, retry and default of the client, named once."""

from __future__ import annotations

import os

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
BASE_URL_ENV = "VIDCHAT_BASE_URL"
API_KEY_ENV = "VIDCHAT_API_KEY"
# vLLM accepts any key when started without one; the SDK insists on a non-empty string.
NO_KEY = "EMPTY"

DEFAULT_TIMEOUT_S = 120.0  # one request, frames upload to last token
CONNECT_TIMEOUT_S = 5.0
DEFAULT_MAX_RETRIES = 3  # 429/503/connection errors, with exponential backoff (SDK)
DEFAULT_MAX_TOKENS = 256
DEFAULT_CONCURRENCY = 8
# uuids the client remembers having uploaded; beyond that it simply uploads again.
UUID_MEMORY = 4096
from vidchat.limits import SESSION_HEADER  # noqa: E402,F401 - re-exported for the client

# What the server answers when it no longer holds a frame that was sent as a uuid only.
CACHE_MISS_MARKER = "Cache miss for image"


def default_base_url() -> str:
    return os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


def default_api_key() -> str:
    return os.environ.get(API_KEY_ENV) or NO_KEY
