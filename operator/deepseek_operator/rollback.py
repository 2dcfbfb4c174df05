"""Pure rollback policy (spec.rollout.autoRollback), remembered in status.image and status.failedImage.

- status.image is the last image fully rolled out on the primary: the rollback target.
- When a rollout of spec.image fails fatally (observe.py), status.failedImage = spec.image and
  status.failedReason says why (the reason and the pod's message). With
  autoRollback and a target to go back to, the primary is rendered with status.image again, once.
  A failure of the pod's configuration (observe.py's `config`: a missing Secret or key) is never
  rolled back: the old image would meet the same configuration. It is reported as Degraded instead.
- The bad image is not retried while spec.image still equals status.failedImage; setting a new
  image (the next CI pipeline) clears it. Rollback covers image changes, which is what pipelines
  make; a failure of any other spec change is reported as Degraded without rollback.
"""

from __future__ import annotations

from typing import Any

from deepseek_operator.api import DeepSeekDeploymentSpec
from deepseek_operator.observe import VariantState
from deepseek_operator.status import Rollback


def plan(spec: DeepSeekDeploymentSpec, old_status: dict[str, Any]) -> Rollback:
    """The rollback state carried into this reconcile from the last status."""
    failed = old_status.get("failedImage", "")
    stable = old_status.get("image", "")
    if not failed or failed != spec.image:
        return Rollback()
    rolled_back = spec.rollout.auto_rollback and bool(stable) and stable != spec.image
    return Rollback(failed_image=failed, rolled_back=rolled_back, reason=old_status.get("failedReason", ""))


def primary_image(spec: DeepSeekDeploymentSpec, rollback: Rollback, stable: str) -> str:
    """The image to render on the primary: the stable one while rolled back, else spec.image."""
    return stable if rollback.rolled_back else spec.image


def detect_failure(spec: DeepSeekDeploymentSpec, rollback: Rollback, primary: VariantState,
                   stable: str) -> Rollback | None:
    """A new fatal failure of spec.image on the primary -> the new rollback state; else None. A
    `config` failure (a missing Secret) is not the image's: the old image would fail the same way."""
    if rollback.failed_image or primary.phase != "Failed" or not primary.fatal or primary.config:
        return None
    if primary.image != spec.image or spec.image == stable:
        return None
    return Rollback(failed_image=spec.image, rolled_back=spec.rollout.auto_rollback and bool(stable),
                    reason=f"{primary.reason}: {primary.message}")
