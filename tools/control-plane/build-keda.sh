#!/usr/bin/env bash
# Build KEDA (github.com/kedacore/keda/v2) for the test control plane: the operator (keda-operator)
# and the metrics apiserver (keda-adapter), from the Go module proxy, like build-lws.sh builds LWS.
# Prints the directory holding both binaries on stdout; the six KEDA CRDs of the same version (the
# module's config/crd/bases) are beside it, in ../crd, for up.sh to install. Optional: nothing in `make test` runs it;
# up.sh starts KEDA only with CLUSTER_KEDA=1 (docs/cluster.md, "KEDA").
#
# KEDA_VERSION v2.21.0 is the newest release this toolchain can build: v2.21.1 requires
# go >= 1.27.4, and this project builds with GOTOOLCHAIN=local (Go 1.26). v2.21.0 builds against
# k8s.io/* v0.36.4 and controller-runtime v0.24.1, next to the control plane's v1.36.3.
#
# KEDA links every scaler's SDK (Azure, AWS, GCP, Kafka, ...): a cold build downloads and compiles a
# lot. To keep the machine's disk small, the module download and the build cache live in a temporary
# directory deleted afterwards (KEDA_KEEP_GO_CACHES=1 keeps them under $ROOT/go); only the binaries
# stay, cached outside the work tree keyed by the version. Once built, this is a no-op.
# Exit 3 (with the reason on stderr) when it cannot build: no Go, a version this Go cannot build.
set -euo pipefail
KEDA_VERSION=${KEDA_VERSION:-v2.21.0}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -modcacherw"
CACHE=${DEEPSEEK_CACHE_DIR:-$HOME/.cache/deepseek-operator}
ROOT="$CACHE/control-plane/keda-$KEDA_VERSION"
BIN="$ROOT/bin"
MODULE=github.com/kedacore/keda/v2

log() { printf 'keda build: %s\n' "$*" >&2; }

built() { [ -x "$BIN/keda-operator" ] && [ -x "$BIN/keda-adapter" ]; }
done_() { built && [ -f "$ROOT/crd/keda.sh_scaledobjects.yaml" ]; }

main() {
  command -v go >/dev/null || { log "no Go toolchain on PATH"; exit 3; }
  if done_; then echo "$BIN"; exit 0; fi
  mkdir -p "$BIN"
  exec 9>"$ROOT/build.lock"
  flock 9
  if done_; then echo "$BIN"; exit 0; fi
  local work="$ROOT/go" start=$SECONDS
  rm -rf "$work"
  mkdir -p "$work/mod" "$work/cache" "$work/src"
  [ "${KEDA_KEEP_GO_CACHES:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
  export GOMODCACHE="$work/mod" GOCACHE="$work/cache"
  local answer dir
  answer=$(cd "$work" && go mod download -json "$MODULE@$KEDA_VERSION" 2>&1 || true)
  dir=$(printf '%s' "$answer" | python3 -c 'import json,sys
try: d = json.load(sys.stdin)
except ValueError: d = {}
print("" if d.get("Error") else d.get("Dir") or "")')
  if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
    log "$MODULE@$KEDA_VERSION: $(printf '%s' "$answer" | python3 -c 'import json,sys
s = sys.stdin.read()
try: print(json.loads(s).get("Error", "").splitlines()[0])
except (ValueError, IndexError): print(s[:300])')"
    exit 3
  fi
  cp -r "$dir/." "$work/src/" && chmod -R u+w "$work/src"
  rm -rf "$ROOT/crd.tmp" "$ROOT/crd" && cp -r "$work/src/config/crd/bases" "$ROOT/crd.tmp" && mv "$ROOT/crd.tmp" "$ROOT/crd"
  if built; then echo "$BIN"; exit 0; fi
  local ldflags="-s -w -X=$MODULE/version.Version=$KEDA_VERSION -X=$MODULE/version.GitCommit=$KEDA_VERSION"
  log "compiling keda-operator $KEDA_VERSION (cold: see docs/cluster.md)"
  (cd "$work/src" && go build -trimpath -pgo=off -ldflags "$ldflags" -o "$BIN/keda-operator.tmp" ./cmd/operator)
  log "keda-operator built after $((SECONDS - start)) s; compiling keda-adapter"
  (cd "$work/src" && go build -trimpath -pgo=off -ldflags "$ldflags" -o "$BIN/keda-adapter.tmp" ./cmd/adapter)
  log "keda-adapter built after $((SECONDS - start)) s; module download $(du -sh "$work/mod" | cut -f1)," \
    "build cache $(du -sh "$work/cache" | cut -f1) (deleted now unless KEDA_KEEP_GO_CACHES=1)"
  mv "$BIN/keda-operator.tmp" "$BIN/keda-operator"
  mv "$BIN/keda-adapter.tmp" "$BIN/keda-adapter"
  echo "$BIN"
}

main "$@"
