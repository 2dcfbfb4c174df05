#!/usr/bin/env bash
# Build a real Kubernetes control plane from Go modules only (no release downloads, no Docker):
# kube-apiserver, kube-controller-manager and kube-scheduler from k8s.io/kubernetes, etcd from
# go.etcd.io/etcd/server/v3 and kwok from sigs.k8s.io/kwok, every version pinned below.
#
# Binaries go to a cache outside the work tree, keyed by the versions, so a fresh clone on the same
# machine (CI's) reuses them; they are rebuilt only when missing. Prints the bin directory on stdout.
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules at v0.0.0 and maps them with
# `replace => ./staging/...`, which consumers ignore and the proxy cannot serve
# (kubernetes/kubernetes#79384). Our own main module replaces each staging module with its published
# v0.X.Y release instead.
set -euo pipefail
KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.13}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
CACHE=${DEEPSEEK_CACHE_DIR:-$HOME/.cache/deepseek-operator}
ROOT="$CACHE/control-plane/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
BIN="$ROOT/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)

log() { printf 'control-plane build: %s\n' "$*" >&2; }

all_built() {
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
  [ -s "$ROOT/kwok/stages/pod-ready.yaml" ]
}

# The staging replace block, read from the real k8s.io/kubernetes go.mod of this version.
staging_replaces() {
  local gomod=$1 minor=v0.${KUBE_VERSION#v1.}
  sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*|\1|p' "$gomod" \
    | sort -u | while read -r mod; do printf '\t%s => %s %s\n' "$mod" "$mod" "$minor"; done
}

build_kubernetes() {
  local dir="$ROOT/src/kubernetes" gomod go_line godebug_line
  mkdir -p "$dir" "$BIN"
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  go_line=$(grep -m1 '^go ' "$gomod")
  godebug_line=$(grep -m1 '^godebug ' "$gomod" || true)
  {
    printf 'module local.invalid/k8s-control-plane\n\n%s\n\n%s\n\n' "$go_line" "$godebug_line"
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
    staging_replaces "$gomod"
    printf ')\n'
  } > "$dir/go.mod"
  cat > "$dir/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
EOF
  log "resolving the k8s.io/kubernetes $KUBE_VERSION module graph"
  (cd "$dir" && go mod tidy -e >/dev/null 2>"$dir/tidy.log" || true)
  local major minor ldflags
  major=$(echo "$KUBE_VERSION" | cut -d. -f1 | tr -d v); minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "compiling kube-apiserver, kube-controller-manager, kube-scheduler (cold: tens of minutes)"
  (cd "$dir" && go build -tags tools -trimpath -pgo=off -ldflags "$ldflags" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
}

build_etcd() {
  local dir="$ROOT/src/etcd"
  mkdir -p "$dir"
  printf 'module local.invalid/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$dir/tools.go"
  log "compiling etcd $ETCD_VERSION"
  (cd "$dir" && go mod tidy -e >/dev/null 2>"$dir/tidy.log" || true)
  (cd "$dir" && go build -tags tools -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  local kwok_dir f
  log "compiling kwok $KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  kwok_dir=$(cd "$ROOT" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  # kwok runs no stages unless given some: keep its own (fast node and pod lifecycles) beside the
  # binary; up.sh composes them with ours (tools/control-plane/kwok-stages.yaml).
  mkdir -p "$ROOT/kwok/stages.tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cp "$kwok_dir/kustomize/stage/$f" "$ROOT/kwok/stages.tmp/"
  done
  chmod -R u+w "$ROOT/kwok/stages.tmp"
  rm -rf "$ROOT/kwok/stages" && mv "$ROOT/kwok/stages.tmp" "$ROOT/kwok/stages"
}

main() {
  command -v go >/dev/null || { log "no Go toolchain on PATH (Go >= 1.26 is required)"; exit 1; }
  if all_built; then echo "$BIN"; exit 0; fi
  mkdir -p "$BIN"
  # One build at a time per version set: a second caller waits, then finds the binaries built.
  exec 9>"$ROOT/build.lock"
  flock 9
  if all_built; then echo "$BIN"; exit 0; fi
  # A build cache of its own, removed after: a cold build leaves 3-4 GB in ~/.cache/go-build that
  # nothing reuses (the binaries are cached by version), and CI machines have run out of disk.
  gocache=$(mktemp -d)
  trap 'rm -rf "$gocache"' EXIT
  export GOCACHE=$gocache
  [ -x "$BIN/etcd" ] || build_etcd
  [ -s "$ROOT/kwok/stages/pod-ready.yaml" ] && [ -x "$BIN/kwok" ] || build_kwok
  [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ] \
    || build_kubernetes
  all_built || { log "incomplete build in $BIN"; exit 1; }
  echo "$BIN"
}

main "$@"
