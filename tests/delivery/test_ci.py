""".gitlab-ci.yml: valid for GitLab, the promised pipeline shape, and runnable by gitlab-ci-local."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, VENV_BIN, run

CI_FILE = ROOT / ".gitlab-ci.yml"
GITLAB_CI_LOCAL = ROOT / ".tools" / "npm" / "node_modules" / ".bin" / "gitlab-ci-local"
GCL_TIMEOUT = 60


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(CI_FILE.read_text())
    return loaded


def job(ci: dict[str, Any], name: str) -> dict[str, Any]:
    """A job with its `extends` chain merged (shallow, like GitLab for top-level keys)."""
    merged: dict[str, Any] = {}
    spec = ci[name]
    for parent in [spec.get("extends")] if isinstance(spec.get("extends"), str) else spec.get("extends", []):
        merged.update(job(ci, parent))
    merged.update(spec)
    return merged


def test_gitlab_schema() -> None:
    run(
        [
            VENV_BIN / "check-jsonschema",
            "--builtin-schema",
            "vendor.gitlab-ci",
            "--data-transform",
            "gitlab-ci",
            CI_FILE,
        ]
    )


def test_stages(ci: dict[str, Any]) -> None:
    assert ci["stages"] == ["lint", "test", "build", "deploy"]
    assert job(ci, "lint")["script"] == ["make lint"]
    assert job(ci, "test")["script"] == ["make test"]
    assert job(ci, "lint")["image"].startswith("python:3.11")


@pytest.mark.parametrize(
    ("name", "image", "dockerfile"),
    [
        ("build:worker", "worker", "worker/Dockerfile"),
        ("build:operator", "operator", "operator/Dockerfile"),
    ],
)
def test_daemonless_builds_record_the_digest(ci: dict[str, Any], name: str, image: str, dockerfile: str) -> None:
    """Rootless BuildKit (kaniko is archived upstream), pinned, no Docker daemon; the pushed digest recorded."""
    build = job(ci, name)
    assert build["stage"] == "build"
    assert re.fullmatch(r"moby/buildkit:v\d+\.\d+\.\d+-rootless", build["image"]["name"]), build["image"]
    assert "services" not in build, "no Docker daemon (dind) in the build"
    # GitLab deep-merges `variables` through `extends`: the template's flag reaches both jobs.
    assert ci[".buildkit"]["variables"] == {"BUILDKITD_FLAGS": "--oci-worker-no-process-sandbox"}, "rootless"
    script = "\n".join(build["script"])
    assert "buildctl-daemonless.sh build" in script and "--metadata-file" in script
    assert '--opt filename="$DOCKERFILE"' in script, "the Dockerfile (and its own .dockerignore) by name"
    assert "type=image,name=$CI_REGISTRY_IMAGE/$IMAGE_NAME:$CI_COMMIT_SHA,push=true" in script
    assert build["variables"] == {"DOCKERFILE": dockerfile, "IMAGE_NAME": image, "IMAGE_VAR": f"{image.upper()}_IMAGE"}
    assert build["artifacts"]["reports"]["dotenv"] == "build.env"
    assert "$IMAGE_VAR=$CI_REGISTRY_IMAGE/$IMAGE_NAME@$DIGEST" in script
    assert "$CI_REGISTRY_PASSWORD" not in script.split("buildctl-daemonless.sh")[1], "no password on a command line"


def test_no_archived_builder_is_left() -> None:
    assert "kaniko" not in CI_FILE.read_text().replace("kaniko is archived upstream", "")


@pytest.mark.parametrize(("name", "build", "image_var"), [("sign:worker", "build:worker", "WORKER_IMAGE"),
                                                          ("sign:operator", "build:operator", "OPERATOR_IMAGE")])
def test_every_built_image_is_signed_keyless_by_digest(ci: dict[str, Any], name: str, build: str,
                                                       image_var: str) -> None:
    """cosign keyless with the job's GitLab OIDC token (aud sigstore), on the digest the build recorded."""
    sign, template = job(ci, name), ci[".sign"]
    assert sign["stage"] == "build"
    assert sign["needs"] == [{"job": build, "artifacts": True}], "the build's dotenv artifact holds the digest"
    assert sign["variables"] == {"IMAGE_VAR": image_var}
    assert template["variables"]["COSIGN_YES"] == "true", "non-interactive"
    assert sign["id_tokens"] == {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}}, "cosign reads SIGSTORE_ID_TOKEN"
    image = sign["image"] if isinstance(sign["image"], str) else sign["image"]["name"]
    assert ":" in image and not image.endswith(":latest"), "a pinned signing image"
    script = sign["script"]
    assert script[0] == "apk add --no-cache cosign"
    assert 'IMAGE_REF="$(printenv "$IMAGE_VAR")"' in script
    assert any("@sha256:[0-9a-f]{64}$" in line and "exit 1" in line for line in script), "refuses a non-digest"
    (signing,) = [line for line in script if line.startswith("cosign sign")]
    assert signing.endswith(' "$IMAGE_REF"'), "signs the pushed digest, never a tag"
    assert "--key" not in signing, "keyless: no long-lived key"
    assert "$CI_COMMIT_SHA" in signing, "the commit is an annotation of the signature"
    joined = "\n".join(script)
    assert "$CI_REGISTRY_PASSWORD" not in signing and "-p " not in joined, "no password on a command line"
    assert "DOCKER_CONFIG" in joined, "registry credentials for pushing the signature, as the build job writes them"
    (verify,) = [line for line in script if "cosign verify" in line]
    assert '--certificate-identity "$CI_PROJECT_URL//$CI_CONFIG_PATH@$REF"' in verify
    assert '--certificate-oidc-issuer "$CI_SERVER_URL"' in verify
    assert list(ci).index(name) > list(ci).index(build), "listed after its build"


def test_only_the_signing_jobs_get_an_oidc_token(ci: dict[str, Any]) -> None:
    """The build jobs run the Dockerfiles' RUN steps (third-party installs): no token that signs as us."""
    with_token = sorted(name for name in ci if isinstance(ci[name], dict) and not name.startswith(".")
                        and "id_tokens" in job(ci, name))
    assert with_token == ["sign:operator", "sign:worker"]


def test_deploy_jobs_need_the_signatures(ci: dict[str, Any]) -> None:
    for name in ("deploy:staging", "deploy:production"):
        needed = {n["job"]: n["artifacts"] for n in job(ci, name)["needs"]}
        assert needed["sign:worker"] is False and needed["sign:operator"] is False, name


def test_deploy_jobs(ci: dict[str, Any]) -> None:
    staging, production = job(ci, "deploy:staging"), job(ci, "deploy:production")
    main_only = "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"
    assert staging["rules"] == [{"if": main_only}]
    assert production["rules"] == [{"if": main_only, "when": "manual"}]
    assert staging["environment"]["name"] == "staging"
    assert production["environment"]["name"] == "production"
    for deploy in (staging, production):
        assert deploy["stage"] == "deploy"
        assert deploy["script"] == [
            'scripts/deploy.sh "$DSD_NAME" "$WORKER_IMAGE" --namespace "$DSD_NAMESPACE" --timeout "$DEPLOY_TIMEOUT"'
        ]
        needed = {n["job"] for n in deploy["needs"]}
        assert {"build:worker", "build:operator"} <= needed
        assert deploy["timeout"] == "4h", "a cap above the derived deadline, so deploy.sh's verdict comes first"
    assert {"job": "deploy:staging", "artifacts": False} in production["needs"]
    assert ci["variables"]["DEPLOY_TIMEOUT"] == "auto", "deploy.sh derives the deadline from the resource"


def gitlab_ci_local(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not GITLAB_CI_LOCAL.exists():
        pytest.skip("gitlab-ci-local is missing: run tools/install-gitlab-ci-local.sh")
    if shutil.which("rsync") is None:
        pytest.skip("gitlab-ci-local needs rsync (tools/install-apt.sh)")
    return subprocess.run(
        [str(GITLAB_CI_LOCAL), *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=GCL_TIMEOUT,
        env=env or dict(os.environ),
    )


@pytest.fixture
def ci_repo(tmp_path: Path) -> Path:
    """A scratch git repository on branch main holding only the pipeline file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(CI_FILE, repo / ".gitlab-ci.yml")
    git = ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci"]
    for cmd in (["init", "-q", "-b", "main"], ["add", ".gitlab-ci.yml"], ["commit", "-q", "-m", "ci"]):
        subprocess.run([*git, *cmd], cwd=repo, check=True, capture_output=True, timeout=30)
    return repo


def test_gitlab_ci_local_lists_the_pipeline(ci_repo: Path) -> None:
    proc = gitlab_ci_local(ci_repo, "--list")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert list(rows) == ["lint", "test", "build:worker", "build:operator", "sign:worker", "sign:operator",
                          "deploy:staging", "deploy:production"]
    assert rows["deploy:production"][:2] == ["deploy", "manual"]
    assert rows["deploy:staging"][:2] == ["deploy", "on_success"]


def test_gitlab_ci_local_runs_the_lint_job_in_shell_mode(ci_repo: Path, tmp_path: Path) -> None:
    """The lint job runs in the local shell; a stub `make` records what the job asked for."""
    stub = tmp_path / "stub"
    stub.mkdir()
    record = tmp_path / "make.args"
    (stub / "make").write_text(f'#!/bin/sh\necho "$@" >> "{record}"\n')
    (stub / "make").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    proc = gitlab_ci_local(ci_repo, "--force-shell-executor", "lint", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS" in proc.stdout and "lint" in proc.stdout
    assert record.read_text().split() == ["lint"]


def test_gitlab_ci_local_fails_a_failing_job(ci_repo: Path, tmp_path: Path) -> None:
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "make").write_text("#!/bin/sh\nexit 3\n")
    (stub / "make").chmod(0o755)
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    proc = gitlab_ci_local(ci_repo, "--force-shell-executor", "lint", env=env)
    assert proc.returncode == 1


# -- the build job itself, run by gitlab-ci-local with a stand-in for buildctl-daemonless.sh ----------------
REGISTRY_VARS = ["CI_REGISTRY=registry.example.com", "CI_REGISTRY_IMAGE=registry.example.com/acme/deepseek",
                 "CI_REGISTRY_USER=ci-user", "CI_REGISTRY_PASSWORD=s3cret", "CI_COMMIT_SHA=" + "c" * 40]
DIGEST = "sha256:" + "d" * 64


def stub_buildctl(tmp_path: Path, metadata: dict[str, str]) -> tuple[dict[str, str], Path]:
    """PATH with a buildctl-daemonless.sh that records its argv and the registry config, and writes
    `metadata` to the --metadata-file it is given (as buildctl does after a push)."""
    stub, record = tmp_path / "stub", tmp_path / "buildctl.json"
    stub.mkdir()
    script = stub / "buildctl-daemonless.sh"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
config = open(os.path.join(os.environ["DOCKER_CONFIG"], "config.json")).read()
json.dump({{"args": args, "config": config}}, open({str(record)!r}, "w"))
open(args[args.index("--metadata-file") + 1], "w").write(json.dumps({metadata!r}, indent=2))
""")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}, record


def variables(repo: Path, *pairs: str) -> list[str]:
    """--variable arguments; CI_PROJECT_DIR is the checkout, where a runner starts the job (gitlab-ci-local's
    shell executor runs there too but reports a /builds/... path for jobs with an image)."""
    return [arg for pair in (f"CI_PROJECT_DIR={repo}", *pairs) for arg in ("--variable", pair)]


def test_gitlab_ci_local_runs_the_build_job_and_records_the_digest(ci_repo: Path, tmp_path: Path) -> None:
    env, record = stub_buildctl(tmp_path, {"containerimage.digest": DIGEST, "image.name": "x"})
    proc = gitlab_ci_local(ci_repo, "--force-shell-executor", *variables(ci_repo, *REGISTRY_VARS), "build:worker",
                           env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (ci_repo / "build.env").read_text() == f"WORKER_IMAGE=registry.example.com/acme/deepseek/worker@{DIGEST}\n"
    called = json.loads(record.read_text())
    args = called["args"]
    assert args[0] == "build" and args[args.index("--opt") + 1] == "filename=worker/Dockerfile"
    assert f"type=image,name=registry.example.com/acme/deepseek/worker:{'c' * 40},push=true" in args
    assert "s3cret" not in " ".join(args), "the password reaches buildctl only through DOCKER_CONFIG"
    assert json.loads(called["config"])["auths"]["registry.example.com"]["auth"]


def test_gitlab_ci_local_fails_a_build_without_a_pushed_digest(ci_repo: Path, tmp_path: Path) -> None:
    env, _ = stub_buildctl(tmp_path, {"image.name": "x"})
    proc = gitlab_ci_local(ci_repo, "--force-shell-executor", *variables(ci_repo, *REGISTRY_VARS), "build:operator",
                           env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "buildctl recorded no pushed digest" in proc.stdout
    assert not (ci_repo / "build.env").exists()
