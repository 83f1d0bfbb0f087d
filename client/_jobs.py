"""Batch jobs: a manifest of many questions in, one OpenAI-Batch-shaped line per question out,
resumable and exactly once.

    scan_manifest (every line checked, duplicates refused: nothing sent on a bad manifest)
      └─► finished_ids(out): rows already answered are skipped
            └─► groups of rows (one video, one sampling), fed lazily, N at a time
                  └─► job_group: sample + encode once; ask_group: the first question
                      streamed, the rest released when it starts; N requests in flight over
                      the whole job (one Gate); transient failures retried with backoff
                        └─► ResultWriter: each line written whole by one write(2) on an
                            O_APPEND file, the moment its row is done

A SIGKILL at any moment leaves whole lines only (a line is one write of a few KiB to a
regular file, which the kernel does not split), and a rerun appends what is missing.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidchat.client import _flows as F
from vidchat.client._core import ClientCore
from vidchat.client._manifest import ManifestIndex, Row, read_results, scan_manifest
from vidchat.client._results import Answer
from vidchat.errors import (
    APIError,
    OverloadedError,
    ServerUnavailableError,
    StreamInterruptedError,
    VidchatError,
)

__all__ = ["JobSummary", "ResultWriter", "job", "prepare_job"]

# Failures worth another try: the server was busy or away, or the stream broke. (The SDK has
# already retried 429/503/connection errors with its own backoff before these reach here.)
TRANSIENT = (OverloadedError, ServerUnavailableError, StreamInterruptedError)
RETRY_ATTEMPTS = 4
RETRY_FIRST_DELAY_S = 2.0
RETRY_MAX_DELAY_S = 30.0


def retry_delay(attempt: int) -> float:
    return min(RETRY_MAX_DELAY_S, RETRY_FIRST_DELAY_S * 2 ** attempt)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, APIError) and error.status_code is not None \
            and 500 <= error.status_code < 600:
        return True  # vLLM's one-off 500s (e.g. a multimodal cache record dropped)
    return isinstance(error, TRANSIENT)


def error_code(error: BaseException) -> str:
    """VideoNotFoundError -> "video_not_found"; BadRequestError -> "bad_request"."""
    name = type(error).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() or "error"


def result_line(row: Row, result: Answer | BaseException) -> dict[str, Any]:
    """One line of the OpenAI Batch output shape, with vidchat's own fields beside it."""
    line: dict[str, Any] = {"id": f"vidchat_req_{uuid.uuid4().hex}", "custom_id": row.custom_id}
    if isinstance(result, Answer):
        body = result.completion or {}
        line["response"] = {"status_code": 200, "request_id": body.get("id") or None,
                            "body": body}
        line["error"] = None
        line["vidchat"] = {"video": row.video, "frames": result.frames,
                           "frame_times": result.frame_times, "bytes_sent": result.bytes_sent,
                           "timings": result.timings}
        return line
    status = result.status_code if isinstance(result, APIError) else None
    line["response"] = ({"status_code": status, "request_id": None, "body": result.body}
                        if status is not None else None)
    line["error"] = {"code": error_code(result), "message": str(result)}
    line["vidchat"] = {"video": row.video}
    return line


@dataclass
class JobSummary:
    """What a run did (this run's rows) and where the whole job stands."""

    rows: int = 0
    """Rows in the manifest."""
    skipped: int = 0
    """Rows already in the results file when the run started."""
    failed_before: int = 0
    """Of those, rows recorded with an error by an earlier run."""
    answered: int = 0
    failed: int = 0
    """Rows recorded with an error (this run)."""
    pending: int = 0
    """Rows left out after their transient failures outlasted the retries: rerun for them."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every row of the manifest is in the results, none with an error."""
        return self.failed == 0 and self.failed_before == 0 and self.pending == 0

    def format(self) -> str:
        rate = self.answered / self.seconds if self.seconds else 0.0
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items()))
        before = f" ({self.failed_before} of them failed)" if self.failed_before else ""
        return (f"vidchat batch: {self.rows} rows: {self.skipped} already done{before}, "
                f"{self.answered} answered, {self.failed} failed"
                f"{' (' + errors + ')' if errors else ''}, {self.pending} left for a rerun; "
                f"{self.seconds:.1f} s, {rate:.2f} answers/s, {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens")


class ResultWriter:
    """Appends result lines, each with one write(2); counts what it wrote. Thread-safe."""

    def __init__(self, out: str | os.PathLike[str], summary: JobSummary,
                 on_row: Any = None) -> None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self.summary = summary
        self.on_row = on_row

    def write(self, row: Row, result: Answer | BaseException) -> None:
        data = (json.dumps(result_line(row, result), ensure_ascii=False) + "\n").encode()
        with self._lock:
            view = memoryview(data)
            while view:  # write(2) may write less than asked (a full disk, a signal)
                view = view[os.write(self._fd, view):]
            s = self.summary
            if isinstance(result, Answer):
                s.answered += 1
                s.prompt_tokens += result.prompt_tokens
                s.completion_tokens += result.completion_tokens
            else:
                s.failed += 1
                s.errors[error_code(result)] = s.errors.get(error_code(result), 0) + 1
            if self.on_row is not None:
                self.on_row(isinstance(result, Answer))

    def leave_pending(self, row: Row, error: BaseException) -> None:
        with self._lock:
            self.summary.pending += 1
            if self.on_row is not None:
                self.on_row(False)

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class PreparedJob:
    index: ManifestIndex
    positions: Any  # numpy positions of the rows still to do
    summary: JobSummary


def prepare_job(manifest: str | os.PathLike[str], out: str | os.PathLike[str]) -> PreparedJob:
    """Check the manifest, read what is already done: everything before anything is sent."""
    index = scan_manifest(manifest)
    done, failed_before = read_results(out)
    positions = index.pending(done)
    return PreparedJob(index, positions,
                       JobSummary(rows=len(index), skipped=len(index) - len(positions),
                                  failed_before=failed_before))


def job_group(core: ClientCore, rows: list[Row], gate: F.Gate, sink: ResultWriter,
              concurrency: int) -> F.Flow[None]:
    """One video's rows (same sampling): sampled once, asked as a group; every row's
    result written as it ends. Transient failures are asked again after a backoff; rows still
    failing after RETRY_ATTEMPTS are left out of the results (a rerun asks them again)."""
    first = rows[0]
    try:
        enc = yield F.Prepare(first.video, first.frames, first.sampling)
    except VidchatError as exc:
        for row in rows:
            sink.write(row, exc)
        return
    questions = [F.Question(r.question, r.timestamps, r.gen) for r in rows]
    todo = list(range(len(rows)))
    last_error: dict[int, BaseException] = {}
    for attempt in range(RETRY_ATTEMPTS + 1):
        retry: list[int] = []

        def on_result(i: int, result: Any, batch: list[int] = todo, retry: list[int] = retry
                      ) -> None:
            if isinstance(result, BaseException) and is_transient(result):
                last_error[batch[i]] = result
                retry.append(batch[i])
            else:
                sink.write(rows[batch[i]], result)

        yield from F.ask_group(core, enc, [questions[i] for i in todo], concurrency,
                               gate=gate, on_result=on_result, capture=True)
        if not retry:
            return
        todo = sorted(retry)
        if attempt < RETRY_ATTEMPTS:
            yield F.Sleep(retry_delay(attempt))
    for i in todo:  # still failing: not written, so that a rerun asks them again
        sink.leave_pending(rows[i], last_error[i])


def job(core: ClientCore, prepared: PreparedJob, concurrency: int, sink: ResultWriter
        ) -> F.Flow[JobSummary]:
    """The whole run: at most ``concurrency`` videos in progress and requests in flight."""
    t0 = time.perf_counter()
    yield from F.limits(core)  # the server is there before anything else happens
    gate = F.Gate(concurrency)
    groups: Iterator[list[Row]] = prepared.index.groups(prepared.positions)
    flows = (job_group(core, rows, gate, sink, concurrency) for rows in groups)
    handle = yield F.Spawn(flows, max(1, concurrency), keep=False)
    yield F.Gather(handle, capture=True)
    prepared.summary.seconds = time.perf_counter() - t0
    return prepared.summary


def progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar with rate and ETA, counting failed rows as it goes."""
    from tqdm import tqdm

    bar = tqdm(total=total, disable=not enabled, unit="row", desc="vidchat batch",
               smoothing=0.1, dynamic_ncols=True)
    failed = [0]

    def on_row(ok: bool) -> None:
        if not ok:
            failed[0] += 1
            bar.set_postfix(failed=failed[0], refresh=False)
        bar.update()

    return bar, on_row


class JobRun:
    """One run's files and progress bar: ``with JobRun(...) as run: drive(job(..., run))``."""

    def __init__(self, manifest: str | os.PathLike[str], out: str | os.PathLike[str],
                 progress: bool) -> None:
        self.prepared = prepare_job(manifest, out)
        self.bar, on_row = progress_bar(len(self.prepared.positions), progress)
        self.sink = ResultWriter(out, self.prepared.summary, on_row)

    def __enter__(self) -> JobRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sink.close()
        self.bar.close()
