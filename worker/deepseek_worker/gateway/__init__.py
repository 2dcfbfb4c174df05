"""Gateway mode of the worker binary (docs/gateway.md): one per DeepSeekDeployment, CPU only, in front
of its variants' worker pods. Weighted, ready-gated, least-loaded forwarding; scale-from-zero hold;
spill-over to a hosted API. Selected by DEEPSEEK_GATEWAY_CONFIG (a JSON file) or
DEEPSEEK_GATEWAY_CONFIG_JSON; config.py defines the document.
"""

from .app import build_gateway_app
from .config import GatewayConfig, load_config

__all__ = ["GatewayConfig", "build_gateway_app", "load_config"]
