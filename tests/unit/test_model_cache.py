"""render/model_cache.py and download.py: the cache's objects, and a download's state from them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deepseek_operator.api import InvalidSpec, parse_spec
from deepseek_operator.download import download_state
from deepseek_operator.render.common import Owner, cache_name
from deepseek_operator.render.model_cache import render_model_cache
from deepseek_operator.render.workload import render_workload
from tests.pss import object_violations
from tests.unit.upstream_crds import kube_validate

OWNER = Owner("chat", "team-a", "uid-1", 3)
MODEL = {"id": "deepseek-ai/DeepSeek-V2-Lite", "cache": {"enabled": True, "size": "40Gi"}}
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def spec(model: dict[str, Any] | None = None, **extra: Any) -> Any:
    return parse_spec({"image": "reg/worker:1", "model": model or MODEL, **extra})


def kinds(children: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in children]


def test_one_set_of_objects_per_cached_model_in_order_and_valid() -> None:
    out = render_model_cache(OWNER, spec())
    name = cache_name(OWNER, spec().model)
    assert kinds(out) == [("ServiceAccount", name), ("Role", name), ("RoleBinding", name), ("ConfigMap", name),
                          ("PersistentVolumeClaim", name), ("Job", name)]
    assert len(name) <= 52 and name.startswith("chat-model-")
    for child in out:
        assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert child["metadata"]["labels"]["deepseek.ai/deployment"] == "chat"
        kube_validate(child)


def test_the_download_pod_may_patch_its_one_configmap_and_nothing_else() -> None:
    out = {c["kind"]: c for c in render_model_cache(OWNER, spec())}
    name = out["Job"]["metadata"]["name"]
    assert out["Role"]["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name],
                                     "verbs": ["patch"]}]
    assert out["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "team-a"}]
    assert out["ServiceAccount"]["automountServiceAccountToken"] is False
    pod = out["Job"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == name and pod["automountServiceAccountToken"] is True
    assert "data" not in out["ConfigMap"]  # the downloader owns it


def test_the_job_retries_transient_failures_only_and_is_restricted() -> None:
    job = render_model_cache(OWNER, spec())[-1]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailJob", "onExitCodes": {"containerName": "download", "operator": "In",
                                                             "values": [2]}}
    assert job["spec"]["backoffLimit"] == 10  # each retry keeps the files already complete
    pod = job["spec"]["template"]
    assert "deepseek.ai/deployment" not in pod["metadata"]["labels"]  # no worker Service selects it
    assert object_violations(job) == []  # Pod Security "restricted"
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["DEEPSEEK_DOWNLOAD_SOURCE"] == "huggingFace" and env["DEEPSEEK_MODEL"] == MODEL["id"]
    assert env["DEEPSEEK_DOWNLOAD_DIR"] == "/models/model" and env["HF_HUB_OFFLINE"] == "0"
    assert container["command"] == ["/usr/bin/tini", "--", "deepseek-worker-download"]
    assert container["image"] == "reg/worker:1"


def test_the_jobs_retries_and_resources_come_from_cache_download_and_do_not_change_the_cache() -> None:
    default = render_model_cache(OWNER, spec())[-1]
    (container,) = default["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "4Gi"}}
    tuned = spec({**MODEL, "cache": {**MODEL["cache"], "download": {
        "backoffLimit": 40, "resources": {"limits": {"cpu": "8", "memory": "16Gi"}}}}})
    job = render_model_cache(OWNER, tuned)[-1]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert job["spec"]["backoffLimit"] == 40
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "8", "memory": "16Gi"}}
    assert job["metadata"]["name"] == default["metadata"]["name"]  # the same cache: no new download
    kube_validate(job)


@pytest.mark.parametrize(("download", "field"), [({"backoffLimit": -1}, "backoffLimit"),
                                                 ({"backoffLimit": 101}, "backoffLimit"),
                                                 ({"resources": {"limits": {"cpu": "lots", "memory": "1Gi"}}}, "cpu"),
                                                 ({"resources": {"requests": {"cpu": "500m", "memory": "8Gi"}}},
                                                  "requests: cpu and memory must not exceed their limits")])
def test_bad_download_settings_are_refused_naming_the_field(download: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpec, match=field):
        spec({**MODEL, "cache": {**MODEL["cache"], "download": download}})


def test_modelscope_source_endpoint_and_token_go_to_the_job_only() -> None:
    model = {**MODEL, "source": {"modelScope": {"endpoint": "https://modelscope.example.com",
                                                "tokenSecretRef": {"name": "ms", "key": "t"}}}}
    s = spec(model)
    (container,) = render_model_cache(OWNER, s)[-1]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["DEEPSEEK_DOWNLOAD_SOURCE"] == "modelScope"
    assert env["DEEPSEEK_DOWNLOAD_ENDPOINT"] == "https://modelscope.example.com"
    assert env["DEEPSEEK_DOWNLOAD_TOKEN"] == {"secretKeyRef": {"name": "ms", "key": "t"}}
    deployment = render_workload(OWNER, s)[0]
    worker_env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert worker_env["DEEPSEEK_MODEL"] == "/models/model" and worker_env["HF_HUB_OFFLINE"] == "1"
    assert "HF_TOKEN" not in worker_env and "DEEPSEEK_DOWNLOAD_TOKEN" not in worker_env
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": cache_name(OWNER, s.model),
                                                       "readOnly": True}} in volumes


def test_variants_share_a_cache_of_the_same_model_and_get_their_own_otherwise() -> None:
    same = spec(variants=[{"name": "canary", "weight": 10, "image": "reg/worker:2"}])
    assert [k for k, _ in kinds(render_model_cache(OWNER, same))].count("Job") == 1
    other = spec(variants=[{"name": "canary", "weight": 10, "model": {"id": "deepseek-ai/DeepSeek-V2-Lite-Chat"}}])
    assert [k for k, _ in kinds(render_model_cache(OWNER, other))].count("Job") == 2


def test_the_cache_name_changes_with_what_the_volume_holds_not_with_the_image_size_or_stall_timeout() -> None:
    base = cache_name(OWNER, spec().model)
    assert cache_name(OWNER, spec({**MODEL, "revision": "v2"}).model) != base
    assert cache_name(OWNER, spec({**MODEL, "cache": {**MODEL["cache"], "storageClassName": "nfs"}}).model) != base
    assert cache_name(OWNER, spec({**MODEL, "cache": {"enabled": True, "size": "80Gi"}}).model) == base  # grows
    assert cache_name(OWNER, spec({**MODEL, "source": {"huggingFace": {"endpoint": "https://hf-mirror.com"}}}
                                  ).model) != base
    assert cache_name(OWNER, spec({**MODEL, "cache": {**MODEL["cache"], "stallTimeoutSeconds": 60}}).model) == base
    assert cache_name(OWNER, parse_spec({"image": "reg/worker:9", "model": MODEL}).model) == base


def test_uncached_huggingface_mirror_is_the_workers_hf_endpoint() -> None:
    s = spec({"id": "deepseek-ai/DeepSeek-V2-Lite", "source": {"huggingFace": {"endpoint": "https://hf-mirror.com"}}})
    assert render_model_cache(OWNER, s) == []
    env = {e["name"]: e.get("value") for e in render_workload(OWNER, s)[0]["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["HF_ENDPOINT"] == "https://hf-mirror.com" and "HF_HUB_OFFLINE" not in env


# -- download.py ----------------------------------------------------------------------------------

NAMES = ("chat-model-abc", "team-a", "deepseek-ai/DeepSeek-V2-Lite@main")


def progress(**fields: Any) -> dict[str, Any]:
    report = {"phase": "Downloading", "bytesDone": 0, "bytesTotal": 0, "bytesPerSecond": 0,
              "progressAt": "2026-12-01T11:59:58Z", "reason": "", "message": "", **fields}
    return {"data": {"progress": json.dumps(report)}}


def job(condition: str | None = None, **extra: Any) -> dict[str, Any]:
    conds = [{"type": condition, "status": "True", **extra}] if condition else []
    return {"status": {"conditions": conds}}


BOUND = {"status": {"phase": "Bound"}}


def state(job_obj: Any = None, cm: Any = None, claim: Any = BOUND, stall: int = 300, now: datetime = NOW) -> Any:
    return download_state(NAMES, job_obj, cm, claim, stall, now)


def test_pending_until_the_first_report_naming_an_unbound_claim() -> None:
    unbound = state(job(), None, {"status": {"phase": "Pending"}})
    assert (unbound.phase, unbound.reason) == ("Pending", "Downloading")
    assert "to be bound (Pending)" in unbound.message and "storageClassName" in unbound.message
    assert "waiting for the download Job" in state(job(), None).message
    assert state(job(), {"data": {"progress": "not json"}}).phase == "Pending"


def test_downloading_has_percent_rate_and_eta() -> None:
    s = state(job(), progress(bytesDone=42 * 2**20, bytesTotal=100 * 2**20, bytesPerSecond=2 * 2**20))
    assert (s.phase, s.percent, s.eta_seconds) == ("Downloading", 42, 29)
    assert s.status()["summary"] == "42%" and "42% (42 MiB of 100 MiB), 2 MiB/s, about 29s left" in s.message
    assert state(job(), progress(bytesDone=100, bytesTotal=100)).percent == 99  # 100 only when the Job is done


def test_no_byte_for_the_stall_timeout_is_stalled_even_without_reports() -> None:
    report = progress(bytesDone=10, bytesTotal=100, progressAt="2026-12-01T11:55:00Z")
    assert state(job(), report, stall=300).phase == "Stalled"
    stalled = state(job(), report, stall=300)
    assert stalled.reason == "DownloadStalled" and stalled.status()["summary"] == "Stalled 10%"
    assert "for 300s" in stalled.message
    assert state(job(), report, stall=301).phase == "Downloading"
    assert state(job(), report, now=NOW - timedelta(seconds=200)).phase == "Downloading"


@pytest.mark.parametrize(("reason", "fix", "ready"), [
    ("Unauthorized", "tokenSecretRef", "DownloadFailed"), ("NotFound", "spec.model.id", "DownloadFailed"),
    ("DiskFull", "raise model.cache.size", "DownloadDiskFull")])
def test_permanent_failures_fail_at_once_with_the_fix(reason: str, fix: str, ready: str) -> None:
    s = state(job(), progress(phase="Failed", reason=reason, message="401 Client Error"))
    assert (s.phase, s.reason) == ("Failed", ready)
    assert fix in s.message and "kubectl delete job chat-model-abc -n team-a" in s.message
    assert "401 Client Error" in s.message


def test_the_preflight_disk_full_reaches_ready_with_needs_and_has() -> None:
    """The downloader's preflight check (worker download/space.py) fails before a byte is fetched."""
    s = state(job(), progress(phase="Failed", reason="DiskFull", bytesTotal=31 * 10**9,
                              message="needs 31.00 GB, has 20.00 GB free on /models/model"))
    assert (s.phase, s.reason, s.status()["summary"]) == ("Failed", "DownloadDiskFull", "Failed")
    assert "(DiskFull: needs 31.00 GB, has 20.00 GB free on /models/model)" in s.message


def test_a_transient_failure_is_retried_by_the_job_not_reported_failed() -> None:
    s = state(job(), progress(phase="Failed", reason="Error", message="ReadTimeout", bytesDone=5, bytesTotal=10))
    assert s.phase == "Downloading" and "the Job retries" in s.message and "ReadTimeout" in s.message
    given_up = state(job("Failed", reason="BackoffLimitExceeded", message="Job has reached the specified backoff"),
                     progress(phase="Failed", reason="Error", message="ReadTimeout"))
    assert given_up.phase == "Failed" and "ReadTimeout" in given_up.message
    silent = state(job("Failed", reason="PodFailurePolicy", message="Container download exited 2"), None)
    assert silent.phase == "Failed" and "PodFailurePolicy: Container download exited 2" in silent.message


def test_complete_only_when_the_job_succeeded() -> None:
    report = progress(phase="Complete", bytesDone=100, bytesTotal=100, commit="abc")
    assert state(job(), report).phase == "Downloading"  # the pod is still exiting
    done = state(job("Complete"), report)
    assert done.complete and done.percent == 100 and done.status()["summary"] == "Complete"
    assert done.status()["commit"] == "abc"


# -- the ModelCacheReady condition, through the real reconcile over an in-memory API --------------

class FakeApi:
    """Objects by (kind, name); applies store what they are given; patches merge into the object."""

    def __init__(self, spec_: dict[str, Any]) -> None:
        meta = {"namespace": "team-a", "name": "chat", "uid": "uid-1", "generation": 2, "resourceVersion": "7"}
        self.cr: dict[str, Any] = {"apiVersion": "deepseek.ai/v1alpha1", "kind": "DeepSeekDeployment",
                                   "metadata": meta, "spec": {"image": "reg/worker:1", "resources": {"gpus": 0},
                                                              **spec_}, "status": {}}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.reads: list[tuple[str, str]] = []
        self.cache: dict[str, Any] = {}

    async def served(self, _api_version: str) -> set[str]:
        return set()

    async def get(self, kind: Any, _ns: str | None, name: str, sub: str = "") -> dict[str, Any] | None:
        self.reads.append((kind.kind, name))
        return self.cr if kind.kind == "DeepSeekDeployment" else self.objects.get((kind.kind, name))

    async def refresh(self, kind: Any, ns: str, name: str) -> dict[str, Any] | None:
        return await self.get(kind, ns, name)

    async def list(self, kind: Any, _ns: str | None, _selector: dict[str, str]) -> list[dict[str, Any]]:
        return [o for (k, _), o in self.objects.items() if k == kind.kind and k != "Pod"]

    async def apply(self, desired: dict[str, Any], create_only: bool = False) -> str:
        key = (desired["kind"], desired["metadata"]["name"])
        if create_only and key in self.objects:
            return "unchanged"
        self.objects[key] = json.loads(json.dumps(desired))
        return "created"

    async def delete(self, kind: Any, _ns: str | None, name: str) -> None:
        self.objects.pop((kind.kind, name), None)

    async def list_page(self, kind: Any, _ns: str | None, params: dict[str, str]) -> Any:
        self.reads.append((kind.kind, params["fieldSelector"]))
        name = params["fieldSelector"].removeprefix("metadata.name=")
        found = self.objects.get((kind.kind, name))
        return ([found] if found else [], "1", "")

    async def patch(self, kind: Any, _ns: str | None, name: str, patch: dict[str, Any],
                    sub: str = "") -> dict[str, Any]:
        if kind.kind == "DeepSeekDeployment":
            self.cr = {**self.cr, "status": patch["status"]}
            return self.cr
        self.patches.append((kind.kind, name, patch))
        obj = self.objects[(kind.kind, name)]
        obj["spec"]["resources"]["requests"].update(patch["spec"]["resources"]["requests"])
        return obj


def cache_condition(api: FakeApi) -> tuple[str, str, str] | None:
    found = [c for c in api.cr["status"]["conditions"] if c["type"] == "ModelCacheReady"]
    return (found[0]["status"], found[0]["reason"], found[0]["message"]) if found else None


async def reconciled(api: FakeApi) -> list[tuple[str, str, str]]:
    from deepseek_operator.reconcile import reconcile

    events: list[tuple[str, str, str]] = []

    async def notify(kind: str, reason: str, message: str) -> None:
        events.append((kind, reason, message))

    await reconcile(api.cr, api, notify)  # type: ignore[arg-type]
    return events


@pytest.mark.parametrize(("modes", "replicas", "variants", "warned"), [
    (["ReadWriteOnce"], 2, [], True),
    (["ReadWriteOnce"], 1, [{"name": "canary", "weight": 10, "replicas": 1}], True),  # two pods share it
    (["ReadWriteOncePod"], 2, [], True),
    (["ReadWriteOnce"], 1, [], False),
    # An autoscaled variant may run its maxReplicas: one pod now, up to three later (2 more than now).
    (["ReadWriteOnce"], 1, [{"name": "canary", "weight": 10, "replicas": 1,
                             "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}], True),
    (["ReadOnlyMany"], 3, [], False),
    (["ReadWriteMany", "ReadWriteOnce"], 3, [], False),
])
async def test_a_read_write_once_cache_with_several_pods_is_a_warning_in_status(
        modes: list[str], replicas: int, variants: list[dict[str, Any]], warned: bool) -> None:
    model = {**MODEL, "cache": {**MODEL["cache"], "accessModes": modes}}
    api = FakeApi({"model": model, "replicas": replicas, "variants": variants})
    events = await reconciled(api)
    cond = cache_condition(api)
    assert cond is not None
    if warned:
        assert cond[:2] == ("False", "ReadWriteOnceMultiAttach") and "model.cache.accessModes" in cond[2]
        most = replicas + sum(max(v["replicas"], v.get("autoscaling", {}).get("maxReplicas", 0)) for v in variants)
        assert f"{most} worker pods mount it" in cond[2]
        assert ("Warning", "ReadWriteOnceMultiAttach", cond[2]) in events
        again = await reconciled(api)
        assert not [e for e in again if e[1] == "ReadWriteOnceMultiAttach"]  # one Event, not one per reconcile
    else:
        assert cond[:2] == ("True", "Configured")
        assert not [e for e in events if e[1] == "ReadWriteOnceMultiAttach"]


async def test_no_model_cache_no_condition() -> None:
    api = FakeApi({"model": {"id": MODEL["id"]}, "replicas": 3})
    await reconciled(api)
    assert cache_condition(api) is None


# -- a new cache.size grows the claim in place (cache_claims.py) ---------------------------------

def storage_class(name: str, expands: bool) -> dict[str, Any]:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": "csi.example.com", "allowVolumeExpansion": expands}


async def cached_api(size: str, klass: str, expands: bool) -> FakeApi:
    """A resource whose cache was created at 40Gi and is Bound; then the spec asks for `size`."""
    model = {**MODEL, "cache": {**MODEL["cache"], "storageClassName": klass}}
    api = FakeApi({"model": model, "replicas": 1})
    api.objects[("StorageClass", klass)] = storage_class(klass, expands)
    await reconciled(api)
    claim = api.objects[("PersistentVolumeClaim", cache_name(OWNER, spec(model).model))]
    claim["status"] = {"phase": "Bound", "capacity": {"storage": "40Gi"}}
    api.cr["spec"]["model"]["cache"]["size"] = size
    api.cr["metadata"]["generation"] = 3
    return api


async def test_a_larger_size_expands_the_same_claim_and_downloads_nothing_again() -> None:
    api = await cached_api("80Gi", "expandable", expands=True)
    before = {k for k in api.objects if k[0] in ("PersistentVolumeClaim", "Job")}
    await reconciled(api)
    (name,) = [n for k, n in before if k == "PersistentVolumeClaim"]
    assert api.patches == [("PersistentVolumeClaim", name, {"spec": {"resources": {"requests": {"storage": "80Gi"}}}})]
    assert {k for k in api.objects if k[0] in ("PersistentVolumeClaim", "Job")} == before  # no new cache, no new Job
    assert cache_condition(api) == ("True", "Configured", "the model cache claims serve every worker pod")
    await reconciled(api)
    assert len(api.patches) == 1  # the claim asks for 80Gi now: nothing more to do
    assert [r for r in api.reads if r[0] == "StorageClass"] == [("StorageClass", "metadata.name=expandable")]


async def test_a_class_without_expansion_keeps_the_size_and_says_so_reading_the_class_once() -> None:
    api = await cached_api("80Gi", "fixed", expands=False)
    events = await reconciled(api)
    await reconciled(api)
    assert api.patches == []
    status, reason, message = cache_condition(api) or ("", "", "")
    assert (status, reason) == ("False", "CacheExpansionUnsupported")
    assert "StorageClass fixed does not allow volume expansion" in message and "keeps 40Gi" in message
    assert ("Warning", "CacheExpansionUnsupported", message) in events
    assert len([r for r in api.reads if r[0] == "StorageClass"]) == 1  # once per change, not per reconcile


async def test_a_smaller_size_cannot_shrink_the_claim_and_says_so() -> None:
    api = await cached_api("20Gi", "expandable", expands=True)
    await reconciled(api)
    assert api.patches == []
    status, reason, message = cache_condition(api) or ("", "", "")
    assert (status, reason) == ("False", "CacheShrinkUnsupported") and "cannot shrink" in message
    assert not [r for r in api.reads if r[0] == "StorageClass"]


def test_an_unbound_claim_is_resized_once_bound() -> None:
    from deepseek_operator.cache_claims import resize

    claim = {"metadata": {"name": "c"}, "spec": {"resources": {"requests": {"storage": "40Gi"}}},
             "status": {"phase": "Pending"}}
    assert resize(claim, "80Gi", storage_class("x", True)) == (False, None)
    assert resize({**claim, "status": {"phase": "Bound"}}, "80Gi", storage_class("x", True)) == (True, None)
    assert resize({**claim, "status": {"phase": "Bound"}}, "40960Mi", storage_class("x", True)) == (False, None)


@pytest.mark.parametrize("size", ["40Gi", "80Gi"])
async def test_a_cache_named_by_an_older_release_keeps_its_name(size: str) -> None:
    """Releases before the in-place growth hashed the size into the name: such a live cache is adopted,
    so an operator upgrade neither downloads again nor moves the workers to another claim; a size
    raised since then grows it."""
    model = spec(MODEL).model
    legacy = cache_name(OWNER, model, with_size=True)
    assert legacy != cache_name(OWNER, model)
    api = FakeApi({"model": {**MODEL, "cache": {**MODEL["cache"], "size": size}}, "replicas": 1})
    api.objects[("PersistentVolumeClaim", legacy)] = {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": legacy},
        "spec": {"resources": {"requests": {"storage": "40Gi"}}}, "status": {"phase": "Bound"}}
    await reconciled(api)
    names = {name for kind, name in api.objects if kind in ("PersistentVolumeClaim", "Job", "ConfigMap")}
    assert names == {legacy} | {n for k, n in api.objects if k == "ConfigMap" and not n.startswith("chat-model-")}
    assert api.cr["status"]["download"]["claimName"] == legacy


# -- plan from the real config (config_geometry.py) -----------------------------------------------

V2_LITE_CONFIG = {"model_type": "deepseek_v2", "num_hidden_layers": 27, "hidden_size": 2048,
                  "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 102400,
                  "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
                  "n_routed_experts": 64, "moe_intermediate_size": 1408, "first_k_dense_replace": 1,
                  "parameters": 15_700_000_000}


def test_a_published_config_is_the_catalogues_geometry_for_the_same_model() -> None:
    from dataclasses import replace

    from deepseek_operator import architectures
    from deepseek_operator.config_geometry import architecture_from_config

    found = architecture_from_config(V2_LITE_CONFIG, checkpoint_bytes=31_400_000_000)
    assert found == replace(architectures.CATALOGUE["deepseek-v2-lite"], checkpoint_bytes=31_400_000_000)
    gqa = architecture_from_config({"num_hidden_layers": 28, "hidden_size": 3584, "num_attention_heads": 28,
                                    "num_key_value_heads": 4, "vocab_size": 152064, "parameters": 7_616_000_000})
    assert gqa is not None and (gqa.kv_heads, gqa.head_dim, gqa.mla) == (4, 128, False)
    for broken in ({}, {**V2_LITE_CONFIG, "parameters": "many"}, {**V2_LITE_CONFIG, "hidden_size": True},
                   {**V2_LITE_CONFIG, "num_hidden_layers": -1}):
        assert architecture_from_config(broken) is None  # the download pod's word, parsed defensively


async def test_a_renamed_model_is_planned_from_its_downloaded_config() -> None:
    """Unknown by name before the download; after it, the plan from the checkpoint's own config.json."""
    from deepseek_operator.gpufit import DOWNLOADED

    model = {"id": "acme/support-bot-v3", "cache": {"enabled": True, "size": "40Gi"}}
    api = FakeApi({"model": model, "replicas": 1, "resources": {"gpus": 1, "gpuMemory": "80Gi"}})
    await reconciled(api)
    fit = api.cr["status"]["gpuFit"]
    assert fit["fits"] == "Unknown" and "not in the catalogue" in fit["message"]
    name = cache_name(OWNER, spec(model).model)
    report = {"phase": "Complete", "bytesDone": 31_400_000_000, "bytesTotal": 31_400_000_000,
              "config": V2_LITE_CONFIG}
    api.objects[("ConfigMap", name)]["data"] = {"progress": json.dumps(report)}
    api.objects[("Job", name)]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    await reconciled(api)
    fit = api.cr["status"]["gpuFit"]
    assert (fit["fits"], fit["model"]) == ("True", DOWNLOADED), fit
    assert fit["checkpointSize"] == "29.2Gi" and fit["weightsPerGPU"].endswith("Gi")
