"""Helpers (no tests) for engine tests: run a request to completion under a deadline."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from deepseek_worker.engine import Engine
from deepseek_worker.types import GenerationChunk, SamplingParams

DEADLINE = 60.0
GREEDY = SamplingParams(max_tokens=8, temperature=0)


@dataclass
class Outcome:
    """Everything a request streamed; `started` is set on its first chunk."""

    chunks: list[GenerationChunk] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)

    @property
    def last(self) -> GenerationChunk:
        return self.chunks[-1]


async def collect(engine: Engine, ids: list[int], params: SamplingParams, rid: str,
                  outcome: Outcome | None = None) -> Outcome:
    """Consume one request fully (deadline DEADLINE s)."""
    out = outcome or Outcome()

    async def consume() -> None:
        async for chunk in engine.generate(ids, params, rid):
            out.chunks.append(chunk)
            out.started.set()

    await asyncio.wait_for(consume(), DEADLINE)
    return out


def chat_ids(engine: Engine, user: str, system: str | None = None) -> list[int]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return engine.tokenize(engine.apply_chat_template(messages))
