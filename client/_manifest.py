"""Batch manifests and their results files, read without loading them whole.

    MANIFEST.jsonl ──► scan_manifest: one pass; every line checked (JSON, keys, types),
                       duplicate custom_ids found; per line only its offset and two 64-bit
                       hashes are kept (~24 bytes a row: 100,000 rows in ~2.4 MB)
                   ──► ManifestIndex.groups(skip=done): rows about one video with the same
                       sampling, grouped whatever their order, read back from their offsets
    RESULTS.jsonl ──► finished_ids: the custom_ids already answered (a torn last line, left
                       by a crash on another kind of file system, is cut off first)

A manifest line is one question: {"custom_id", "video", "question"} plus optional sampling
keys (frames, fps, start, end, mode, timestamps) and generation keys (max_tokens, ...).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidchat.client._plan import MODES
from vidchat.errors import ManifestError
from vidchat.limits import DEFAULT_FRAMES

__all__ = ["ManifestIndex", "Row", "finished_ids", "read_results", "scan_manifest"]

REQUIRED_KEYS = ("custom_id", "video", "question")
SAMPLING_KEYS = ("frames", "fps", "start", "end", "mode")
# What a row may pass to the chat request (OpenAI's and vLLM's sampling parameters). Anything
# else is a typo until proven otherwise: refused with its line number.
GENERATION_KEYS = frozenset({
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
    "stop", "presence_penalty", "frequency_penalty", "repetition_penalty", "min_tokens",
    "ignore_eos", "logprobs", "top_logprobs", "skip_special_tokens",
})
MAX_PROBLEMS_SHOWN = 5


@dataclass(frozen=True)
class Row:
    """One manifest line, checked."""

    line: int
    custom_id: str
    video: str
    question: str
    frames: int
    sampling: dict[str, Any]
    timestamps: bool
    gen: dict[str, Any]


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little",
                          signed=True)


def parse_row(line_no: int, text: str) -> Row:
    """A manifest line as a Row, or ManifestError naming the line and what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"line {line_no}: not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"line {line_no}: a JSON object is needed, not "
                            f"{type(data).__name__}")
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ManifestError(f"line {line_no}: '{key}' must be a non-empty string")
    unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(SAMPLING_KEYS) - {"timestamps"}
                     - GENERATION_KEYS)
    if unknown:
        raise ManifestError(f"line {line_no}: unknown key '{unknown[0]}' (sampling keys: "
                            f"{', '.join(SAMPLING_KEYS)}, timestamps; generation keys: "
                            f"{', '.join(sorted(GENERATION_KEYS))})")
    frames = data.get("frames", DEFAULT_FRAMES)
    if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 1:
        raise ManifestError(f"line {line_no}: 'frames' must be a positive integer")
    mode = data.get("mode")
    if mode is not None and mode not in MODES:
        raise ManifestError(f"line {line_no}: 'mode' must be one of {', '.join(MODES)}, not "
                            f"{mode!r}")
    timestamps = data.get("timestamps", False)
    if not isinstance(timestamps, bool):
        raise ManifestError(f"line {line_no}: 'timestamps' must be true or false")
    sampling = {k: data[k] for k in SAMPLING_KEYS[1:] if data.get(k) is not None}
    gen = {k: data[k] for k in GENERATION_KEYS if k in data}
    return Row(line_no, data["custom_id"], data["video"], data["question"], int(frames),
               sampling, timestamps, gen)


def _group_key(row: Row) -> str:
    """Rows with equal keys share one sampling of one video."""
    return json.dumps([row.video, row.frames, sorted(row.sampling.items())])


@dataclass
class ManifestIndex:
    path: Path
    offsets: np.ndarray  # int64: byte offset of each row's line
    lines: np.ndarray  # int64: its line number
    group_hashes: np.ndarray  # int64: hash of (video, sampling)
    id_hashes: np.ndarray  # int64: hash of custom_id

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, position: int, f: Any = None) -> Row:
        if f is None:
            with open(self.path, "rb") as f:
                return self.read(position, f)
        f.seek(int(self.offsets[position]))
        return parse_row(int(self.lines[position]), f.readline().decode())

    def pending(self, done: np.ndarray) -> np.ndarray:
        """Positions of the rows whose custom_id is not among ``done`` (sorted hashes)."""
        if len(done) == 0:
            return np.arange(len(self))
        return np.flatnonzero(~np.isin(self.id_hashes, done))

    def groups(self, positions: np.ndarray) -> Iterator[list[Row]]:
        """The rows at ``positions``, grouped by video and sampling, each group in line
        order, the groups in the order of their first line. Reads one group at a time."""
        if len(positions) == 0:
            return
        order = positions[np.lexsort((self.lines[positions], self.group_hashes[positions]))]
        hashes = self.group_hashes[order]
        starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
        ends = np.r_[starts[1:], len(order)]
        firsts = self.lines[order[starts]]
        with open(self.path, "rb") as f:
            for g in np.argsort(firsts, kind="stable"):
                yield [self.read(int(p), f) for p in order[starts[g]:ends[g]]]


def scan_manifest(path: str | os.PathLike[str]) -> ManifestIndex:
    """Check every line of a manifest and index it; ManifestError lists the bad lines."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}: pass a JSONL file, one question a line")
    offsets, lines, groups, ids = array("q"), array("q"), array("q"), array("q")
    problems: list[str] = []
    with open(path, "rb") as f:
        offset, line_no = 0, 0
        for raw in f:
            line_no += 1
            start, offset = offset, offset + len(raw)
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                row = parse_row(line_no, text)
            except ManifestError as exc:
                problems.append(str(exc))
                continue
            offsets.append(start)
            lines.append(line_no)
            groups.append(_hash64(_group_key(row)))
            ids.append(_hash64(row.custom_id))
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" \
            if len(problems) > MAX_PROBLEMS_SHOWN else ""
        raise ManifestError(f"{path} has {len(problems)} bad line(s): {shown}{more}; fix them "
                            "and run again (nothing was sent)")
    index = ManifestIndex(path, *(np.frombuffer(a, np.int64).copy() if len(a) else
                                  np.empty(0, np.int64) for a in (offsets, lines, groups, ids)))
    _refuse_duplicates(index)
    return index


def _refuse_duplicates(index: ManifestIndex) -> None:
    ids = index.id_hashes
    order = np.argsort(ids, kind="stable")
    dup = order[np.r_[False, ids[order][1:] == ids[order][:-1]]]
    if len(dup) == 0:
        return
    # Hashes can collide: confirm with the ids themselves, read back for these rows only.
    suspects = np.isin(ids, ids[dup])
    by_id: dict[str, list[int]] = {}
    for p in np.flatnonzero(suspects):
        row = index.read(int(p))
        by_id.setdefault(row.custom_id, []).append(row.line)
    repeated = {cid: ls for cid, ls in by_id.items() if len(ls) > 1}
    if repeated:
        shown = "; ".join(f"'{cid}' on lines {', '.join(map(str, ls))}"
                          for cid, ls in list(repeated.items())[:MAX_PROBLEMS_SHOWN])
        raise ManifestError(f"{index.path} repeats {len(repeated)} custom_id(s): {shown}; "
                            "make each custom_id unique (nothing was sent)")


def finished_ids(out: str | os.PathLike[str]) -> np.ndarray:
    """Sorted hashes of the custom_ids already in a results file (see `read_results`)."""
    return read_results(out)[0]


def read_results(out: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Sorted hashes of the custom_ids already in a results file (empty if there is none),
    and how many of those lines hold an error.

    A last line without its newline can only be a write cut short: it is removed, so that
    its row runs again and the file holds whole lines only.
    """
    out = Path(out)
    if not out.exists():
        return np.empty(0, np.int64), 0
    with open(out, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(max(0, size - 1))
            if f.read(1) != b"\n":
                f.seek(0)
                keep = f.read().rfind(b"\n") + 1
                f.truncate(keep)
    hashes, failed = array("q"), 0
    with open(out, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                result = json.loads(raw)
                hashes.append(_hash64(result["custom_id"]))
            except (ValueError, KeyError, TypeError):
                raise ManifestError(f"{out} line {line_no} is not a result line: pass a new "
                                    "--out, or the file an earlier run wrote") from None
            failed += result.get("error") is not None
    return np.unique(np.frombuffer(hashes, np.int64) if hashes else np.empty(0, np.int64)), \
        failed
