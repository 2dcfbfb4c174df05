"""Where a model on a local volume is: the folder `from_pretrained` loads (docs/api.md, pvc source).

The operator mounts a pvc source's claim (its `subPath`, if set) at one directory and passes that
directory as the model, with the model id as the served name. The rule, first match wins:
1. the directory itself holds `config.json`: the subPath points at the model's folder;
2. `<directory>/<id>` holds `config.json`: an HF-style folder named by the id under the claim
   (`hf download org/name --local-dir <claim>/org/name`), so one claim can hold many models;
3. the Hugging Face cache layout, `<directory>/[hub/]models--org--name/snapshots/<commit>`, where the
   commit is `refs/<revision>` or the revision itself (a claim filled as HF_HOME or HF_HUB_CACHE).
Anything else is `ModelNotFound`, naming every place looked at. A model that is not a local
directory (a hub id) is returned as it is.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"


class ModelNotFound(FileNotFoundError):
    """No model folder under a local directory; str() names the places looked at."""


def _is_model(path: Path) -> bool:
    return (path / CONFIG).is_file()


def _hub_cache_snapshot(root: Path, model_id: str, revision: str) -> Path:
    """The snapshot folder of `model_id` at `revision` in a Hugging Face cache under `root`."""
    repo = "models--" + model_id.replace("/", "--")
    for cache in (root, root / "hub"):
        snapshots = cache / repo / "snapshots"
        ref = cache / repo / "refs" / revision
        commit = ref.read_text().strip() if ref.is_file() else revision
        if _is_model(snapshots / commit):
            return snapshots / commit
    return root / repo / "snapshots" / revision


def candidates(root: Path, model_id: str, revision: str) -> list[Path]:
    """The folders tried, in the rule's order (without an id: the directory itself only)."""
    found = [root]
    if model_id and not model_id.startswith("/"):
        found += [root / model_id, _hub_cache_snapshot(root, model_id, revision)]
    return found


def resolve_local_model(model: str, model_id: str = "", revision: str = "main") -> str:
    """The folder to load for `model`; `model` itself when it is not a local directory."""
    root = Path(model)
    if not root.is_dir():
        return model
    tried = candidates(root, model_id, revision)
    for path in tried:
        if _is_model(path):
            return str(path)
    looked = ", ".join(str(p) for p in tried)
    raise ModelNotFound(f"no {CONFIG} in {looked}: put the model's files (config.json, *.safetensors, the "
                        "tokenizer) in the claim's subPath, or in a folder named by model.id under it")
