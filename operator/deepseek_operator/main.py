"""kopf entry point: `deepseek-operator [kopf run options]` == `kopf run -m deepseek_operator.main ...`.

Startup settings, each with its reason:
- progress and diff-base storage in `deepseek.ai/*` annotations, not in `status`: the status
  subresource belongs to status.py alone and its schema has no room for kopf's bookkeeping. Today
  kopf writes neither (handlers.py registers no change handlers, so metadata-only edits cost no
  write); the settings only keep a future change handler out of the status.
- posting handler logs as Events is off (kopf's default since 1.45); the reconcile posts the Events
  that matter (rollbacks, missing integrations) itself.
- Pods, Deployments and Services are watched with the server-side label selector
  `deepseek.ai/deployment` (children only): in a large cluster the operator never streams every pod.
- the watch is restarted every 10 minutes (server-side timeout; DEEPSEEK_OPERATOR_WATCH_TIMEOUT_SECONDS)
  so a silently dead connection cannot leave the operator blind; kopf resumes from the last
  resourceVersion. The churn soak (tests/e2e/test_churn_soak.py) sets 2 s to inject restarts.
- daemon and timer cancellation is polled every second, not every 60 s (kopf's default). There are
  none today: the resync is one cluster-wide loop (handlers.py) precisely so that kopf puts no
  finalizer on DeepSeekDeployments and `kubectl delete` never waits for the operator.
- the operator's Prometheus metrics are served on DEEPSEEK_OPERATOR_METRICS_PORT (default 9090; 0 = off).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import kopf

from deepseek_operator import handlers, metrics  # noqa: F401  (registers the handlers)
from deepseek_operator.render.common import LABEL_DEPLOYMENT

ANNOTATION_PREFIX = "deepseek.ai"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # An integer: the apiserver refuses `timeoutSeconds=600.0` (strconv.ParseInt), the sandbox did not.
    settings.watching.server_timeout = int(os.environ.get("DEEPSEEK_OPERATOR_WATCH_TIMEOUT_SECONDS", "600"))
    for plural in ("pods", "deployments", "services"):  # children only, filtered by the API server
        settings.watching.label_selectors[plural] = LABEL_DEPLOYMENT
    settings.background.cancellation_polling = 1
    settings.posting.level = logging.WARNING
    port = int(os.environ.get("DEEPSEEK_OPERATOR_METRICS_PORT", "9090"))
    if port:
        metrics.start_metrics_server(port)


def cli() -> None:
    """Console script: pass every argument through to `kopf run`."""
    from kopf.cli import main as kopf_main

    kopf_main(args=["run", "-m", "deepseek_operator.main", *sys.argv[1:]], prog_name="deepseek-operator")
