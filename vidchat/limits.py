"""The numbers (and names) server and client must agree on, in one place."""

from __future__ import annotations

import math

# SigLIP-so400m-patch14-384: frames are 384x384, cut into 14-pixel patches: 27 x 27 = 729
# image tokens per frame with vision_feature_select_strategy="full".
FRAME_SIZE = 384
PATCH_SIZE = 14
TOKENS_PER_IMAGE = (FRAME_SIZE // PATCH_SIZE) ** 2  # 729

DEFAULT_FRAMES = 8
# Qwen1.5 context is 32768 tokens: 44 frames x 729 = 32076 leaves room for a short question
# and answer. Profiles may lower it; nothing may raise it past what max_model_len holds.
MAX_CONTEXT_TOKENS = 32768
# Room kept beside the image tokens for the chat template, question and answer.
TEXT_RESERVE_TOKENS = 640
# JPEG quality of the frames sent (4:4:4, client/_encoding.py). The lowest that keeps frames
# >= 40 dB PSNR against the reference with a margin on a detailed 1080p clip: 41.8 dB there at
# 94, 40.8 at 93; each step up costs 7-9% more bytes (docs/sampling.md, the quality sweep).
JPEG_QUALITY = 94

# Request bodies. A frame travels as a base64 JPEG of 384x384, 4:4:4 at JPEG_QUALITY: 40-80 KB
# for video; uniform noise, the worst case for JPEG, is 436 KiB of base64 (measured), and
# 512 KiB is 1.17x that. The text reserve holds a whole 32k-token context of text even
# JSON-escaped (32768 tokens x ~4 characters x up to 6 bytes for a \uXXXX escape = 786 KB
# < 1 MiB).
# Default cap: max_frames x 512 KiB + 1 MiB, rounded up to whole MiB (16 frames: 9 MiB,
# 32 frames: 17 MiB, 44 frames: 23 MiB).
REQUEST_BYTES_PER_FRAME = 512 * 1024
REQUEST_TEXT_BYTES = 1024 * 1024
MIB = 2**20


def max_frames_for_context(max_model_len: int, text_reserve: int = TEXT_RESERVE_TOKENS) -> int:
    """How many frames fit a context of ``max_model_len`` tokens with ``text_reserve`` to spare."""
    return max(0, (max_model_len - text_reserve) // TOKENS_PER_IMAGE)


def context_for_frames(max_frames: int, text_reserve: int = TEXT_RESERVE_TOKENS) -> int:
    """The ``--max-model-len`` that holds ``max_frames`` frames plus ``text_reserve`` tokens."""
    return max_frames * TOKENS_PER_IMAGE + text_reserve


def request_mb_for_frames(max_frames: int) -> int:
    """The default request-body cap in MiB for ``max_frames`` frames (see above)."""
    return math.ceil((max_frames * REQUEST_BYTES_PER_FRAME + REQUEST_TEXT_BYTES) / MIB)


# The client sends the video's content hash in this header; vllm-router's consistent_hash
# policy hashes it first, so every question about one video reaches the replica whose prefix
# cache already holds its frames.
SESSION_HEADER = "X-Session-ID"
