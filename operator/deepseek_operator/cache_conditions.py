"""Pure: the `ModelCacheReady` condition, what a model cache's claim cannot do for the spec.

Contract: `cache_conditions(spec, notes)` returns [] when no model is cached, else one
(type, ok, reason, message) tuple for `ModelCacheReady` (status.py turns it into a condition and
reconcile.py into one Warning Event when it turns False). False reasons, first one wins, all
messages joined:
- `ReadWriteOnceMultiAttach`: a claim only one node can attach (ReadWriteOnce, or ReadWriteOncePod
  for any second pod) is mounted by more than one worker pod (an autoscaled variant counts its
  `maxReplicas`: the autoscaler may scale to them at any time). Pods scheduled to another node hang in
  ContainerCreating with the kubelet's Multi-Attach error; nothing fails, so it is said here.
- the reasons of `notes` (the claims' resize, cache_claims.py), each a (reason, message) pair.
The condition is True (`Configured`) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from deepseek_operator.api import DeepSeekDeploymentSpec, ResolvedVariant
from deepseek_operator.render.model_cache import cached_models

CONDITION = "ModelCacheReady"
Note = tuple[str, str]  # (reason, message)


def access_mode_notes(spec: DeepSeekDeploymentSpec, variants: Sequence[ResolvedVariant] | None = None) -> list[Note]:
    """A ReadWriteOnce(Pod)-only cache mounted by more worker pods than it can serve."""
    notes = []
    for model, loading in cached_models(spec, variants).values():
        assert model.cache is not None  # cached models only
        modes = set(model.cache.access_modes)
        pods = sum(most_pods(v) for v in loading)
        if modes == {"ReadWriteOncePod"} and pods > 1:
            notes.append(("ReadWriteOnceMultiAttach",
                          f"the cache of {model.id} is ReadWriteOncePod but {pods} worker pods mount it: all but "
                          "one stay in ContainerCreating; set model.cache.accessModes to [ReadOnlyMany] or "
                          "[ReadWriteMany] (a storage class that offers them)"))
        elif modes <= {"ReadWriteOnce", "ReadWriteOncePod"} and pods > 1:
            notes.append(("ReadWriteOnceMultiAttach",
                          f"the cache of {model.id} is ReadWriteOnce but {pods} worker pods mount it: a pod "
                          "scheduled to another node than the one the volume is attached to stays in "
                          "ContainerCreating (Multi-Attach error); set model.cache.accessModes to [ReadOnlyMany] "
                          "or [ReadWriteMany] (a storage class that offers them), or keep the workers on one node "
                          "(scheduling.nodeSelector)"))
    return notes


def most_pods(variant: ResolvedVariant) -> int:
    """The worker pods a variant may run at once: its autoscaler's maximum when it has one."""
    return max(variant.replicas, variant.autoscaling.max_replicas if variant.autoscaling else 0)


def cache_conditions(spec: DeepSeekDeploymentSpec, notes: list[Note] | None = None,
                     variants: Sequence[ResolvedVariant] | None = None) -> list[tuple[str, bool, str, str]]:
    """The ModelCacheReady condition as (type, ok, reason, message); [] without a cached model.
    `variants`: resolve_variants(spec), when the caller resolved them already (desired.py)."""
    if not cached_models(spec, variants):
        return []
    found = access_mode_notes(spec, variants) + list(notes or [])
    if not found:
        return [(CONDITION, True, "Configured", "the model cache claims serve every worker pod")]
    return [(CONDITION, False, found[0][0], "; ".join(message for _, message in found))]
