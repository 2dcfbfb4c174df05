"""A worker's way to serving, sized from the model's checkpoint: the pod's download volume and the
start-up time estimate (docs/gpu-sizing.md, "Start-up budget"; docs/model-cache.md).

Pure arithmetic on the checkpoint's bytes (architectures.checkpoint_bytes). The rates are stated assumptions,
not measurements; the docs derive the table of suggested `model.loadTimeoutSeconds` from them:

    estimate  = (checkpoint / HUB_BYTES_PER_SECOND   when the pod downloads from the hub)
              + checkpoint / READ_BYTES_PER_SECOND   read from disk, converted, copied to the GPUs
              + START_SECONDS                        process start, CUDA init, warm-up
    suggested = 1.5 x estimate, rounded up to 5 minutes
    volume    = 1.1 x checkpoint + 2 GiB, in whole GiB  (the pod's emptyDir for a hub download)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepseek_operator.api import ModelSpec

GB = 10**9
GIB = 1024**3
HUB_BYTES_PER_SECOND = 100 * 10**6  # one pod's download from the hub: ~800 Mbit/s
READ_BYTES_PER_SECOND = 200 * 10**6  # safetensors from a network volume or local disk into the GPUs
START_SECONDS = 60
SAFETY = 1.5
ROUND_SECONDS = 300
VOLUME_HEADROOM = 1.1  # partial files (.incomplete) and hub metadata beside the finished files
VOLUME_EXTRA_BYTES = 2 * GIB
# A hub source without a cache above this many bytes downloads for minutes into every new pod.
LARGE_DOWNLOAD_BYTES = 25 * GB


def downloads_in_pod(model: ModelSpec) -> bool:
    """The worker downloads the weights itself: a hub source, no model cache, and not a path in the image."""
    return model.source.hub is not None and not model.cached and not model.id.startswith("/")


def volume_bytes(checkpoint: int) -> int:
    """The emptyDir (and ephemeral-storage request) a hub download of `checkpoint` bytes needs."""
    return -(-int(checkpoint * VOLUME_HEADROOM + VOLUME_EXTRA_BYTES) // GIB) * GIB


def volume_quantity(checkpoint: int) -> str:
    """volume_bytes as a Kubernetes quantity, e.g. 158Gi."""
    return f"{volume_bytes(checkpoint) // GIB}Gi"


def load_seconds(checkpoint: int, download: bool) -> int:
    """Seconds from the container's start to a loaded, warmed-up model (module docstring)."""
    fetch = checkpoint / HUB_BYTES_PER_SECOND if download else 0.0
    return int(-(-(fetch + checkpoint / READ_BYTES_PER_SECOND + START_SECONDS) // 1))


def suggested_timeout(estimate: int) -> int:
    """A model.loadTimeoutSeconds with room above `estimate`: x1.5, rounded up to 5 minutes."""
    return int(-(-(estimate * SAFETY) // ROUND_SECONDS) * ROUND_SECONDS)


Warning = tuple[str, str]  # (event reason, message)
LARGE_DOWNLOAD = "ModelDownloadPerPod"
UNKNOWN_DOWNLOAD = "ModelSizeUnknown"
SHORT_LOAD_TIMEOUT = "LoadTimeoutTooShort"


def warnings(model_id: str, checkpoint: int, download: bool, load_timeout_seconds: int) -> tuple[Warning, ...]:
    """What to change before the first pod starts: a large download into every pod, a load budget below
    the estimate (0 disables that check). When the checkpoint's size is unknown (0), only a download into
    every pod is said: its emptyDir then has no size limit and no ephemeral-storage request (the pod's
    volume is sized from the plan: render/workload.py), so it can fill the node's disk."""
    if checkpoint <= 0:
        return ((UNKNOWN_DOWNLOAD, f"the size of model {model_id} is unknown (not in the GPU-fit catalogue and no "
                 "spec.model.architecture) and it downloads into each pod: into an emptyDir without a size limit "
                 "or an ephemeral-storage request, which can fill the node's disk; set model.cache to download it "
                 "once (docs/model-cache.md), or spec.model.architecture to size it"),) if download else ()
    out: list[Warning] = []
    size = f"~{checkpoint / GB:.0f} GB"
    if download and checkpoint > LARGE_DOWNLOAD_BYTES:
        out.append((LARGE_DOWNLOAD, f"model {model_id} is {size} and downloads into each pod (an emptyDir of "
                    f"{volume_quantity(checkpoint)}, again on every reschedule); set model.cache to download it "
                    "once (docs/model-cache.md)"))
    estimate = load_seconds(checkpoint, download)
    if 0 < load_timeout_seconds < estimate:
        how = "download and load" if download else "load"
        out.append((SHORT_LOAD_TIMEOUT, f"the start ({how} of {size}) is estimated at {estimate}s, more than "
                    f"model.loadTimeoutSeconds {load_timeout_seconds}: the startup probe would restart the worker "
                    "before it serves; set model.loadTimeoutSeconds (and rollout.progressDeadlineSeconds) to at "
                    f"least {suggested_timeout(estimate)} (docs/gpu-sizing.md)"))
    return tuple(out)
