#!/usr/bin/env bash
# `make cluster-down`: stop every process up.sh started, by the PIDs it recorded (never by name),
# newest first, and wait until each has exited. Keeps $CLUSTER_DIR (logs, audit log) for reading;
# the next `make cluster` starts from empty state.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUN=${CLUSTER_DIR:-$(cd "$HERE/../.." && pwd)/.cluster}
[ -d "$RUN/pids" ] || exit 0
for name in keda-adapter keda-operator lws-controller kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  file="$RUN/pids/$name"
  [ -f "$file" ] || continue
  pid=$(cat "$file")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$file"
  echo "cluster: stopped $name ($pid)" >&2
done
