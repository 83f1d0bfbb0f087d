"""Where a video comes from: a local path, a file:// URL or an http(s) URL, resolved in one
place to a readable local file (downloads go through `_remote.fetch_video`'s safety limits).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from vidchat.client._remote import FetchLimits, fetch_video
from vidchat.errors import (
    RemoteVideoError,
    SamplingArgumentError,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
)

__all__ = ["is_url", "resolve_source"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(source: object) -> bool:
    """Whether ``source`` names a URL (any scheme but a Windows drive letter)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    m = _SCHEME.match(source) if isinstance(source, str) else None
    return bool(m and len(m.group(1)) > 1)  # "C://..." is a drive, not a scheme


@contextlib.contextmanager
def resolve_source(source: object, fetch_limits: FetchLimits | None = None) -> Iterator[str]:
    """A readable local file for ``source``, or a typed error.

    ``source`` is a path (str or os.PathLike), a ``file://`` URL, or an http(s) URL, which is
    downloaded within ``fetch_limits`` to a temporary file deleted when the block ends.
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise SamplingArgumentError(
            f"source must be a file path (str or pathlib.Path) or an http(s) URL, got "
            f"{type(source).__name__}; pass the path of a video file."
        )
    if is_url(source):
        scheme = source.split("://", 1)[0].lower()
        if scheme in ("http", "https"):
            with fetch_video(source, fetch_limits) as local:
                yield str(local)
            return
        if scheme != "file":
            raise RemoteVideoError(
                f"{scheme}:// sources are not supported; pass a local video file path.",
                source=source,
            )
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        source = url2pathname(urlparse(source).path)
    path = Path(source).expanduser()
    if not path.exists():
        raise VideoNotFoundError(
            f"No video at {path}; check the path (relative paths start at {os.getcwd()}).",
            source=str(source),
        )
    if path.is_dir():
        raise VideoNotFoundError(
            f"{path} is a directory, not a video file; pass the path of a video inside it.",
            source=str(source),
        )
    if not path.is_file():
        raise VideoNotFoundError(
            f"{path} is not a regular file; pass the path of a video file.", source=str(source)
        )
    if not os.access(path, os.R_OK):
        raise VideoError(
            f"{path} cannot be read (permission denied); fix its permissions.", source=str(source)
        )
    if path.stat().st_size == 0:
        raise VideoDecodeError(
            f"{path} is empty (0 bytes); the copy or download probably failed: get it again.",
            source=str(source),
        )
    yield str(path)
