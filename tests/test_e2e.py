"""The real path: `vidchat serve` subprocess -> vLLM on CPU -> generated checkpoint, with
frames sampled from a real H.264 file and sent through the OpenAI SDK."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from _hub import hub_prompt

from vidchat.client import VideoChat, build_messages, sample_frames
from vidchat.limits import TOKENS_PER_IMAGE

pytestmark = pytest.mark.engine

QUESTION = "What is happening in this video?"


def text_tokens(model_dir: Path, n_images: int, question: str) -> int:
    """Tokens of the reference prompt other than the image placeholders: the prompt the
    published checkpoints' template renders (tests/fixtures/hub_template), counted with the
    checkpoint's tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok(hub_prompt(n_images, question), add_special_tokens=False)["input_ids"]
    assert ids.count(tok.convert_tokens_to_ids("<image>")) == n_images
    return len(ids) - n_images


def test_eight_frames_cost_eight_times_729_tokens_plus_the_text(server, h264_clip):
    frames = sample_frames(h264_clip, 8)
    assert len(frames) == 8
    messages = build_messages(frames, QUESTION)
    assert sum(p["type"] == "image_url" for p in messages[0]["content"]) == 8

    sdk = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
    resp = sdk.chat.completions.create(model=server.model, messages=messages, max_tokens=8,
                                       temperature=0)
    expected = 8 * TOKENS_PER_IMAGE + text_tokens(server.model_dir, 8, QUESTION)
    assert resp.usage.prompt_tokens == expected
    assert resp.usage.completion_tokens >= 1
    assert resp.choices[0].message.content is not None


def test_too_many_frames_is_a_400_and_the_server_still_answers(server, h264_clip):
    frames = sample_frames(h264_clip, 24)
    assert len(frames) > 16  # the cpu-tiny profile's limit
    sdk = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model=server.model, messages=build_messages(frames, "Hi?"),
                                    max_tokens=4)
    assert info.value.status_code == 400
    ok = sdk.chat.completions.create(
        model=server.model, messages=build_messages(sample_frames(h264_clip, 2), "Hi?"),
        max_tokens=4)
    assert ok.usage.prompt_tokens > 2 * TOKENS_PER_IMAGE
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_videochat_ask_end_to_end(server, h264_clip):
    with VideoChat(server.base_url) as chat:
        answer = chat.ask(h264_clip, QUESTION, frames=4, max_tokens=6)
    assert answer.frames == 4 and answer.model == server.model
    assert answer.prompt_tokens == 4 * TOKENS_PER_IMAGE + text_tokens(server.model_dir, 4,
                                                                      QUESTION)
    assert 1 <= answer.completion_tokens <= 6


def test_the_served_prompt_is_the_hub_rendering_token_for_token(server, h264_clip):
    """What vLLM tokenizes is the hub template's prompt with each <image> expanded to its 729
    placeholders: nothing added around the frames, so 4 more frames cost exactly 4 x 729."""
    import httpx
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(server.model_dir))
    lengths = {}
    for n in (4, 8):
        messages = build_messages(sample_frames(h264_clip, n), QUESTION)
        served = httpx.post(server.url + "/tokenize", timeout=60, json={
            "model": server.model, "messages": messages, "add_generation_prompt": True}).json()
        reference = hub_prompt(n, QUESTION).replace("<image>", "<image>" * TOKENS_PER_IMAGE)
        assert served["tokens"] == tok(reference, add_special_tokens=False)["input_ids"]
        lengths[n] = served["count"]
    assert lengths[8] - lengths[4] == 4 * TOKENS_PER_IMAGE
