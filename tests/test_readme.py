"""The README's Python blocks run as written, against the real CPU server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.engine

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(python_blocks()) >= 3


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_block_runs(index: int, server, h264_clip, capsys):
    code = python_blocks()[index]
    # The only edits: the server's address and model name, and a real clip for the names.
    code = code.replace("http://127.0.0.1:8000/v1", server.base_url)
    code = code.replace('"llava-interleave-qwen-0.5b"', repr(server.model))
    for name in ("clip.mp4", "a.mp4", "b.mp4"):
        code = code.replace(f'"{name}"', repr(str(h264_clip)))
    namespace: dict = {}
    exec(compile(code, f"README.md block {index}", "exec"), namespace)  # noqa: S102
    if "main" in namespace and asyncio.iscoroutinefunction(namespace["main"]):
        asyncio.run(namespace["main"]())
    results = namespace.get("results")
    if results is not None:
        assert all(not isinstance(r, Exception) for r in results), results
