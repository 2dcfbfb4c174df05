#!/usr/bin/env bash
# Install litellm (pinned) into its own virtual environment, .tools/litellm-venv: litellm requires
# boto3, whose botocore pins python-dateutil<3, while the project's kubernetes==37.0.2 requires
# python-dateutil>=3, so pip cannot resolve both into .venv (ResolutionImpossible). The worker's
# client tests (tests/worker/test_clients_litellm.py) run a litellm script with this venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/litellm-venv
litellm_version=1.110.2
if [ -x "$venv/bin/python" ] && "$venv/bin/pip" show litellm 2>/dev/null | grep -x "Version: $litellm_version" >/dev/null; then
  exit 0
fi
mkdir -p .tools
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip==25.3
"$venv/bin/python" -m pip install -q "litellm==$litellm_version"
"$venv/bin/python" -c "import litellm, importlib.metadata as m; print('litellm', m.version('litellm'))"
