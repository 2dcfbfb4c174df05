"""promtool on the gateway's alerts (render/gateway_monitoring.py): `check rules` on a rule file of a
resource with the gateway and a fallback, and `test rules` with synthetic gateway series: held
requests that expired, a full hold queue, the fallback share at its cap, a gateway pod not scraped;
another resource's gateway never fires ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring_cases import OWNER, ROUTING, spec_with_canary
from test_promtool import _fires, _run, _silent

from deepseek_operator.api import parse_spec
from deepseek_operator.render.monitoring import rule_groups

pytestmark = pytest.mark.slow

GATEWAY = 'namespace="llm", deepseek_gateway="chat", pod="chat-gateway-1"'
OTHER = 'namespace="llm", deepseek_gateway="other", pod="other-gateway-1"'
LABELS = {"namespace": "llm", "deepseek_gateway": "chat", **ROUTING, "severity": "warning"}


@pytest.fixture
def gateway_rules(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    raw = spec_with_canary().model_dump(by_alias=True, exclude_none=True)
    raw.update(gateway={"enabled": True, "maxHeldRequests": 8},
               fallback={"apiKeySecretRef": {"name": "deepseek", "key": "api-key"}, "maxShare": 0.2},
               model={**raw["model"], "source": {"pvc": {"claimName": "models"}}})
    rules: dict[str, Any] = rule_groups(OWNER, parse_spec(raw))
    path = tmp_path / "gateway-rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path, rules


def test_check_gateway_rules(promtool: str, gateway_rules: tuple[Path, dict[str, Any]]) -> None:
    result = _run(promtool, "check", "rules", str(gateway_rules[0]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout  # the 11 of test_check_rules + 4 gateway alerts


def _gateway_case(rules: dict[str, Any]) -> dict[str, Any]:
    primary, canary = f'{GATEWAY}, variant="primary"', f'{GATEWAY}, variant="canary"'
    return {
        "interval": "1m",
        "input_series": [
            # Two held requests of the primary expire at minute 3; the canary's never do.
            {"series": f"deepseek_gateway_hold_expired_total{{{primary}}}", "values": "0x2 2x30"},
            {"series": f"deepseek_gateway_hold_expired_total{{{canary}}}", "values": "0x32"},
            # Three canary requests refused 429 at minute 4 (its hold queue full).
            {"series": f"deepseek_gateway_hold_refused_total{{{canary}}}", "values": "0x3 3x30"},
            # The hosted API at 19% of the routed requests: at least 90% of maxShare 0.2.
            {"series": f"deepseek_gateway_fallback_share{{{GATEWAY}}}", "values": "0.19x32"},
            {"series": f'up{{{GATEWAY}, job="chat-gateway"}}', "values": "1x32"},
            {"series": 'up{namespace="llm", deepseek_gateway="chat", pod="chat-gateway-2", job="chat-gateway"}',
             "values": "0x32"},
            # Another resource's gateway, in trouble everywhere: none of it is ours.
            {"series": f'deepseek_gateway_hold_expired_total{{{OTHER}, variant="primary"}}', "values": "0+5x32"},
            {"series": f"deepseek_gateway_fallback_share{{{OTHER}}}", "values": "1x32"},
            {"series": f'up{{{OTHER}, job="other-gateway"}}', "values": "0x32"},
        ],
        "alert_rule_test": [
            _fires(rules, "5m", "DeepSeekGatewayHeldRequestsExpired", {**LABELS, "variant": "primary"}, "2"),
            _silent("20m", "DeepSeekGatewayHeldRequestsExpired"),  # nothing expired in the last 10 minutes
            _fires(rules, "5m", "DeepSeekGatewayHoldQueueFull", {**LABELS, "variant": "canary"}, "3"),
            _silent("10m", "DeepSeekGatewayFallbackAtCap"),  # pending: 15 minutes first
            _fires(rules, "20m", "DeepSeekGatewayFallbackAtCap", LABELS, "19%"),
            _fires(rules, "10m", "DeepSeekGatewayTargetDown",
                   {**LABELS, "pod": "chat-gateway-2", "job": "chat-gateway"}, "0"),
        ],
    }


def test_gateway_alert_unit_tests(promtool: str, gateway_rules: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, rules = gateway_rules
    test_file = tmp_path / "test.yaml"
    body = {"rule_files": [str(path)], "evaluation_interval": "1m", "tests": [_gateway_case(rules)]}
    test_file.write_text(yaml.safe_dump(body, sort_keys=False))
    result = _run(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
