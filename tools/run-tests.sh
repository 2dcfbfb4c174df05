#!/usr/bin/env bash
# `make test`'s runner: the whole suite as two pytest processes at once, so that the worker's suites
# (tests/worker: CPU-bound, a model in each process) run while the cluster suites wait on the control
# plane (tests/e2e and the rest spend most of their wall time waiting: about 5 CPU minutes in 20).
#
# Contract: every test under tests/ runs exactly once, in one of the two lanes; the exit status is
# non-zero when either lane fails (pytest's own codes, "no tests collected" included). Extra
# arguments go to both lanes. The worker lane's output is printed after the other's, whole.
#
# The shared control plane (make cluster) is started here, before either lane: each lane then finds
# it running and leaves it running, so neither stops it under the other. It is stopped at the end
# only when this script started it.
set -uo pipefail
cd "$(dirname "$0")/.."
pytest=(.venv/bin/pytest -q -p no:cacheprovider)
cluster_dir=${CLUSTER_DIR:-$PWD/.cluster}

.venv/bin/python - "$cluster_dir" <<'EOF'
import pathlib, sys
from deepseek_sandbox.real_cluster import start_control_plane
sys.exit(10 if start_control_plane(pathlib.Path(sys.argv[1])) else 0)
EOF
case $? in
  0) started=0 ;;
  10) started=1 ;;
  *) echo "run-tests: the control plane did not start" >&2; exit 1 ;;
esac

worker_log=$(mktemp)
"${pytest[@]}" tests/worker "$@" >"$worker_log" 2>&1 &
worker_pid=$!
stop_lanes() { kill "$worker_pid" 2>/dev/null; }
trap stop_lanes INT TERM

"${pytest[@]}" --ignore=tests/worker "$@"
rest=$?
wait "$worker_pid"
worker=$?

echo "--- tests/worker (run alongside the suites above) ---"
cat "$worker_log"
rm -f "$worker_log"
if [ "$started" = 1 ]; then
  CLUSTER_DIR=$cluster_dir tools/control-plane/down.sh >/dev/null 2>&1 || true
fi
echo "run-tests: tests/worker exited $worker, the other suites $rest"
[ "$rest" = 0 ] && [ "$worker" = 0 ]
