"""What the monitoring tests render: one owner and a spec with a canary (imported by conftest and tests)."""

from __future__ import annotations

from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec, parse_spec
from deepseek_operator.render.common import Owner
from deepseek_operator.render.monitoring import rule_groups

OWNER = Owner(name="chat", namespace="llm", uid="uid-1")
ROUTING = {"team": "ml-platform"}  # spec.monitoring.prometheusRule.labels: on every alert


def spec_with_canary() -> DeepSeekDeploymentSpec:
    """Short request timeout and progress deadline, so the thresholds in the rules are distinctive; a
    routing label on every alert and a 10% error threshold (the default is 5%)."""
    return parse_spec(
        {
            "image": "img:1",
            "model": {"id": "m", "loadTimeoutSeconds": 600},
            "variants": [{"name": "canary", "weight": 10}],
            "serving": {"requestTimeoutSeconds": 60},
            "rollout": {"progressDeadlineSeconds": 600},
            "monitoring": {"prometheusRule": {"labels": ROUTING, "thresholds": {"errorPercent": 10}}},
        }
    )


def rendered_rule_groups() -> dict[str, Any]:
    """The rule file body for OWNER + spec_with_canary()."""
    rules: dict[str, Any] = rule_groups(OWNER, spec_with_canary())
    return rules


def spec_with_engine_canary() -> DeepSeekDeploymentSpec:
    """spec_with_canary() with a vLLM canary (spec.runtime per variant): the engine alerts are rendered too."""
    raw = spec_with_canary().model_dump(by_alias=True, exclude_none=True)
    raw["variants"] = [{"name": "canary", "weight": 10, "runtime": {"name": "vllm"}}]
    return parse_spec(raw)


def rendered_engine_rule_groups() -> dict[str, Any]:
    """The rule file body for OWNER + spec_with_engine_canary()."""
    rules: dict[str, Any] = rule_groups(OWNER, spec_with_engine_canary())
    return rules
