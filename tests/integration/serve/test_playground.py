"""The playground (/ui) in headless Chromium against a real server: streaming, stop, compare, runs, registry, keys.

Debian's chromium driven by Playwright (its own browser download cannot work offline). The server serves three
tiny models: `base`, `tuned` (a LoRA run of base, trained here by the real CLI, which also gives the Runs page
a run with a loss curve) and `other` (another random init, so greedy replies diverge), plus an A/B split, with a
decode delay so a reply takes long enough to watch it stream and to stop it. Every test fails on any console
error or uncaught exception in the page. Screenshots of each screen go to $LLMFORGE_TEST_ARTIFACTS (default:
build/test-artifacts/playground).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import Page, chromium_browser  # noqa: F401 - the `browser` fixture
from tests.integration.serve.conftest import API_KEY, slow_loader
from tests.integration.test_cli import cli, prepared_workdir

pytestmark = pytest.mark.integration
DECODE_DELAY_S = 0.04


@pytest.fixture(scope="module")
def workdir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared dataset, a LoRA run of the tiny model (merged, so it serves as a plain model), and the tiny model
    with its MLP weights disturbed (as a badly quantized variant would be), whose greedy replies diverge."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = prepared_workdir(tmp_path_factory.mktemp("playground"), tiny_model_dir, 60)
    cli("train", "--model", str(tiny_model_dir), "--data", "prep", "--method", "lora", "--output", "runs/tuned",
        "--max-steps", "4", "--set", "train.merge=true", cwd=root)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".mlp." in name:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * 2)
    model.save_pretrained(root / "other")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(root / "other")
    return root


@pytest.fixture(scope="module")
def ui(make_server: Any, tiny_model_dir: Path, workdir: Path) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMFORGE_REGISTRY_URI", f"sqlite:///{workdir / 'registry.db'}")
        from llmforge import registry

        version = registry.register(workdir / "runs" / "tuned", name="chat")
        registry.promote("chat", version.version, to="production")
        ab = {"split": {"variants": {"v1": {"model": str(tiny_model_dir), "weight": 3},
                                     "v2": {"model": str(workdir / "other"), "weight": 1}}}}
        yield make_server(slow_loader(DECODE_DELAY_S), ui=True, ui_runs=[workdir / "runs"], ab=ab,
                          event_log=workdir / "events",
                          models={"base": str(tiny_model_dir), "tuned": str(workdir / "runs" / "tuned"),
                                  "other": str(workdir / "other")})


@pytest.fixture()
def page(browser: Any, ui: Any) -> Iterator[Page]:
    p = Page(browser, ui.url)
    yield p
    p.tab.close()
    assert not p.errors, p.errors  # zero console errors on every screen


def open_chat(page: Page) -> None:
    page.use_key(API_KEY)
    page.wait_until("() => [...document.querySelectorAll('#chat-model option')].some(o => o.value === 'base')")


def test_page_asks_for_the_key_and_loads_offline(page: Page) -> None:
    """Before a key is typed, nothing is asked of the API; every asset comes from this server."""
    requests: list[str] = []
    page.tab.on("request", lambda r: requests.append(r.url))
    page.tab.reload()
    page.tab.wait_for_selector("text=This server needs its API key")
    assert requests and all(u.startswith(page.tab.url.split("/ui/")[0]) or u.startswith("data:") for u in requests)
    assert not [u for u in requests if "/v1/" in u or "/ui/api/" in u]
    page.shot("0-key")


def test_chat_streams_incrementally_with_its_numbers(page: Page, ui: Any) -> None:
    open_chat(page)
    tab = page.tab
    # Record every text the reply shows while it streams (a MutationObserver, so no render is missed).
    tab.evaluate("""() => { window.seen = [];
        new MutationObserver(() => { const t = document.querySelector('.turn.assistant .text');
          if (t && t.dataset.streaming === 'true' && t.textContent) window.seen.push(t.textContent); })
        .observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true}); }""")
    tab.fill("#chat-system", "You are terse.")
    tab.fill("#chat-max_tokens", "24")
    tab.fill("#chat-seed", "7")
    tab.fill("#chat-input", "What is a tensor?")
    tab.click("button:has-text('Send')")
    tab.wait_for_selector(".turn.assistant .stats")
    final = tab.inner_text(".turn.assistant .text")
    seen = tab.evaluate("window.seen")
    partial = sorted({len(s) for s in seen if len(s) < len(final)})
    assert len(partial) >= 3, f"the reply did not arrive incrementally: lengths seen {partial}, final {len(final)}"
    assert all(final.startswith(s) for s in seen)
    completion = int(tab.inner_text("[data-stat=completion]").split()[0])
    assert 1 <= completion <= 24 and float(tab.inner_text("[data-stat=ttft]").split()[0]) > 0
    # The same request (seeded) through the OpenAI client gives the same text: the page shows the server's reply.
    direct = ui.client().chat.completions.create(
        model="base", messages=[{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "What is a tensor?"}],
        max_tokens=24, seed=7, temperature=0.7)
    assert direct.choices[0].message.content == final
    assert int(tab.inner_text("[data-stat=prompt]").split()[0]) == direct.usage.prompt_tokens
    tab.click("button:has-text('Show rendered prompt')")
    rendered = tab.inner_text(".rendered pre")
    assert "You are terse." in rendered and "What is a tensor?" in rendered and final in rendered
    page.shot("1-chat")


def test_stop_ends_the_reply_mid_stream(page: Page, ui: Any) -> None:
    open_chat(page)
    tab = page.tab
    tab.fill("#chat-max_tokens", "100")
    tab.fill("#chat-input", "Tell me a long story.")
    tab.click("button:has-text('Send')")
    page.wait_until("() => document.querySelector('.turn.assistant .text')?.textContent.length > 5")
    tab.click("button:has-text('Stop')")
    tab.wait_for_selector("[data-stat=finish]:has-text('stopped')")
    stopped = tab.inner_text(".turn.assistant .text")
    tab.wait_for_timeout(500)
    assert tab.inner_text(".turn.assistant .text") == stopped  # nothing more arrives
    # The server let the sequence go: nothing left decoding (100 tokens at the decode delay take 4 s).
    deadline = time.monotonic() + 5
    while ui.metric("vllm:num_requests_running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ui.metric("vllm:num_requests_running") == 0
    page.shot("2-chat-stopped")


def _greedy(ui: Any, model: str, prompt: str, max_tokens: int) -> str:
    reply = ui.client().chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=max_tokens, temperature=0)
    return reply.choices[0].message.content


def test_compare_streams_each_model_and_diffs_greedy_replies(page: Page, ui: Any) -> None:
    open_chat(page)
    tab = page.tab
    tab.click("nav >> text=Compare")
    tab.check("label.check:has-text('other') input")  # base and tuned are picked by default
    tab.click("summary:has-text('sampling')")
    tab.fill("#compare-max_tokens", "16")
    tab.fill("#compare-prompt", "Name three colours.")
    tab.click("button:has-text('Compare')")
    page.wait_until("() => document.querySelectorAll('.column .stats').length === 3")
    texts = {m: tab.inner_text(f"article[aria-label='reply of {m}'] .text") for m in ("base", "tuned", "other")}
    for model, text in texts.items():
        assert text == _greedy(ui, model, "Name three colours.", 16), model
        assert float(tab.inner_text(f"article[aria-label='reply of {model}'] [data-stat=ttft]").split()[0]) > 0
    other = tab.locator("article[aria-label='reply of other']")
    assert texts["other"] != texts["base"]
    common = len(os.path.commonprefix([texts["base"], texts["other"]]))
    assert other.locator(".diff ins, .diff del").count() > 0
    # jsdiff works on words: the divergence it names is the start of the first word that differs
    at = int(other.locator(".diff p").first.inner_text().rsplit(" ", 1)[1].rstrip(":"))
    assert at <= common and texts["base"][:at] == texts["other"][:at]
    tuned = tab.locator("article[aria-label='reply of tuned']")
    if texts["tuned"] == texts["base"]:
        assert tuned.locator("text=Identical to base").count() == 1
    else:
        assert tuned.locator(".diff").count() == 1
    page.shot("3-compare")


def test_run_page_shows_metrics_and_the_loss_curve(page: Page, workdir: Path) -> None:
    open_chat(page)
    tab = page.tab
    tab.click("nav >> text=Runs")
    tab.click("a:has-text('tuned')")
    img = tab.wait_for_selector("img[alt='loss_curve.png of the run']")
    page.wait_until("img => img.complete && img.naturalWidth > 100", img)
    metrics = json.loads((workdir / "runs" / "tuned" / "metrics.json").read_text())
    row = tab.locator("table.kv tr:has(th:text-is('train_steps')) td")
    assert row.inner_text() == str(metrics["train_steps"])  # read from the run directory, not copied
    page.shot("4-run")
    tab.click("text=← all runs")
    tab.wait_for_selector("#runs-title")
    page.shot("5-runs")


def test_registry_and_ab_split(page: Page, ui: Any) -> None:
    client = ui.client()
    for user in ("ann", "bob", "cy", "di"):
        client.chat.completions.create(model="split", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                                       user=user)
    open_chat(page)
    tab = page.tab
    tab.click("nav >> text=Registry")
    tab.wait_for_selector("tr.production")
    assert "production" in tab.inner_text("tr.production")
    split = tab.locator("section[aria-label='A/B split of split']")
    assert "75.0%" in split.inner_text() and "25.0%" in split.inner_text()
    requests = [int(c) for c in split.locator("tbody tr td:nth-child(4)").all_inner_texts()]
    assert sum(requests) >= 4  # the server's own /metrics, per variant
    logged = split.locator("tbody tr td:nth-child(8)").all_inner_texts()  # errors, from the event log
    assert sum(int(x.split(" of ")[1]) for x in logged if x != "—") >= 4
    page.shot("6-registry")


# Every control named for a screen reader, and WCAG AA contrast (4.5:1) for the page's text, computed from the
# colours the browser actually used (walking up to the first opaque background).
A11Y = r"""() => {
  const unlabelled = [...document.querySelectorAll('input, select, textarea, button')].filter((el) =>
    !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !(el.textContent || '').trim())
    .map((el) => el.outerHTML.slice(0, 80));
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (el) => { for (; el; el = el.parentElement) { const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3); } return [255, 255, 255]; };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.offsetParent || el.closest('button:disabled')) continue;
    const a = lum(rgb(getComputedStyle(el).color).slice(0, 3)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)} '${el.textContent.trim().slice(0, 30)}'`);
  }
  return {unlabelled, low};
}"""


def test_keyboard_only_with_labels_and_contrast(page: Page) -> None:
    """A reply sent without the mouse: Tab to the key field, Enter, Tab to the message, Ctrl+Enter."""
    tab = page.tab
    for _ in range(12):  # the pages' links come first, then the key field
        tab.keyboard.press("Tab")
        if tab.evaluate("() => document.activeElement.id") == "api-key":
            break
    tab.keyboard.type(API_KEY)
    tab.keyboard.press("Enter")
    page.wait_until("() => [...document.querySelectorAll('#chat-model option')].some(o => o.value === 'base')")
    for _ in range(40):
        tab.keyboard.press("Tab")
        if tab.evaluate("() => document.activeElement.id") == "chat-input":
            break
    tab.keyboard.type("hello")
    tab.keyboard.press("Control+Enter")
    tab.wait_for_selector(".turn.assistant .stats")
    for screen in ("#chat", "#compare", "#runs", "#registry"):
        tab.evaluate(f"() => {{ location.hash = '{screen}'; }}")
        tab.wait_for_timeout(300)
        found = tab.evaluate(A11Y)
        assert not found["unlabelled"], (screen, found["unlabelled"])
        assert not found["low"], (screen, found["low"])


def test_wrong_key_is_shown_as_an_error(browser: Any, ui: Any) -> None:
    p = Page(browser, ui.url)
    p.use_key("not-the-key")
    alert = p.tab.wait_for_selector("[role=alert]")
    assert "The API key was refused" in alert.inner_text() and "401" in alert.inner_text()
    p.shot("7-wrong-key")
    # The browser logs the refused request itself; nothing else may go wrong.
    unexpected = [e for e in p.errors if "status of 401" not in e and not e.startswith("HTTP 401")]
    p.tab.close()
    assert not unexpected, unexpected
