"""kopf's settings for this operator, apart from the handlers (main.py documents each one's reason).

Kept out of main.py so that benchmarks/null_operator.py, the floor the operator is measured against,
runs kopf with exactly these settings without importing (and so registering) the real handlers.
"""

from __future__ import annotations

import logging
import os

import kopf

ANNOTATION_PREFIX = "deepseek.ai"
# Every watch (kopf's and the caches') ends after this many seconds and resumes (main.py).
WATCH_TIMEOUT_SECONDS = int(os.environ.get("DEEPSEEK_OPERATOR_WATCH_TIMEOUT_SECONDS", "600"))
# With leader election, how long a silent replica keeps the lead (kopf heartbeats every 5-10 s less).
PEERING_LIFETIME_SECONDS = int(os.environ.get("DEEPSEEK_OPERATOR_PEERING_LIFETIME_SECONDS", "30"))


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Storage in `deepseek.ai/*` annotations, integer watch timeouts, fast cancellation, quiet posting."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # An integer: the apiserver refuses `timeoutSeconds=600.0` (strconv.ParseInt), the sandbox did not.
    settings.watching.server_timeout = WATCH_TIMEOUT_SECONDS
    settings.background.cancellation_polling = 1
    # A replica that stops sending heartbeats counts as dead after this long; the next takes over.
    settings.peering.lifetime = PEERING_LIFETIME_SECONDS
    settings.posting.level = logging.WARNING
