"""Our chat templates against what the published checkpoints' template renders.

The expected strings are fixtures rendered by the hub's own chat_template.json
(tests/fixtures/hub_template/SOURCE.md says where it came from). Nothing here compares one of
our templates with another.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parent.parent
HUB = ROOT / "tests" / "fixtures" / "hub_template"
ORDERED = ROOT / "configs" / "llava-interleave-ordered.jinja"
CHECKPOINT = ROOT / "server" / "llava_interleave.jinja"
OURS = {"ordered": ORDERED, "checkpoint": CHECKPOINT}

CASES = json.loads((HUB / "renderings.json").read_text())["cases"]


def render(template: str, messages: list[dict[str, Any]], generation: bool = True) -> str:
    # The environment transformers' apply_chat_template renders in.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(messages=messages, add_generation_prompt=generation)


def as_openai_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same messages with image parts the way an OpenAI client sends them."""
    out = copy.deepcopy(messages)
    for message in out:
        for i, part in enumerate(message["content"]):
            if part["type"] == "image":
                message["content"][i] = {"type": "image_url",
                                         "image_url": {"url": "data:image/jpeg;base64,AA=="}}
    return out


def test_the_fixtures_cover_what_the_issue_lists():
    names = {c["name"] for c in CASES}
    for n in (0, 1, 8, 32):
        case = next(c for c in CASES if c["name"] == f"{n}_images_then_question")
        assert case["rendered"].count("<image>") == n
    assert "multi_turn_with_assistant_turn" in names


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("ours", sorted(OURS))
def test_our_templates_render_exactly_what_the_hub_template_renders(ours: str, case: dict):
    template = OURS[ours].read_text()
    gen = case["add_generation_prompt"]
    assert render(template, case["messages"], gen) == case["rendered"]
    assert render(template, as_openai_parts(case["messages"]), gen) == case["rendered"]


def test_the_fixtures_are_what_transformers_renders_with_the_hub_template():
    """Keeps the fixture file honest: transformers itself renders the recorded hub template."""
    transformers = pytest.importorskip("transformers")
    from transformers.utils.chat_template_utils import render_jinja_template

    hub_template = json.loads((HUB / "chat_template.json").read_text())["chat_template"]
    assert transformers.__version__
    for case in CASES:
        rendered, _ = render_jinja_template(
            conversations=[case["messages"]], chat_template=hub_template,
            add_generation_prompt=case["add_generation_prompt"])
        assert rendered[0] == case["rendered"], case["name"]


def test_n_frames_add_nothing_but_their_placeholders():
    """The property the token budget rests on: frames cost n x 729 tokens, no separators."""
    by_name = {c["name"]: c["rendered"] for c in CASES}
    one, eight = by_name["1_images_then_question"], by_name["8_images_then_question"]
    assert eight.replace("<image>" * 8, "<image>") == one
    assert by_name["0_images_then_question"] == one.replace("<image>", "")


def test_timestamp_labels_sit_right_before_their_frames():
    content = [{"type": "text", "text": "Frame at 0:00.5:"}, {"type": "image"},
               {"type": "text", "text": "Frame at 0:01.5:"}, {"type": "image"},
               {"type": "text", "text": "Which frame is brighter?"}]
    messages = [{"role": "user", "content": content}]
    # Each part as the hub renders it ("\n" + text, bare "<image>"), in the order given.
    assert render(ORDERED.read_text(), messages) == (
        "<|im_start|>user\n\nFrame at 0:00.5:<image>\nFrame at 0:01.5:<image>\n"
        "Which frame is brighter?<|im_end|>\n<|im_start|>assistant\n")
    # Why the order-preserving template exists: the hub's moves every label after the images.
    hub = json.loads((HUB / "chat_template.json").read_text())["chat_template"]
    assert render(hub, messages) == (
        "<|im_start|>user\n<image><image>\nFrame at 0:00.5:\nFrame at 0:01.5:\n"
        "Which frame is brighter?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("ours", sorted(OURS))
def test_string_content_renders_like_one_text_part(ours: str):
    """vLLM hands templates text parts, but a plain string must not change the prompt."""
    as_string = [{"role": "user", "content": "Hello?"}]
    as_parts = [{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}]
    template = OURS[ours].read_text()
    assert render(template, as_string) == render(template, as_parts) == (
        "<|im_start|>user\n\nHello?<|im_end|>\n<|im_start|>assistant\n")
