"""The order-preserving template shipped in configs/ against the checkpoint's template."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

ROOT = Path(__file__).resolve().parent.parent
ORDERED = ROOT / "configs" / "llava-interleave-ordered.jinja"
CHECKPOINT = ROOT / "server" / "llava_interleave.jinja"


def render(template: Path, content: list[dict], generation: bool = True) -> str:
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template.read_text()).render(
        messages=[{"role": "user", "content": content}], add_generation_prompt=generation)


@pytest.mark.parametrize("n_images", [0, 1, 8])
def test_images_then_question_renders_like_the_checkpoint(n_images: int):
    content = [{"type": "image_url"}] * n_images + [{"type": "text", "text": "What happens?"}]
    assert render(ORDERED, content) == render(CHECKPOINT, content)


def test_labels_stay_beside_their_frames():
    content = [{"type": "text", "text": "Frame at 0:00.5:"}, {"type": "image"},
               {"type": "text", "text": "Frame at 0:01.5:"}, {"type": "image"},
               {"type": "text", "text": "Which frame is brighter?"}]
    assert render(ORDERED, content) == (
        "<|im_start|>user\nFrame at 0:00.5:\n<image>\nFrame at 0:01.5:\n<image>\n"
        "Which frame is brighter?<|im_end|>\n<|im_start|>assistant\n")
    # The checkpoint's template would move both labels after the images.
    assert render(CHECKPOINT, content).index("Frame at") > render(CHECKPOINT,
                                                                  content).index("<image>")
