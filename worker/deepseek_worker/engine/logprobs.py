"""Log-probabilities of sampled tokens and their top alternatives, for the rows that asked.

What is reported: log-softmax of the model's logits at temperature 1, after a grammar mask
(a constrained request's masked tokens have probability 0), before temperature and top-p. So the
numbers describe the model, not the sampler, as OpenAI's do; a request's logprobs are the same
at any temperature. Masked (-inf) alternatives are never listed, and -inf is reported as -9999.0
(JSON has no infinity).
"""

from __future__ import annotations

import torch

from ..types import TokenLogprob, TopLogprob

FLOOR = -9999.0


def token_text(raw: bytes) -> str:
    """A token's text: its UTF-8 decoding, or `bytes:\\xNN...` for a partial character."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def row_logprobs(
    logits: torch.Tensor, rows: list[int], tokens: list[int], tops: list[int], vocab: list[bytes]
) -> list[TokenLogprob]:
    """One TokenLogprob per entry of `rows`: the chosen `tokens[i]` and its `tops[i]` best
    alternatives, from `logits` [B, V] (one device round trip for all rows)."""
    index = torch.tensor(rows, device=logits.device)
    lp = torch.log_softmax(logits.index_select(0, index).float(), dim=-1)
    chosen = lp.gather(1, torch.tensor(tokens, device=lp.device)[:, None])[:, 0].tolist()
    k = max(tops)
    top_vals: list[list[float]] = []
    top_ids: list[list[int]] = []
    if k > 0:
        values, ids = lp.topk(k, dim=-1)
        top_vals, top_ids = values.tolist(), ids.tolist()
    out = []
    for i, token in enumerate(tokens):
        alts: tuple[TopLogprob, ...] = ()
        if tops[i] > 0:
            alts = tuple(
                _top(vocab, t, v) for t, v in zip(top_ids[i][: tops[i]], top_vals[i][: tops[i]], strict=True)
                if v != float("-inf")
            )
        raw = _raw(vocab, token)
        out.append(TokenLogprob(token_text(raw), tuple(raw), _finite(chosen[i]), alts))
    return out


def _raw(vocab: list[bytes], token: int) -> bytes:
    return vocab[token] if 0 <= token < len(vocab) else b""


def _top(vocab: list[bytes], token: int, value: float) -> TopLogprob:
    raw = _raw(vocab, token)
    return TopLogprob(token_text(raw), tuple(raw), _finite(value))


def _finite(value: float) -> float:
    return value if value > FLOOR else FLOOR
