"""The default (unit) tier runs torch on one thread: its tiny models gain nothing from intra-op parallelism, and on
a shared 2-core machine (CI, a laptop running other work) OpenMP workers spinning for a busy core made the tier
~2x slower. Code under test that sets its own thread count (the server's pool, training: both default to the usable
cores, `llmforge.models.cpu.cpu_threads`) sees one usable core here, so it runs on one thread too."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    from llmforge.machine import detect
    from llmforge.models import cpu

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "detect", lambda: dataclasses.replace(detect(), cores=1))
        yield
    torch.set_num_threads(before)
