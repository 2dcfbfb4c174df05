"""A pvc source's layouts (worker engine/source.py, docs/api.md): the claim's subPath mounted at one
directory, the model id as the served name; the worker finds the model folder in it.

The claims are built from the tiny model (deepseek_worker.testing.tiny) in each layout a platform
engineer would fill a claim with; one of them is loaded for real with the engine's loader.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deepseek_worker.engine.loading import load, resolve_model_path
from deepseek_worker.engine.source import ModelNotFound, resolve_local_model
from deepseek_worker.testing.tiny import build_tiny_model
from deepseek_worker.types import EngineConfig

MODEL_ID = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tiny() -> Path:
    return build_tiny_model()


def fill(folder: Path, tiny: Path) -> Path:
    """The model's files in `folder`, as `hf download --local-dir folder` leaves them."""
    shutil.copytree(tiny, folder, ignore=shutil.ignore_patterns(".*"))
    return folder


def test_the_subpath_is_the_model_folder(tiny: Path, tmp_path: Path) -> None:
    mount = fill(tmp_path / "mount", tiny)
    assert resolve_local_model(str(mount), MODEL_ID) == str(mount)


def test_an_hf_style_folder_named_by_the_id_under_the_claim(tiny: Path, tmp_path: Path) -> None:
    mount = tmp_path / "mount"
    folder = fill(mount / MODEL_ID, tiny)
    fill(mount / "other-org" / "other-model", tiny)  # a claim may hold several models
    assert resolve_local_model(str(mount), MODEL_ID) == str(folder)


@pytest.mark.parametrize("under", ["", "hub"])
def test_the_hugging_face_cache_layout_at_the_revision(tiny: Path, tmp_path: Path, under: str) -> None:
    mount = tmp_path / "mount"
    repo = mount / under / "models--deepseek-ai--DeepSeek-R1-Distill-Qwen-7B"
    snapshot = fill(repo / "snapshots" / COMMIT, tiny)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    assert resolve_local_model(str(mount), MODEL_ID, "main") == str(snapshot)
    assert resolve_local_model(str(mount), MODEL_ID, COMMIT) == str(snapshot)  # a pinned commit


def test_nothing_there_names_every_place_looked_at(tmp_path: Path) -> None:
    (tmp_path / "mount" / "unrelated").mkdir(parents=True)
    with pytest.raises(ModelNotFound) as missing:
        resolve_local_model(str(tmp_path / "mount"), MODEL_ID)
    text = str(missing.value)
    assert str(tmp_path / "mount" / MODEL_ID) in text and "models--deepseek-ai--" in text and "subPath" in text


def test_hub_ids_and_tiny_pass_through(tmp_path: Path) -> None:
    assert resolve_local_model(MODEL_ID, MODEL_ID) == MODEL_ID
    assert resolve_model_path("tiny") == str(build_tiny_model())


def test_the_engine_loads_an_hf_style_folder_under_the_claim(tiny: Path, tmp_path: Path) -> None:
    """What the operator renders for a pvc source with subPath `models` and a relative id: the mount
    as the model, the id as the served name (render/worker_env.py)."""
    mount = tmp_path / "claim" / "models"
    folder = fill(mount / MODEL_ID, tiny)
    loaded = load(EngineConfig(model=str(mount), served_model_name=MODEL_ID, max_model_len=128, max_batch_size=1))
    assert loaded.path == str(folder)
    assert loaded.model.config.model_type == "deepseek_v3"
