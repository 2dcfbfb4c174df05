"""deepseek-sandbox: the embedded default cluster (an emulated Kubernetes API, kmock based).

``async with Sandbox(crds_dir=..., ready_delay=0.2) as sb:`` gives ``sb.url``,
``sb.kubeconfig_path``, ``sb.stats()``, ``sb.objects(...)`` and ``sb.set_pod_ready(...)``.
"""

from .sandbox import Sandbox
from .stats import WriteStats

__all__ = ["Sandbox", "WriteStats"]
