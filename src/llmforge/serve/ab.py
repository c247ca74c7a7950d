"""A/B rollout: one served name, two or more variants (models or versions) splitting its traffic by weight.

Pure: the typed settings of a rollout, the split (which variant serves a request) and the `--ab` flag's parser.
No HTTP, no models. The split is sticky: a request that carries a key (a session header or the OpenAI `user`
field) is placed by a hash of (served name, key), so the same key always lands on the same variant, and
different rollouts place the same key independently. Keyless requests are placed at random by weight.

Variants sit on [0, 1) in the order they are configured, each taking its share of the weight. Raising the
last variant's weight (a ramp: 0.8/0.2 -> 0.5/0.5) moves only the keys in the share it gains; every key
already on it stays.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmforge.errors import ConfigError

SHADOW = "shadow"  # the variant label of a shadow model (never a variant name: it is not served)
NAME_CHARS = "A-Za-z0-9._-"


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Model reference, as in `models` (re-resolved at every reload).")
    weight: float = Field(gt=0, le=1e6, description="Share of the traffic, relative to the other variants' weights.")


class Rollout(BaseModel):
    """One A/B-served name: its variants by weight, and optionally a shadow candidate."""

    model_config = ConfigDict(extra="forbid")

    variants: dict[str, Variant] = Field(description="Variant name -> model and weight; at least two.")
    shadow: str | None = Field(
        None, description="Model reference that gets a copy of every request; its answers are logged, never returned."
    )

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: dict[str, Variant]) -> dict[str, Variant]:
        if len(v) < 2:
            raise ValueError(f"an A/B rollout needs at least two variants; got {len(v)}")
        for name in v:
            if not name or not all(c.isalnum() or c in "._-" for c in name):
                raise ValueError(f"variant name '{name}' may only hold letters, digits and {NAME_CHARS[-3:]}")
            if name == SHADOW:
                raise ValueError(f"'{SHADOW}' is the shadow's label; name the variant otherwise")
        return v

    def refs(self) -> dict[str, str]:
        """Variant (and 'shadow') -> model reference: every model this rollout loads."""
        refs = {name: v.model for name, v in self.variants.items()}
        return refs | ({SHADOW: self.shadow} if self.shadow else {})


@dataclass(frozen=True)
class Split:
    """Which variant serves a request for `name`."""

    name: str
    variants: tuple[str, ...]
    bounds: tuple[float, ...]  # cumulative shares in [0, 1]; the last is 1.0

    @classmethod
    def of(cls, name: str, rollout: Rollout) -> Split:
        total = sum(v.weight for v in rollout.variants.values())
        acc, bounds = 0.0, []
        for v in rollout.variants.values():
            acc += v.weight
            bounds.append(acc / total)
        bounds[-1] = 1.0  # no float gap at the top
        return cls(name, tuple(rollout.variants), tuple(bounds))

    def pick(self, key: str | None, rng: random.Random) -> str:
        point = hash_unit(self.name, key) if key else rng.random()
        return self.variants[min(bisect.bisect_right(self.bounds, point), len(self.variants) - 1)]


def hash_unit(name: str, key: str) -> float:
    """A point in [0, 1) fixed by (name, key), the same in every process and on every machine."""
    digest = hashlib.sha256(f"{name}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sticky_key(header_value: str | None, user: str | None) -> str | None:
    """The session header first, then the OpenAI `user` field; None (random placement) when neither is given."""
    return header_value or user or None


def parse_ab(flags: list[str]) -> dict[str, dict[str, object]]:
    """`--ab NAME=VARIANT:WEIGHT:REF,VARIANT:WEIGHT:REF` (repeatable) as `ab` settings data.

    The reference comes last, so it may hold ':' and '@' (`registry:demo@production`)."""
    out: dict[str, dict[str, object]] = {}
    for flag in flags:
        name, eq, spec = flag.partition("=")
        if not eq or not name or not spec:
            raise ConfigError(f"--ab '{flag}': expected NAME=VARIANT:WEIGHT:REF,VARIANT:WEIGHT:REF")
        variants: dict[str, dict[str, object]] = {}
        for part in spec.split(","):
            fields = part.split(":", 2)
            if len(fields) != 3 or not all(fields):
                raise ConfigError(f"--ab '{flag}': '{part}' is not VARIANT:WEIGHT:REF (e.g. v1:0.8:runs/train)")
            try:
                weight = float(fields[1])
            except ValueError:
                raise ConfigError(f"--ab '{flag}': the weight of '{fields[0]}' is '{fields[1]}', not a number") from None
            variants[fields[0]] = {"model": fields[2], "weight": weight}
        out.setdefault(name, {})["variants"] = variants
    return out


def parse_shadow(flags: list[str]) -> dict[str, str]:
    """`--shadow NAME=REF` (repeatable): the shadow candidate of an A/B-served name."""
    out = {}
    for flag in flags:
        name, eq, ref = flag.partition("=")
        if not eq or not name or not ref:
            raise ConfigError(f"--shadow '{flag}': expected NAME=REF, NAME one of the --ab names")
        out[name] = ref
    return out


def ab_flags(ab: list[str], shadow: list[str]) -> dict[str, dict[str, object]]:
    """`ab` settings data from `--ab` and `--shadow` flags."""
    out = parse_ab(ab)
    for name, ref in parse_shadow(shadow).items():
        if name not in out:
            raise ConfigError(f"--shadow {name}=...: '{name}' is not A/B-served; give --ab {name}=... too "
                              f"(A/B-served: {', '.join(out) or 'none'})")
        out[name]["shadow"] = ref
    for name, data in out.items():
        try:
            Rollout.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise ConfigError(f"--ab {name}: {where + ': ' if where else ''}{msg}") from None
    return out
