"""Real tier: structured output on SmolLM2-135M-Instruct served by the real CLI, through the official openai client:
`parse(response_format=PydanticModel)` returns the object, a regex and a choice hold, greedy and sampled."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.real
NAME = "smollm2-135m-instruct"


class Country(BaseModel):
    country: str = Field(max_length=40)
    capital: str = Field(max_length=40)
    continent: Literal["Africa", "Americas", "Asia", "Europe", "Oceania"]


@pytest.fixture(scope="module")
def client(pulled: Path, serve: Callable[..., str]) -> object:
    import openai

    return openai.OpenAI(base_url=serve(NAME) + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_parse_returns_the_object(client: object, temperature: float) -> None:
    reply = client.chat.completions.parse(  # type: ignore[attr-defined]
        model=NAME, messages=[{"role": "user", "content": "Describe France as JSON: country, capital, continent."}],
        response_format=Country, temperature=temperature, max_tokens=120, seed=1)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, Country)
    if temperature == 0.0:
        assert choice.message.parsed.continent == "Europe"


def test_regex_and_choice(client: object) -> None:
    date = client.chat.completions.create(  # type: ignore[attr-defined]
        model=NAME, messages=[{"role": "user", "content": "When did the Second World War end? Give a date."}],
        max_tokens=20, temperature=0, extra_body={"guided_regex": r"[0-9]{4}-[0-9]{2}-[0-9]{2}"})
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", date.choices[0].message.content)
    pick = client.chat.completions.create(  # type: ignore[attr-defined]
        model=NAME, messages=[{"role": "user", "content": "Is Paris the capital of France? Answer yes or no."}],
        max_tokens=5, temperature=0, extra_body={"guided_choice": ["yes", "no"]})
    assert pick.choices[0].message.content == "yes"
