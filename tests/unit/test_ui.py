"""Console output (issue #13.15, #12): data printed as given, full-width tables and plain progress in logs."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from llmforge import ui
from llmforge.progress import begin


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_line_has_count_total_rate_and_eta() -> None:
    line = ui.progress_line("perplexity", 84, 200, elapsed=42.0, info="loss 2.310")
    assert line == "perplexity: 84/200 (42%) | 2/s | elapsed 42s | ETA 58s | loss 2.310"
    assert ui.progress_line("preparing", 1500, None, elapsed=3.0) == "preparing: 1,500 | 500/s | elapsed 3s"
    assert ui.progress_line("training", 10, 10, elapsed=125.0, finished=True) == \
        "training: 10/10 (100%) | 0.08/s | done in 2m05s"


def test_log_progress_writes_a_line_every_n_seconds_and_at_the_end() -> None:
    lines: list[str] = []
    clock = Clock()
    log = ui.LogProgress("scoring", every=10.0, write=lines.append, clock=clock)
    begin(log, "perplexity", 40)
    for _ in range(40):
        clock.now += 1.0  # 1 s per sample: a line at 10, 20, 30 and 40 s
        log(1)
    log.finish()
    assert lines[0] == "perplexity: started, 40 to do"
    assert lines[1] == "perplexity: 10/40 (25%) | 1/s | elapsed 10s | ETA 30s"
    assert [line.split(" | ")[0] for line in lines[1:5]] == [f"perplexity: {n}/40 ({n * 100 // 40}%)"
                                                             for n in (10, 20, 30, 40)]
    assert lines[-1] == "perplexity: 40/40 (100%) | 1/s | done in 40s"


def test_a_new_phase_closes_the_previous_one() -> None:
    lines: list[str] = []
    log = ui.LogProgress("scoring", every=1e9, write=lines.append, clock=Clock())
    begin(log, "perplexity", 2)
    log(2)
    begin(log, "generation", 3)
    log(3)
    log.finish()
    assert [line.split(" | ")[0] for line in lines] == [
        "perplexity: started, 2 to do", "perplexity: 2/2 (100%)", "generation: started, 3 to do", "generation: 3/3 (100%)"]


def test_plain_callables_ignore_phases() -> None:
    seen: list[int] = []
    begin(seen.append, "perplexity", 10)  # a test's lambda or list.append: no begin, no error
    begin(None, "perplexity", 10)
    assert seen == []


def _capture(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stdout as a redirected log (not a terminal)."""
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stdout", buffer)
    return buffer


def test_bracketed_text_is_printed_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _capture(monkeypatch)
    metrics: dict[str, Any] = {"parity_prompts": 2, "parity_tokens": 8, "formats": {"gguf-q8_0": {
        "bytes": 10, "passed": None, "llama_cpp": "not installed: pip install 'llmforge[llamacpp]'"}}}
    ui.show_export(metrics, "runs/[exp]/export")
    ui.say("[bold]not markup[/]")
    text = out.getvalue()
    assert "pip install 'llmforge[llamacpp]'" in text
    assert "runs/[exp]/export" in text and "[bold]not markup[/]" in text


def test_tables_in_a_log_are_not_cut_to_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _capture(monkeypatch)
    row = {"format": "onnx-int8-static", "decode tok/s": 538.123, "x PyTorch": 1.5,
           "a long column header that needs room": "a value that is long enough to need many columns " * 3}
    ui.show(ui.table("export: /a/rather/long/path/to/the/run/[dir]/that/goes/on", [row]))
    text = out.getvalue()
    assert "…" not in text
    assert "decode tok/s" in text and "538.1" in text and "a long column header that needs room" in text
    assert "/a/rather/long/path/to/the/run/[dir]/that/goes/on" in text
    assert max(len(line) for line in text.splitlines()) > 80


def test_stage_heading_in_a_log_is_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=stderr))
    ui.stage("compress [int8]")
    assert stderr.getvalue() == "== compress [int8] ==\n"


def test_progress_bar_in_a_log_reports_in_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=stderr))
    monkeypatch.setenv(ui.PROGRESS_SECONDS_ENV, "0")
    with ui.progress_bar("scoring") as progress:
        begin(progress, "perplexity [val]", 3)
        for _ in range(3):
            progress(1)
    lines = stderr.getvalue().splitlines()
    assert lines[0] == "perplexity [val]: started, 3 to do"
    assert lines[-1].startswith("perplexity [val]: 3/3 (100%)") and "done in" in lines[-1]
    assert len(lines) == 5  # started, 1/3, 2/3, 3/3, done


def test_preview_in_a_log_marks_trained_text_without_colour(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _capture(monkeypatch)
    monkeypatch.setattr("llmforge.data.preview.preview", lambda prepared, tok, n: [[("Q: [x]? ", False), ("A", True)]])
    monkeypatch.setattr("llmforge.models.loader.load_tokenizer", lambda cfg: None)
    ui.show_preview("prep", None, 1)
    assert out.getvalue().splitlines() == ["== sample 0 (trained tokens between ⟦ and ⟧) ==", "Q: [x]? ⟦A⟧"]


def test_counted_reports_each_item_consumed_on_every_pass() -> None:
    from llmforge.progress import Counted

    done: list[int] = []
    batches = Counted(["b0", "b1", "b2"], done.append)
    assert list(batches) == ["b0", "b1", "b2"] and len(done) == 3
    for _ in batches:  # a second pass (SmoothQuant, then sensitivity) counts again
        pass
    assert len(done) == 6 and batches[:2] == ["b0", "b1"]


def test_bars_on_a_terminal_show_bracketed_names_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=terminal, force_terminal=True, width=120))
    with ui.progress_bar("scoring") as progress:
        begin(progress, "perplexity [bold]split[/bold]", 2)
        progress(2)
    callback = ui.train_progress()

    class State:
        max_steps, global_step = 2, 0

    callback.on_train_begin(None, State, None)
    State.global_step = 2
    callback.on_step_end(None, State, None)
    callback.on_log(None, State, None, logs={"loss": 1.25})
    callback.on_train_end(None, State, None)
    text = terminal.getvalue()
    assert "perplexity [bold]split[/bold]" in text and "2/2" in text and "loss 1.250" in text


def test_only_stdout_redirected_gets_lines_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # `llmforge train > train.log` with stderr still on the terminal: bars there, progress lines in the log.
    terminal = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=terminal, force_terminal=True, width=120))
    log = _capture(monkeypatch)
    monkeypatch.setenv(ui.PROGRESS_SECONDS_ENV, "0")
    with ui.progress_bar("scoring") as progress:
        begin(progress, "perplexity", 2)
        progress(2)
    assert log.getvalue().splitlines()[0] == "perplexity: started, 2 to do"
    assert log.getvalue().splitlines()[-1].startswith("perplexity: 2/2 (100%)")
    assert "━" in terminal.getvalue() and "━" not in log.getvalue()
