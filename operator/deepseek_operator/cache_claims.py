"""A model cache's claim follows `model.cache.size` in place (docs/model-cache.md, "Growing the cache").

The cache key leaves the size out (render/common.cache_key), so a new size is the same claim:
- larger: the claim's `spec.resources.requests.storage` is patched, when its StorageClass has
  `allowVolumeExpansion` (the apiserver refuses it otherwise) and the claim is Bound (an unbound
  claim cannot be resized; it is patched once bound). The files stay; nothing is downloaded again.
- the class cannot expand: nothing is patched; ModelCacheReady says so (`CacheExpansionUnsupported`)
  and the claim keeps its size.
- smaller: a PersistentVolumeClaim cannot shrink; ModelCacheReady says so (`CacheShrinkUnsupported`)
  and the claim keeps its size.
The StorageClass is read once per change (one list by name, answered from `api.cache` afterwards
for the same class and size), never on every reconcile.

Releases before this one hashed the size into the key: `adopt_legacy_caches` keeps such a live
cache under its name, so upgrading the operator downloads nothing again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from deepseek_operator import quantity
from deepseek_operator.api import DeepSeekDeploymentSpec, ModelSpec, ResolvedVariant
from deepseek_operator.cache_conditions import Note
from deepseek_operator.k8s import KINDS, K8s, Kind, list_by_name
from deepseek_operator.render.common import Owner, cache_key, cache_name, selector_labels
from deepseek_operator.render.model_cache import cached_models

CLAIM = KINDS[("v1", "PersistentVolumeClaim")]
STORAGE_CLASS = Kind("storage.k8s.io/v1", "StorageClass", "storageclasses", namespaced=False)


async def adopt_legacy_caches(api: K8s, owner: Owner, spec: DeepSeekDeploymentSpec,
                              variants: Sequence[ResolvedVariant] | None = None) -> Owner:
    """`owner` naming each cache whose claim exists only under its legacy name by that name. The
    legacy name hashed the size the claim was created with, which the claim itself still requests
    (a release that keyed by size never resized), so a size changed since is found too. `variants`:
    resolve_variants(spec), when the caller resolved them already (desired.py)."""
    adopted = []
    claims = None
    for model, _ in cached_models(spec, variants).values():
        if await api.get(CLAIM, owner.namespace, cache_name(owner, model)) is not None:
            continue
        if claims is None:  # from the watch-fed cache: no request
            claims = await api.list(CLAIM, owner.namespace, selector_labels(owner))
        for claim in claims:
            if claim["metadata"]["name"] == _legacy_name(owner, model, requested(claim)):
                adopted.append((cache_key(model), claim["metadata"]["name"]))
                break
    return dataclasses.replace(owner, legacy_caches=tuple(adopted)) if adopted else owner


def _legacy_name(owner: Owner, model: ModelSpec, size: str) -> str:
    assert model.cache is not None  # cached models only
    sized = model.model_copy(update={"cache": model.cache.model_copy(update={"size": size})})
    return cache_name(owner, sized, with_size=True)


def requested(claim: dict[str, Any]) -> str:
    """The storage a claim requests ("" when it says none)."""
    return str(claim.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", ""))


def resize(claim: dict[str, Any], size: str, storage_class: dict[str, Any] | None) -> tuple[bool, Note | None]:
    """Pure: (patch the claim to `size`?, what ModelCacheReady says). `storage_class`: the claim's
    class as read, None when the claim names none or it does not exist."""
    name, now = claim["metadata"]["name"], requested(claim)
    want, have = quantity.as_bytes(size), quantity.as_bytes(now) if now else 0
    if want == have or not now:
        return False, None
    if want < have:
        return False, ("CacheShrinkUnsupported",
                       f"model.cache.size {size} is below the {now} of claim {name}: a PersistentVolumeClaim "
                       f"cannot shrink, so it keeps {now} (set {now} or more to clear this)")
    if not (storage_class or {}).get("allowVolumeExpansion"):
        class_name = claim.get("spec", {}).get("storageClassName") or "(none)"
        return False, ("CacheExpansionUnsupported",
                       f"model.cache.size {size} is above the {now} of claim {name}, but its StorageClass "
                       f"{class_name} does not allow volume expansion (allowVolumeExpansion): the claim keeps "
                       f"{now}; use a class that does, or a new cache (another storageClassName)")
    if claim.get("status", {}).get("phase") != "Bound":
        return False, None  # resized once bound: the apiserver refuses to resize an unbound claim
    return True, None


async def storage_class(api: K8s, claim: dict[str, Any], size: str) -> dict[str, Any] | None:
    """The claim's StorageClass, read once per (class, size) by k8s.list_by_name, remembered in `api.cache`."""
    name = claim.get("spec", {}).get("storageClassName")
    if not name:
        return None
    slot = f"storageclass/{name}/{size}"
    if slot not in api.cache:
        api.cache[slot] = await list_by_name(api, STORAGE_CLASS, None, name)
    found: dict[str, Any] | None = api.cache[slot]
    return found


async def resize_claims(api: K8s, owner: Owner, spec: DeepSeekDeploymentSpec,
                        variants: Sequence[ResolvedVariant] | None = None) -> list[Note]:
    """Patch each cache claim that should grow and can; the notes for ModelCacheReady."""
    notes = []
    for model, _ in cached_models(spec, variants).values():
        note = await _resize_one(api, owner, model)
        if note is not None:
            notes.append(note)
    return notes


async def _resize_one(api: K8s, owner: Owner, model: ModelSpec) -> Note | None:
    assert model.cache is not None and model.cache.size is not None  # cached models only (api.py)
    claim = await api.get(CLAIM, owner.namespace, cache_name(owner, model))
    if claim is None or requested(claim) == model.cache.size:
        return None
    size = model.cache.size
    sc = await storage_class(api, claim, size) if quantity.as_bytes(size) > quantity.as_bytes(requested(claim) or "0") \
        else None
    patch, note = resize(claim, size, sc)
    if patch:
        await api.patch(CLAIM, owner.namespace, claim["metadata"]["name"],
                        {"spec": {"resources": {"requests": {"storage": size}}}})
    return note
