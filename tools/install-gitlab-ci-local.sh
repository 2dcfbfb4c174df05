#!/usr/bin/env bash
# Install gitlab-ci-local (pinned: 4.74+ crash on Node 20) into .tools/npm. It runs .gitlab-ci.yml jobs
# locally without Docker when given --force-shell-executor; every job needs rsync (tools/install-apt.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
version=4.73.0
prefix=.tools/npm
bin="$prefix/node_modules/.bin/gitlab-ci-local"
if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "$version" ]; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm is required to install gitlab-ci-local" >&2; exit 1; }
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "gitlab-ci-local@$version"
"$bin" --version
