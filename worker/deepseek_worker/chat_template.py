"""DeepSeek-V3/R1's chat template, shipped with the package (templates/deepseek_chat.jinja).

Production code: the engine falls back to it for a tokenizer without a chat template, and the tiny
test model (testing/tiny.py) is saved with it.
"""

from __future__ import annotations

from importlib import resources


def chat_template() -> str:
    """The template's Jinja source."""
    return (resources.files("deepseek_worker") / "templates" / "deepseek_chat.jinja").read_text("utf-8")
