"""Reference parity: the served model against transformers on the very same input.

The engine test sends 8 frames through `vidchat serve --config configs/cpu-tiny.yaml` (the
session's server) and runs transformers' LlavaForConditionalGeneration in float32 on the same
generated checkpoint, with the prompt the hub template renders and pixel values the
checkpoint's processor makes from the exact JPEG bytes the client sent (vidchat/parity.py).
"""

from __future__ import annotations

import pytest
import torch

from vidchat.client import VideoChat
from vidchat.limits import TOKENS_PER_IMAGE
from vidchat.parity import (
    GREEDY_TOKENS,
    EngineRun,
    ReferenceRun,
    bf16_ulp,
    check_parity,
    compare,
)

QUESTION = "What is happening in this video?"


def test_bf16_ulp_is_the_spacing_of_bfloat16_numbers():
    for x in (0.3, 0.645, 1.0, 1.7, 20.0, 300.0):
        t = torch.tensor(x, dtype=torch.bfloat16)
        up = torch.nextafter(t, torch.tensor(float("inf"), dtype=torch.bfloat16))
        assert bf16_ulp(float(t)) == float(up - t)


def _run(logprobs: list[list[float]]) -> ReferenceRun:
    lp = torch.tensor(logprobs)
    return ReferenceRun(10, lp, 1.0)


def test_compare_flags_a_wrong_pick_a_far_logprob_and_a_missing_top_token():
    ref = _run([[-1.0, -1.5, -2.0, -3.0, -4.0, -9.0, -9.5]])
    good = EngineRun(10, [0], [{0: -1.001, 1: -1.502, 2: -2.0, 3: -3.0, 4: -4.0}])
    assert compare(good, ref, 0.01)[0].ok
    wrong_pick = EngineRun(10, [1], [{1: -1.5, 0: -1.0, 2: -2.0, 3: -3.0, 4: -4.0}])
    assert not compare(wrong_pick, ref, 0.01)[0].ok  # the margin 0.5 is decisive
    far = EngineRun(10, [0], [{0: -1.0, 1: -1.6, 2: -2.0, 3: -3.0, 4: -4.0}])
    assert not compare(far, ref, 0.01)[0].ok
    missing = EngineRun(10, [0], [{0: -1.0, 1: -1.5, 2: -2.0, 3: -3.0, 5: -9.0}])
    assert not compare(missing, ref, 0.01)[0].ok  # token 4 (-4.0) is far above the fifth


def test_a_bf16_tie_may_pick_either_token():
    ref = _run([[-1.0, -1.004, -2.0, -3.0, -4.0, -9.0]])
    tie = EngineRun(10, [1], [{1: -1.0, 0: -1.003, 2: -2.0, 3: -3.0, 4: -4.0}])
    assert compare(tie, ref, 0.01)[0].ok


@pytest.mark.engine
def test_the_served_model_matches_transformers_on_the_same_frames(server, h264_clip):
    from _hub import hub_template

    from vidchat.parity import Reference

    with VideoChat(server.base_url) as chat:
        video = chat.prepare(h264_clip, 8)
        reference = Reference(str(server.model_dir), chat_template=hub_template())
        report = check_parity(chat, video, QUESTION, str(server.model_dir),
                              reference=reference)
    print(report.format())
    # The prompt: same length, and that length is the frames' placeholders plus the text.
    assert report.engine_prompt_tokens == report.reference_prompt_tokens
    assert report.engine_prompt_tokens - 8 * TOKENS_PER_IMAGE < 40
    # The first token: the reference's margin is decisive here, so top-1 must agree exactly.
    first = report.steps[0]
    assert first.reference_margin > report.tolerance
    assert first.engine_token == first.reference_top1 and first.ok
    # Every greedy step within tolerance, and the check can tell altered frames apart.
    assert len(report.steps) == GREEDY_TOKENS
    assert [s.step for s in report.steps if not s.ok] == []
    assert len(report.controls) == 3
    assert all(v > report.tolerance for v in report.controls.values()), report.controls
    assert report.template_cases and all(report.template_cases.values())
    assert report.ok


@pytest.mark.engine
def test_vidchat_parity_prints_its_verdict(server, h264_clip, capsys):
    from vidchat.cli import main

    code = main(["parity", "--server", server.base_url, "--video", str(h264_clip),
                 "--frames", "4", "--tokens", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "prompt tokens: engine" in out and out.strip().endswith("parity: PASS")


def test_on_a_gpu_profile_parity_leaves_room_for_the_reference(monkeypatch):
    """The command a GPU host runs: vLLM gets half the card, transformers the rest."""
    from pathlib import Path

    from vidchat import parity, serve_process

    seen: list[tuple] = []

    class Started(Exception):
        pass

    def start(config, *args, **kwargs):
        seen.append((str(config), args))
        raise Started

    monkeypatch.setattr(serve_process.ServeProcess, "start", staticmethod(start))
    profile = Path(__file__).resolve().parent.parent / "configs" / \
        "llava-interleave-qwen-0.5b.yaml"
    with pytest.raises(Started):
        parity.run_parity_command(str(profile))
    assert seen == [(str(profile), ("--set", "gpu_memory_utilization=0.5"))]
