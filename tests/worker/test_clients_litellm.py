"""litellm against a running worker serving the tiny model: its `deepseek/` provider with api_base
set to the worker's root URL (as DeepSeek's https://api.deepseek.com, no /v1) and its `openai/`
provider with the /v1 URL; JSON and streamed, reasoning, usage, and a typed error.

litellm cannot share .venv: it requires boto3, whose botocore pins python-dateutil<3, while the
project's kubernetes==37.0.2 requires python-dateutil>=3 (pip: ResolutionImpossible). It lives in
.tools/litellm-venv (pinned, installed by tools/install-litellm.sh, which `make test` runs), and
the client code below runs there as a subprocess, against the worker this test serves.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import serve_tiny

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".tools" / "litellm-venv" / "bin" / "python"
KEY = "sk-litellm"
MODEL = "deepseek-chat"

CLIENT = r'''
import json, sys
import litellm

base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]
common = {"messages": messages, "api_key": key, "temperature": 0, "max_tokens": 8, "timeout": 60, "num_retries": 0}
out = {"version": litellm.__version__ if hasattr(litellm, "__version__") else None}

r = litellm.completion(model="deepseek/" + model, api_base=base, **common)
out["deepseek"] = {"content": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
                   "usage": r.usage.model_dump()}
stream = litellm.completion(model="deepseek/" + model, api_base=base, stream=True,
                            stream_options={"include_usage": True}, **common)
parts, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if getattr(chunk, "usage", None):
        usage = chunk.usage.model_dump()
out["deepseek_stream"] = {"content": "".join(parts), "usage": usage}

t = litellm.completion(model="deepseek/" + model, api_base=base, thinking={"type": "enabled"}, **common)
out["thinking"] = {"reasoning_content": t.choices[0].message.reasoning_content,
                   "reasoning_tokens": t.usage.completion_tokens_details.reasoning_tokens}

o = litellm.completion(model="openai/" + model, api_base=base + "/v1", **common)
out["openai"] = {"content": o.choices[0].message.content}

try:
    litellm.completion(model="deepseek/" + model, api_base=base, **{**common, "top_p": 7})
    out["bad"] = None
except litellm.BadRequestError as exc:
    out["bad"] = {"type": type(exc).__name__, "status": exc.status_code, "message": str(exc)}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def base_url(tiny_model_dir: Path) -> Iterator[str]:
    with serve_tiny(tiny_model_dir, MODEL, KEY, max_new_tokens=32) as url:
        yield url


def run_litellm(base_url: str) -> dict[str, Any]:
    assert PYTHON.exists(), f"{PYTHON} is missing: run tools/install-litellm.sh (make test does)"
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list from GitHub
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "127.0.0.1",
    }
    done = subprocess.run(
        [str(PYTHON), "-c", CLIENT, base_url, KEY, MODEL], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_litellm_deepseek_and_openai_providers(base_url: str) -> None:
    out = run_litellm(base_url)
    direct = httpx.post(
        base_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": MODEL, "temperature": 0, "max_tokens": 8,
              "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]},
        timeout=60,
    ).json()
    expected = direct["choices"][0]["message"]["content"]
    assert out["deepseek"]["content"] == expected  # greedy: what the worker says, through litellm
    assert out["deepseek"]["finish"] in {"stop", "length"}
    assert out["deepseek"]["usage"]["completion_tokens"] == direct["usage"]["completion_tokens"]
    assert out["deepseek"]["usage"]["prompt_cache_hit_tokens"] >= 0  # DeepSeek's usage fields survive
    assert out["deepseek_stream"]["content"] == expected
    assert out["deepseek_stream"]["usage"]["completion_tokens"] == direct["usage"]["completion_tokens"]
    assert out["thinking"]["reasoning_content"]
    assert out["thinking"]["reasoning_tokens"] >= 1
    assert out["openai"]["content"] == expected
    assert out["bad"] is not None and out["bad"]["status"] == 400 and "top_p" in out["bad"]["message"]
