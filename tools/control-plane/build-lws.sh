#!/usr/bin/env bash
# Build the LeaderWorkerSet controller (kubernetes-sigs/lws, Go module sigs.k8s.io/lws) for the test
# control plane; up.sh runs it when this succeeds. Prints the binary's path on stdout.
#
# LWS_VERSION v0.10.0 builds against k8s.io/* v0.36.3 and controller-runtime v0.24.1, the same
# libraries as the control plane's v1.36.3. The binary is cached outside the work tree, keyed by the
# version, like build.sh's; it is rebuilt only when missing.
#
# Source: the Go module proxy (`go mod download sigs.k8s.io/lws@$LWS_VERSION`). Where the proxy
# refuses the module (this project's proxy answers 403 "This module version is not available" for
# sigs.k8s.io/lws), LWS_SRC may name a checkout of kubernetes-sigs/lws: a work tree or a git
# directory holding the tag $LWS_VERSION; unset, the copy vendored in third_party/lws/src (v0.10.0)
# is built. Dependencies always come from the proxy. Without a source this exits 3 with the reason,
# and up.sh runs the control plane without LeaderWorkerSets.
set -euo pipefail
LWS_VERSION=${LWS_VERSION:-v0.10.0}
HERE=$(cd "$(dirname "$0")" && pwd)
VENDORED="$HERE/../../third_party/lws/src"
VENDORED_VERSION=v0.10.0
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
CACHE=${DEEPSEEK_CACHE_DIR:-$HOME/.cache/deepseek-operator}
ROOT="$CACHE/control-plane/lws-$LWS_VERSION"
BIN="$ROOT/bin/lws-controller"

log() { printf 'lws build: %s\n' "$*" >&2; }

# Copy the module's source for $LWS_VERSION into $1: from the proxy, else from LWS_SRC.
fetch_source() {
  local dir=$1 answer mod_dir
  answer=$(cd "$ROOT" && go mod download -json "sigs.k8s.io/lws@$LWS_VERSION" 2>&1 || true)
  mod_dir=$(printf '%s' "$answer" | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("Dir") or "")
except ValueError: print("")')
  if [ -n "$mod_dir" ] && [ -d "$mod_dir" ]; then
    cp -r "$mod_dir/." "$dir/" && chmod -R u+w "$dir"
    return 0
  fi
  local why
  why=$(printf '%s' "$answer" | python3 -c 'import json,sys
try: print(json.load(sys.stdin).get("Error", "").splitlines()[0])
except (ValueError, IndexError): print(sys.stdin.read()[:200])')
  if [ -z "${LWS_SRC:-}" ]; then
    # The vendored copy (third_party/lws/src: the tag's api, cmd and pkg, without tests) keeps a
    # fresh machine able to build what this project's proxy refuses.
    [ "$LWS_VERSION" = "$VENDORED_VERSION" ] || {
      log "sigs.k8s.io/lws@$LWS_VERSION: the module proxy refused it (${why:-no answer}) and the vendored"
      log "source is $VENDORED_VERSION; set LWS_SRC to a checkout of kubernetes-sigs/lws at $LWS_VERSION"
      exit 3
    }
    log "module proxy refused sigs.k8s.io/lws@$LWS_VERSION (${why:-no answer}); building the vendored source"
    cp -r "$VENDORED/." "$dir/"
    return 0
  fi
  log "module proxy refused sigs.k8s.io/lws@$LWS_VERSION (${why:-no answer}); building from LWS_SRC=$LWS_SRC"
  if [ -f "$LWS_SRC/go.mod" ]; then
    grep -q '^module sigs.k8s.io/lws$' "$LWS_SRC/go.mod" || { log "$LWS_SRC is not sigs.k8s.io/lws"; exit 3; }
    cp -r "$LWS_SRC/." "$dir/"
    return 0
  fi
  # A git directory (bare or not): read the tag's tree without touching its work tree or index.
  local index="$ROOT/src.index"
  GIT_DIR="$LWS_SRC" GIT_INDEX_FILE="$index" git read-tree "$LWS_VERSION" \
    || { log "$LWS_SRC has no tag $LWS_VERSION"; exit 3; }
  GIT_DIR="$LWS_SRC" GIT_INDEX_FILE="$index" git --work-tree="$dir" checkout-index -f -- go.mod go.sum LICENSE \
    $(GIT_DIR="$LWS_SRC" GIT_INDEX_FILE="$index" git ls-files api client-go cmd config pkg)
  rm -f "$index"
}

main() {
  command -v go >/dev/null || { log "no Go toolchain on PATH"; exit 3; }
  if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
  mkdir -p "$ROOT/bin"
  exec 9>"$ROOT/build.lock"
  flock 9
  if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
  # A build cache of its own, removed after: a cold build leaves 3-4 GB in ~/.cache/go-build that
  # nothing reuses (the binaries are cached by version), and CI machines have run out of disk.
  gocache=$(mktemp -d)
  trap 'rm -rf "$gocache"' EXIT
  export GOCACHE=$gocache
  local dir="$ROOT/src"
  rm -rf "$dir" && mkdir -p "$dir"
  fetch_source "$dir"
  log "compiling the LeaderWorkerSet controller $LWS_VERSION (cold: several minutes)"
  (cd "$dir" && go build -trimpath -pgo=off \
    -ldflags "-s -w -X sigs.k8s.io/lws/pkg/version.GitVersion=$LWS_VERSION" -o "$BIN.tmp" ./cmd)
  mv "$BIN.tmp" "$BIN"
  echo "$BIN"
}

main "$@"
