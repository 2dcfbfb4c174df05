#!/usr/bin/env bash
# `make demo`: the main job on the embedded default cluster.
#   1. start the sandbox (an emulated Kubernetes API on 127.0.0.1) and the operator against it;
#   2. install the CRD and `kubectl apply -k manifests/samples/`, then watch the resources reach Ready;
#   3. start the worker with exactly the settings the operator rendered for the chat sample's pods
#      (the sandbox runs no containers and has no GPU, so the model is swapped for the tiny
#      DeepSeek-V3 test model and quantization for none) and ask it a chat completion.
# Everything runs on loopback and stops when the script exits. Logs: .demo/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
demo=.demo
rm -rf "$demo" && mkdir -p "$demo"
export KUBECONFIG="$PWD/$demo/kubeconfig"
# kubectl caches discovery here, not in ~/.kube (the sandbox empties it at start): a stale cache for a reused port is never read.
export KUBECACHEDIR="$KUBECONFIG.kubectl-cache"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds, or fail
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for $what" >&2; exit 1; fi
    sleep 0.5
  done
}

step "Starting the sandbox cluster (emulated API, Gateway API and Prometheus Operator CRDs served)"
deepseek-sandbox --port 0 --kubeconfig "$KUBECONFIG" --with-gateway-api --with-monitoring --ready-delay 2 \
  --extra-crds third_party/crds >"$demo/sandbox.log" 2>&1 &
pids+=($!)
wait_for 30 "the sandbox" kubectl get namespaces
kubectl get nodes 2>/dev/null || true

step "Installing the CRD first (kubectl apply -f crds/)"
kubectl apply -f crds/deepseek.ai_deepseekdeployments.yaml
wait_for 30 "the CRD to be served" kubectl get dsd -A

step "Starting the operator (deepseek-operator --standalone --all-namespaces)"
DEEPSEEK_OPERATOR_METRICS_PORT=0 deepseek-operator --standalone --all-namespaces >"$demo/operator.log" 2>&1 &
pids+=($!)

step "kubectl apply -k manifests/samples/"
kubectl apply -k manifests/samples/
kubectl get dsd

step "Waiting for every DeepSeekDeployment to be Ready (kubectl wait --for=condition=Ready)"
kubectl wait --for=condition=Ready dsd --all --timeout=180s
kubectl get dsd
kubectl get deployments,services,poddisruptionbudgets,pods,httproutes,ingresses,servicemonitors,prometheusrules
kubectl get dsd chat-prod -o jsonpath='{range .status.variants[*]}{.name}: weight {.weight}, {.readyReplicas}/{.replicas} ready{"\n"}{end}'

step "Starting the worker with the chat sample's rendered settings (tiny model on CPU)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
env_json=$(kubectl get deployment chat-primary -o jsonpath='{.spec.template.spec.containers[0].env}')
worker_env=()
while IFS= read -r line; do worker_env+=("$line"); done < <(python3 - "$env_json" <<'EOF'
import json, sys
for item in json.loads(sys.argv[1]):
    if "value" in item:
        print(f"{item['name']}={item['value']}")
EOF
)
printf '  %s\n' "${worker_env[@]}"
env "${worker_env[@]}" DEEPSEEK_MODEL=tiny DEEPSEEK_QUANTIZATION=none DEEPSEEK_HOST=127.0.0.1 \
  DEEPSEEK_PORT="$port" HF_HOME="$PWD/$demo/hf" deepseek-worker >"$demo/worker.log" 2>&1 &
pids+=($!)
wait_for 300 "the worker to load the model" curl -sf "http://127.0.0.1:$port/health/ready"

step "POST /v1/chat/completions (random weights: the words are noise, the API and usage are real)"
model=$(curl -sf "http://127.0.0.1:$port/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
curl -sf "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' -d @- <<EOF | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=2, ensure_ascii=False))'
{"model": "$model", "messages": [{"role": "system", "content": "You are a helpful assistant."},
 {"role": "user", "content": "Say hello to the platform team."}], "max_tokens": 24, "temperature": 0}
EOF
step "Done: the sandbox, operator and worker stop now (logs in $demo/)"
