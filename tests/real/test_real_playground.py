"""Real tier: the playground on SmolLM2-135M-Instruct, served by the real CLI (`llmforge serve --ui`), in headless
Chromium. Its chat template (ChatML with a default system prompt) is what the rendered prompt must show, and a
greedy reply in the page must be the one the OpenAI client gets. The screenshot is the README's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser import Page, chromium_browser  # noqa: F401 - the `browser` fixture

pytestmark = pytest.mark.real
NAME = "smollm2-135m-instruct"
KEY = "real-key"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(pulled: Path, serve: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> str:
    return serve(NAME, "--ui", "--api-key", KEY, "--ui-runs", str(tmp_path_factory.mktemp("runs")),
                 "--set", 'public_paths=["/", "/health", "/ready"]')  # the fixture's readiness probe has no key


def test_chat_with_a_real_instruct_model(browser: Any, server: str) -> None:
    import openai

    page = Page(browser, server)
    page.use_key(KEY)
    tab = page.tab
    page.wait_until(f"() => [...document.querySelectorAll('#chat-model option')].some(o => o.value === '{NAME}')")
    tab.fill("#chat-system", "You are a concise geography tutor.")
    tab.eval_on_selector("#chat-temperature",  # a range input: set it as a user's drag would
                         "el => { el.value = '0'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    tab.fill("#chat-max_tokens", "40")
    tab.fill("#chat-input", QUESTION)
    tab.click("button:has-text('Send')")
    tab.wait_for_selector(".turn.assistant .stats", timeout=300_000)
    reply = tab.inner_text(".turn.assistant .text")
    direct = openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=300).chat.completions.create(
        model=NAME, messages=[{"role": "system", "content": "You are a concise geography tutor."},
                              {"role": "user", "content": QUESTION}], max_tokens=40, temperature=0)
    assert reply == direct.choices[0].message.content and "Paris" in reply
    tab.click("button:has-text('Show rendered prompt')")
    rendered = tab.inner_text(".rendered pre")
    assert rendered.startswith("<|im_start|>system\nYou are a concise geography tutor.<|im_end|>")
    assert f"<|im_start|>user\n{QUESTION}<|im_end|>" in rendered and reply in rendered
    page.shot("real-chat")
    tab.close()
    assert not page.errors, page.errors
