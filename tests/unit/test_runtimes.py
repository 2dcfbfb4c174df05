"""spec.runtime (issue 20 item 1): the engines' command lines (runtimes.py), the flags users may not pass
(one list, read by the CEL rule too), and the two-container pod (render/engine.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepseek_operator import runtimes
from deepseek_operator.api import InvalidSpec, parse_spec, resolve_variants
from deepseek_operator.render.common import Owner
from deepseek_operator.render.workload import render_workload, startup_failure_threshold

OWNER = Owner("chat", "team-a", "uid-1", 3)
CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "deepseek.ai_deepseekdeployments.yaml"
R1 = {"id": "deepseek-ai/DeepSeek-R1"}
DISTILL = {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}  # bf16: bitsandbytes applies (R1 is FP8)
# Flags the builders render that a user may repeat in runtime.args to change (argparse keeps the last).
USER_OVERRIDABLE = {"--enable-prefix-caching", "--reasoning-parser", "--tool-call-parser", "--enable-auto-tool-choice"}


def _spec(**extra: Any) -> Any:
    return parse_spec({"image": "reg/worker:1", "model": R1, **extra})


def _args(name: str, *, gpus: int = 8, multinode: runtimes.MultiNode | None = None,
          runtime: dict[str, Any] | None = None, **extra: Any) -> list[str]:
    spec = _spec(resources={"gpus": gpus}, runtime={"name": name, **(runtime or {})}, **extra)
    variant = resolve_variants(spec)[0]
    build = runtimes.vllm_args if name == "vllm" else runtimes.sglang_args
    return build(variant, spec.serving, gpus, "/models", hub=False, multinode=multinode)


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _pods(spec: Any) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c["spec"]["template"]["spec"] for c in render_workload(OWNER, spec)
            if c["kind"] == "Deployment"}


# -- the command lines --------------------------------------------------------------------------------------
def test_vllm_serves_a_deepseek_r1_with_the_operators_settings() -> None:
    spec = _spec(resources={"gpus": 8}, runtime={"name": "vllm"},
                 serving={"gpuMemoryUtilization": 0.92, "maxNumBatchedTokens": 8192, "maxBatchSize": 64})
    variant = resolve_variants(spec)[0]
    assert runtimes.vllm_command(variant, spec.serving, 8, "deepseek-ai/DeepSeek-R1", hub=True) == [
        "vllm", "serve", "deepseek-ai/DeepSeek-R1", "--host", "127.0.0.1", "--port", "8001",
        "--served-model-name", "deepseek-ai/DeepSeek-R1", "--dtype", "auto", "--max-model-len", "32768",
        "--max-num-seqs", "64", "--tensor-parallel-size", "8", "--revision", "main",
        "--gpu-memory-utilization", "0.92", "--max-num-batched-tokens", "8192", "--enable-prefix-caching",
        "--reasoning-parser", "deepseek_r1", "--enable-auto-tool-choice", "--tool-call-parser", "deepseek_v3"]


def test_sglang_serves_a_deepseek_r1_with_the_operators_settings() -> None:
    spec = _spec(resources={"gpus": 8}, runtime={"name": "sglang"}, serving={"gpuMemoryUtilization": 0.85})
    variant = resolve_variants(spec)[0]
    assert runtimes.sglang_command(variant, spec.serving, 8, "deepseek-ai/DeepSeek-R1", hub=True) == [
        "python3", "-m", "sglang.launch_server", "--model-path", "deepseek-ai/DeepSeek-R1", "--host", "127.0.0.1",
        "--port", "8001", "--served-model-name", "deepseek-ai/DeepSeek-R1", "--dtype", "auto",
        "--context-length", "32768", "--max-running-requests", "16", "--tp-size", "8", "--revision", "main",
        "--mem-fraction-static", "0.85", "--enable-metrics", "--reasoning-parser", "deepseek-r1",
        "--tool-call-parser", "deepseekv3"]


def test_a_chat_model_gets_no_reasoning_parser_and_a_distill_no_tool_parser() -> None:
    v2 = _args("vllm", model={"id": "deepseek-ai/DeepSeek-V2-Lite-Chat"})
    assert "--reasoning-parser" not in v2 and "--tool-call-parser" not in v2
    assert _flag(v2, "--max-model-len") == "8192"  # family.lengths: a chat model's default
    distill = _args("sglang", model={"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"})
    assert _flag(distill, "--reasoning-parser") == "deepseek-r1" and "--tool-call-parser" not in distill


def test_nf4_is_bitsandbytes_and_a_volume_has_no_revision() -> None:
    for runtime in ("vllm", "sglang"):
        args = _args(runtime, model={**DISTILL, "quantization": "nf4", "revision": "abc123"})
        assert _flag(args, "--quantization") == "bitsandbytes"
        assert "--revision" not in args  # hub=False: the files are on a volume
    assert "--quantization" not in _args("vllm")  # FP8 checkpoints: the engine reads config.json's quantization


@pytest.mark.parametrize(("parallelism", "gpus", "vllm", "sglang"), [
    (None, 8, ["--tensor-parallel-size", "8"], ["--tp-size", "8"]),
    (None, 0, ["--tensor-parallel-size", "1"], ["--tp-size", "1"]),
    ({"pipeline": 2}, 8, ["--tensor-parallel-size", "4", "--pipeline-parallel-size", "2"],
     ["--tp-size", "4", "--pp-size", "2"]),
    ({"tensor": 4, "data": 2, "expert": True}, 8,
     ["--tensor-parallel-size", "4", "--data-parallel-size", "2", "--enable-expert-parallel"],
     ["--tp-size", "4", "--dp-size", "2", "--ep-size", "8"]),
])
def test_parallelism(parallelism: dict[str, Any] | None, gpus: int, vllm: list[str], sglang: list[str]) -> None:
    runtime = {"parallelism": parallelism} if parallelism else {}
    for name, expected in (("vllm", vllm), ("sglang", sglang)):
        args = _args(name, gpus=gpus, runtime=runtime)
        at = args.index(expected[0])
        assert args[at:at + len(expected)] == expected, (name, args)


def test_multinode_flags_for_the_leader_worker_set() -> None:
    leader = runtimes.MultiNode(nnodes=2, node_rank=0, leader="chat-primary-0.chat", port=29501)
    worker = runtimes.MultiNode(nnodes=2, node_rank=1, leader="chat-primary-0.chat", port=29501)
    assert _args("vllm", multinode=leader)[-8:] == [
        "--nnodes", "2", "--node-rank", "0", "--master-addr", "chat-primary-0.chat", "--master-port", "29501"]
    assert _args("vllm", multinode=worker)[-1] == "--headless"  # ranks > 0 serve no API
    assert _args("sglang", multinode=worker)[-6:] == [
        "--nnodes", "2", "--node-rank", "1", "--dist-init-addr", "chat-primary-0.chat:29501"]


def test_user_args_come_last() -> None:
    args = _args("vllm", runtime={"args": ["--kv-cache-dtype", "fp8", "--tool-call-parser", "deepseek_v31"]})
    assert args[-4:] == ["--kv-cache-dtype", "fp8", "--tool-call-parser", "deepseek_v31"]


# -- the flags we own: one list, the renderer and the CRD agree ----------------------------------------------
def _rendered_flags() -> set[str]:
    node = runtimes.MultiNode(nnodes=2, node_rank=1, leader="l")
    flags: set[str] = set()
    every = {"parallelism": {"tensor": 2, "pipeline": 2, "data": 2, "expert": True}}
    serving = {"gpuMemoryUtilization": 0.9, "maxNumBatchedTokens": 4096}
    for name in ("vllm", "sglang"):
        for model in (R1, {**DISTILL, "quantization": "nf4"}):
            args = _args(name, runtime=every, model=model, multinode=node, serving=serving)
            flags |= {a for a in args if a.startswith("-")}
    return flags


def test_every_flag_the_builders_render_is_owned_or_deliberately_overridable() -> None:
    flags = _rendered_flags()
    assert {f for f in flags if not runtimes.owned(f)} == USER_OVERRIDABLE
    assert {f"--{f}" for f in runtimes.OWNED_FLAGS if len(f) > 2} - {"--model"} >= {
        f for f in flags if runtimes.owned(f)} - {"--model"}


def test_the_crd_rule_reads_the_same_list() -> None:
    crd = yaml.safe_load(CRD_FILE.read_text())
    runtime = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["runtime"]
    (rule,) = [r["rule"] for r in runtime["x-kubernetes-validations"] if "matches" in r["rule"] and "args" in r["rule"]]
    assert re.search(r"matches\('([^']+)'\)", rule).group(1) == runtimes.OWNED_ARG  # type: ignore[union-attr]


@pytest.mark.parametrize("arg", ["--model=x", "--tensor-parallel-size", "-tp", "--tp=2", "--port", "--headless",
                                 "--served-model-name=a", "--dist-init-addr=1.2.3.4:5"])
def test_owned_args_are_refused(arg: str) -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.runtime\.args: the operator sets these flags"):
        _spec(runtime={"name": "vllm", "args": [arg]})


@pytest.mark.parametrize("arg", ["--kv-cache-dtype=fp8", "--enforce-eager", "--speculative-config", "--models-x",
                                 "--hostname", "fp8", "-O3"])
def test_other_args_pass(arg: str) -> None:
    _spec(runtime={"name": "sglang", "args": [arg]})


# -- the pod ------------------------------------------------------------------------------------------------
def test_an_engine_pod_runs_our_edge_in_proxy_mode_and_the_engine_with_the_gpus() -> None:
    spec = _spec(resources={"gpus": 8}, runtime={"name": "vllm"}, auth={"apiKeysSecretRef": {"name": "keys"}},
                 model={**R1, "loadTimeoutSeconds": 3600,
                        "source": {"huggingFace": {"tokenSecretRef": {"name": "hf"}}}},
                 rollout={"progressDeadlineSeconds": 3600}, env=[{"name": "NCCL_DEBUG", "value": "INFO"}])
    pod = _pods(spec)["chat-primary"]
    edge, engine = pod["containers"]
    assert (edge["name"], edge["image"], engine["name"], engine["image"]) == (
        "worker", "reg/worker:1", "engine", runtimes.DEFAULT_IMAGES["vllm"])
    edge_env = {e["name"]: e for e in edge["env"]}
    assert edge_env["DEEPSEEK_UPSTREAM"]["value"] == "http://127.0.0.1:8001"
    assert "HF_TOKEN" not in edge_env and "nvidia.com/gpu" not in edge["resources"]["limits"]
    assert [p["name"] for p in edge["ports"]] == ["http", "metrics"]
    assert edge["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert {m["name"] for m in edge["volumeMounts"]} == {"tmp", "api-keys"}
    # The engine: its own server's command, the GPUs, the token, the volumes, probes by exec on loopback.
    assert engine["command"] == ["vllm", "serve"] and engine["args"][0] == "deepseek-ai/DeepSeek-R1"
    assert engine["resources"]["limits"]["nvidia.com/gpu"] == "8"
    engine_env = {e["name"]: e for e in engine["env"]}
    assert engine_env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf"
    assert engine_env["HF_HOME"]["value"] == "/models-cache" and engine_env["NCCL_DEBUG"]["value"] == "INFO"
    assert {m["name"] for m in engine["volumeMounts"]} == {"dshm", "cache", "tmp"}
    assert "127.0.0.1:8001/health" in " ".join(engine["startupProbe"]["exec"]["command"])
    assert engine["startupProbe"]["failureThreshold"] == startup_failure_threshold(3600)
    assert "readinessProbe" not in engine  # the edge's readiness follows the engine's /health
    # SIGTERM: the engine outlives the edge's drain (prestop + drain), within the grace period.
    outlive = engine["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert outlive == 5 + 300 and pod["terminationGracePeriodSeconds"] > outlive


def test_a_cached_model_is_read_offline_from_the_volume() -> None:
    spec = _spec(runtime={"name": "sglang"}, model={**R1, "cache": {"enabled": True, "size": "800Gi"}})
    engine = _pods(spec)["chat-primary"]["containers"][1]
    assert _flag(engine["args"], "--model-path") == "/models/model"
    assert "--revision" not in engine["args"]
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in engine["env"]
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in engine["volumeMounts"]


def test_a_variant_may_run_another_runtime() -> None:
    spec = _spec(variants=[{"name": "vllm", "weight": 10, "runtime": {"name": "vllm", "image": "reg/vllm:1"}}])
    pods = _pods(spec)
    assert [c["name"] for c in pods["chat-primary"]["containers"]] == ["worker"]
    assert [c["image"] for c in pods["chat-vllm"]["containers"]] == ["reg/worker:1", "reg/vllm:1"]


def test_builtin_pods_are_unchanged_by_an_explicit_builtin_runtime() -> None:
    plain = render_workload(OWNER, _spec())
    assert render_workload(OWNER, _spec(runtime={"name": "builtin"})) == plain
    (pod,) = [c["spec"]["template"]["spec"] for c in plain if c["kind"] == "Deployment"]
    assert [c["name"] for c in pod["containers"]] == ["worker"]
    assert "DEEPSEEK_UPSTREAM" not in {e["name"] for e in pod["containers"][0]["env"]}
