#!/usr/bin/env bash
# Copy the CRDs from crds/ (the source of truth) into the Helm chart's crds/ folder, byte for byte.
# Usage: scripts/sync-chart-crds.sh [--check]
#   --check  change nothing; exit 1 and name the files when the chart's copy differs.
# tests/delivery/test_chart.py runs the same comparison, so a stale copy fails `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
src=crds
dest=charts/deepseek-operator/crds
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 64 ;;
esac

shopt -s nullglob
# CRD files only: crds/kustomization.yaml is for kustomize, and Helm would try to install it.
sources=()
for file in "$src"/*.yaml; do
  [ "$(basename "$file")" = kustomization.yaml ] || sources+=("$file")
done
if [ ${#sources[@]} -eq 0 ]; then
  echo "no CRDs in $src/" >&2
  exit 1
fi

stale=0
for file in "${sources[@]}"; do
  target="$dest/$(basename "$file")"
  if cmp -s "$file" "$target"; then
    continue
  fi
  if $check; then
    echo "stale: $target differs from $file" >&2
    stale=1
  else
    mkdir -p "$dest"
    cp "$file" "$target"
    echo "copied $file -> $target"
  fi
done
# A CRD removed from crds/ must leave the chart too.
for target in "$dest"/*.yaml; do
  if [ ! -e "$src/$(basename "$target")" ]; then
    if $check; then
      echo "stale: $target has no source in $src/" >&2
      stale=1
    else
      rm -- "$target"
      echo "removed $target"
    fi
  fi
done
exit "$stale"
