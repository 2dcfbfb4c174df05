"""The engine layer: continuous batching over a transformers model (see docs/worker-engine.md).

`Engine` is the only name the transport layer uses; the modules behind it are the runner (prefill and
decode steps), the batched KV cache, the prefix cache, sampling, incremental text and loading.
"""

from .core import Engine

__all__ = ["Engine"]
