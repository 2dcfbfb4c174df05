"""Constrained decoding in a shared batch: 8 plain streams alone vs the same 8 with 2 grammar-constrained
(json_schema) streams decoded in the same passes, in process, on the CPU.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/worker_constrained.py [--tokens 64] [--repeats 3] [--model bench|tiny]

Reports the plain streams' tokens/s in both cases and their ratio (how much the constrained rows
slow the others: their masks, the matcher, the extra rows in the forward pass), plus the
constrained streams' own tokens/s. The two cases are interleaved and the ratio is of medians
measured in one run. EOS is disabled so every request generates exactly `--tokens`; the schema
asks for a long array, so constrained rows stay constrained for the whole run. The grammar is
compiled before timing (compiles are cached per schema).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from worker_throughput import PROMPT, bench_model

from deepseek_worker.engine import Engine
from deepseek_worker.protocol.structured import schema_ebnf
from deepseek_worker.testing.tiny import build_tiny_model
from deepseek_worker.types import EngineConfig, GrammarSpec, SamplingParams

SCHEMA = {  # at least 200 items: never complete within --tokens, so the mask applies every step
    "type": "object",
    "properties": {"values": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 99},
                              "minItems": 200}},
    "required": ["values"],
}


async def run(engine: Engine, ids: list[int], plain: int, constrained: int, tokens: int) -> tuple[float, float]:
    """(plain tokens/s, constrained tokens/s) for one batch of concurrent streams."""
    grammar = GrammarSpec(schema_ebnf(SCHEMA))
    counts: dict[str, int] = {}

    async def stream(rid: str, params: SamplingParams) -> None:
        async for chunk in engine.generate(ids, params, rid):
            counts[rid] = chunk.completion_tokens

    jobs = [stream(f"p{i}", SamplingParams(max_tokens=tokens, temperature=0)) for i in range(plain)]
    jobs += [stream(f"c{i}", SamplingParams(max_tokens=tokens, temperature=0, grammar=grammar))
             for i in range(constrained)]
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*jobs), 600)
    elapsed = time.perf_counter() - start
    plain_tokens = sum(n for rid, n in counts.items() if rid.startswith("p"))
    constrained_tokens = sum(n for rid, n in counts.items() if rid.startswith("c"))
    return plain_tokens / elapsed, constrained_tokens / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=["bench", "tiny"], default="bench")
    args = parser.parse_args()
    model = bench_model() if args.model == "bench" else build_tiny_model()
    engine = Engine(EngineConfig(model=str(model), max_batch_size=16, prefix_cache_bytes=0))
    await engine.start()
    assert engine._runner is not None
    engine._runner.eos_ids = frozenset()  # exactly --tokens per request (grammars keep their own stop ids)
    ids = engine.tokenize(engine.apply_chat_template([{"role": "user", "content": PROMPT}]))
    await run(engine, ids, 1, 1, 4)  # warm up: token table, grammar compile, first passes
    alone, mixed, constrained = [], [], []
    for _ in range(args.repeats):
        alone.append((await run(engine, ids, 8, 0, args.tokens))[0])
        p, c = await run(engine, ids, 8, 2, args.tokens)
        mixed.append(p)
        constrained.append(c)
    await engine.stop()
    a, m, c = (statistics.median(x) for x in (alone, mixed, constrained))
    print(f"model={args.model} tokens={args.tokens} repeats={args.repeats}")
    print("| case | plain tok/s | constrained tok/s |")
    print("|---|---|---|")
    print(f"| 8 plain | {a:.1f} | - |")
    print(f"| 8 plain + 2 constrained | {m:.1f} | {c:.1f} |")
    print(f"ratio (plain tok/s with / without the constrained streams): {m / a:.2f}")
    print(f"total tok/s with: {m + c:.1f} (ratio to 8 plain alone: {(m + c) / a:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
