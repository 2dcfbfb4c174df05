"""kopf's settings for this operator, apart from the handlers (main.py documents each one's reason).

Kept out of main.py so that benchmarks/null_operator.py, the floor the operator is measured against,
runs kopf with exactly these settings without importing (and so registering) the real handlers.
"""

from __future__ import annotations

import logging
import os

import kopf

from deepseek_operator.settings import Settings

ANNOTATION_PREFIX = "deepseek.ai"


def configure_kopf(settings: kopf.OperatorSettings, ours: Settings | None = None) -> None:
    """Storage in `deepseek.ai/*` annotations, integer watch timeouts, fast cancellation, quiet posting.

    `ours`: the operator's settings (watch timeout, peering lifetime); None: from the environment.
    """
    ours = ours or Settings.from_env(os.environ)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # An integer: the apiserver refuses `timeoutSeconds=600.0` (strconv.ParseInt), the sandbox did not.
    settings.watching.server_timeout = ours.watch_timeout_seconds
    settings.background.cancellation_polling = 1
    # A replica that stops sending heartbeats counts as dead after this long; the next takes over.
    settings.peering.lifetime = ours.peering_lifetime_seconds
    settings.posting.level = logging.WARNING
