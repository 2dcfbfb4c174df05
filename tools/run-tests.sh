#!/usr/bin/env bash
# `make test`'s runner: the whole suite as two pytest processes at once, so that the worker's suites
# (tests/worker: CPU-bound, a model in each process) run while the cluster suites wait on the control
# plane (tests/e2e and the rest spend most of their wall time waiting: about 5 CPU minutes in 20).
#
# Contract: every test under tests/ runs exactly once, in one of the two lanes; the exit status is
# non-zero when either lane fails (pytest's own codes, "no tests collected" included). Extra
# arguments go to both lanes. The worker lane's output is printed after the other's, whole. With
# TEST_REPORT_DIR set, each lane writes its JUnit report there: report-worker.xml, report-suites.xml.
#
# The shared control plane (make cluster) is started here, before either lane: each lane then finds
# it running and leaves it running, so neither stops it under the other. It is stopped at the end
# only when this script started it.
set -euo pipefail
cd "$(dirname "$0")/.."
pytest=(.venv/bin/pytest -q -p no:cacheprovider)
cluster_dir=${CLUSTER_DIR:-$PWD/.cluster}

up=0
.venv/bin/python -c 'import pathlib, sys
from deepseek_sandbox.real_cluster import start_control_plane
sys.exit(10 if start_control_plane(pathlib.Path(sys.argv[1])) else 0)' "$cluster_dir" || up=$?
case $up in
  0) started=0 ;;
  10) started=1 ;;
  *) echo "run-tests: the control plane did not start" >&2; exit 1 ;;
esac

worker_report=() suites_report=()
if [ -n "${TEST_REPORT_DIR:-}" ]; then
  worker_report=("--junitxml=$TEST_REPORT_DIR/report-worker.xml")
  suites_report=("--junitxml=$TEST_REPORT_DIR/report-suites.xml")
fi
worker_log=$(mktemp)
"${pytest[@]}" "${worker_report[@]}" tests/worker "$@" >"$worker_log" 2>&1 &
worker_pid=$!
trap 'kill "$worker_pid" 2>/dev/null || true' INT TERM

rest=0 worker=0
"${pytest[@]}" "${suites_report[@]}" --ignore=tests/worker "$@" || rest=$?
wait "$worker_pid" || worker=$?

echo "--- tests/worker (run alongside the suites above) ---"
cat "$worker_log"
rm -f "$worker_log"
if [ "$started" = 1 ]; then
  CLUSTER_DIR=$cluster_dir tools/control-plane/down.sh >/dev/null 2>&1 || true
fi
echo "run-tests: tests/worker exited $worker, the other suites $rest"
[ "$rest" = 0 ] && [ "$worker" = 0 ]
