"""The published checkpoints' chat template (tests/fixtures/hub_template), for tests that
need the reference prompt of messages the fixtures do not list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

HUB_TEMPLATE_DIR = Path(__file__).resolve().parent / "fixtures" / "hub_template"


def hub_template() -> str:
    return json.loads((HUB_TEMPLATE_DIR / "chat_template.json").read_text())["chat_template"]


def hub_render(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """What the hub template renders (in transformers' jinja environment)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(hub_template()).render(messages=messages,
                                                  add_generation_prompt=add_generation_prompt)


def hub_prompt(n_images: int, question: str) -> str:
    """The reference prompt for n frames then a question."""
    content = [*([{"type": "image"}] * n_images), {"type": "text", "text": question}]
    return hub_render([{"role": "user", "content": content}])
