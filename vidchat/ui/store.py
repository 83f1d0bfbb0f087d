"""Where the playground keeps uploaded videos and sampled frames, and for how long.

Uploads are written to one private temporary directory, counted while they stream in (a
body over the cap is cut off and its file deleted), and only the latest few are kept; the
directory is removed when the playground stops. Sampled frames (encoded once, the way every
question will send them) are kept by id, the latest few too.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidchat.client import EncodedVideo, FetchLimits
from vidchat.errors import PlaygroundError

__all__ = ["KEPT_SAMPLES", "KEPT_UPLOADS", "MAX_UPLOAD_BYTES", "Sampled", "Upload",
           "VideoStore"]

# An upload is held to the same cap as a video the client downloads itself.
MAX_UPLOAD_BYTES = FetchLimits().max_bytes
# One person tries a few videos and a few samplings of each; older ones are dropped.
KEPT_UPLOADS = 4
KEPT_SAMPLES = 16
# What an upload's file name may keep as its suffix (the decoders only read the bytes).
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")


@dataclass(frozen=True)
class Upload:
    id: str
    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class Sampled:
    """Frames sampled from one video, encoded once, and what the page showed about them."""

    id: str
    video: EncodedVideo
    info: dict[str, Any]


def _new_id() -> str:
    return secrets.token_urlsafe(9)


class VideoStore:
    """Uploads on disk and sampled frames in memory, each bounded in count."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, kept_uploads: int = KEPT_UPLOADS,
                 kept_samples: int = KEPT_SAMPLES) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vidchat-ui-", dir=root))
        self.max_upload_bytes = max_upload_bytes
        self._kept_uploads = kept_uploads
        self._kept_samples = kept_samples
        self._uploads: OrderedDict[str, Upload] = OrderedDict()
        self._samples: OrderedDict[str, Sampled] = OrderedDict()

    # -- uploads ---------------------------------------------------------------------------

    async def save_upload(self, name: str, body: AsyncIterator[bytes],
                          declared: int | None = None) -> Upload:
        """Write ``body`` to a new file, refusing it as soon as it passes the cap."""
        if declared is not None and declared > self.max_upload_bytes:
            raise self._too_large()
        upload_id = _new_id()
        suffix = m.group(0) if (m := _SUFFIX.search(name)) else ""
        path = self.dir / f"{upload_id}{suffix}"
        size = 0
        try:
            with path.open("wb") as sink:
                async for chunk in body:
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise self._too_large()
                    sink.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        upload = Upload(upload_id, Path(name).name or "upload", path, size)
        self._uploads[upload_id] = upload
        while len(self._uploads) > self._kept_uploads:
            _, old = self._uploads.popitem(last=False)
            old.path.unlink(missing_ok=True)
        return upload

    def upload(self, upload_id: str) -> Upload:
        try:
            return self._uploads[upload_id]
        except KeyError:
            raise PlaygroundError("that upload is gone (the playground keeps the latest "
                                  f"{self._kept_uploads}): upload the video again",
                                  status_code=404) from None

    def _too_large(self) -> PlaygroundError:
        return PlaygroundError(f"the video is larger than {self.max_upload_bytes / 2**20:g} "
                               "MiB: upload a shorter clip", status_code=413)

    # -- sampled frames --------------------------------------------------------------------

    def keep_sample(self, video: EncodedVideo, info: dict[str, Any]) -> Sampled:
        sampled = Sampled(_new_id(), video, info)
        self._samples[sampled.id] = sampled
        while len(self._samples) > self._kept_samples:
            self._samples.popitem(last=False)
        return sampled

    def sample(self, sample_id: str) -> Sampled:
        try:
            return self._samples[sample_id]
        except KeyError:
            raise PlaygroundError("those frames are gone (the playground keeps the latest "
                                  f"{self._kept_samples} samplings): sample the video again",
                                  status_code=404) from None

    def close(self) -> None:
        """Delete every upload and the directory."""
        self._uploads.clear()
        self._samples.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
