#!/usr/bin/env bash
# Roll a new worker image out to a DeepSeekDeployment and wait for the operator's verdict.
#
# Usage: scripts/deploy.sh NAME IMAGE [--namespace NS] [--timeout 30m] [--interval 5s]
#
# 1. reads the resource (it must exist) and patches spec.image to IMAGE (merge patch);
# 2. reads the new metadata.generation;
# 3. polls until the operator reports, for that generation or later:
#      Ready=True and status.image == IMAGE                       -> exit 0 (rolled out)
#      Degraded=True (e.g. reason RolledBack: status.image is the
#      old image again, status.failedImage is IMAGE)              -> exit 1 (failed)
#    and gives up at the deadline                                  -> exit 2 (timed out)
# Any other failure (resource missing, patch refused by the CRD's validation) also exits 1; bad usage 64.
# Only kubectl is needed (KUBECTL overrides which one); it uses KUBECONFIG / the current context.
set -euo pipefail

readonly EXIT_FAILED=1 EXIT_TIMEOUT=2 EXIT_USAGE=64
kubectl_bin=${KUBECTL:-kubectl}

usage() {
  echo "usage: $0 NAME IMAGE [--namespace NS] [--timeout DURATION] [--interval DURATION]" >&2
  echo "  DURATION: seconds, or a number with s, m or h (default timeout 30m, interval 5s)" >&2
  exit "$EXIT_USAGE"
}

# Duration ("90", "90s", "30m", "1h") -> seconds.
seconds() {
  local value=$1
  if [[ $value =~ ^([0-9]+)(s|m|h)?$ ]]; then
    case "${BASH_REMATCH[2]}" in
      h) echo $((BASH_REMATCH[1] * 3600)) ;;
      m) echo $((BASH_REMATCH[1] * 60)) ;;
      *) echo "${BASH_REMATCH[1]}" ;;
    esac
  else
    echo "invalid duration: $value" >&2
    usage
  fi
}

log() { printf '%s deploy: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

[ $# -ge 2 ] || usage
name=$1 image=$2
shift 2
namespace="" timeout=30m interval=5s
while [ $# -gt 0 ]; do
  case "$1" in
    -n | --namespace) [ $# -ge 2 ] || usage; namespace=$2; shift 2 ;;
    --namespace=*) namespace=${1#*=}; shift ;;
    --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --interval) [ $# -ge 2 ] || usage; interval=$2; shift 2 ;;
    --interval=*) interval=${1#*=}; shift ;;
    *) usage ;;
  esac
done
# An image reference never needs quotes or spaces; refusing them keeps the JSON patch well-formed.
if [[ ! $image =~ ^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$ ]]; then
  echo "invalid image reference: $image" >&2
  exit "$EXIT_USAGE"
fi
timeout_s=$(seconds "$timeout")
interval_s=$(seconds "$interval")

kube=("$kubectl_bin")
[ -n "$namespace" ] && kube+=(--namespace "$namespace")

get() { "${kube[@]}" get deepseekdeployments.deepseek.ai "$name" -o "jsonpath=$1"; }

show_resource() { "${kube[@]}" get deepseekdeployments.deepseek.ai "$name" || true; }

# "generation|observedGeneration|status.image|failedImage|Ready|ReadyReason|Degraded|DegradedReason"
STATE_PATH='{.metadata.generation}|{.status.observedGeneration}|{.status.image}|{.status.failedImage}|'
STATE_PATH+='{.status.conditions[?(@.type=="Ready")].status}|{.status.conditions[?(@.type=="Ready")].reason}|'
STATE_PATH+='{.status.conditions[?(@.type=="Degraded")].status}|'
STATE_PATH+='{.status.conditions[?(@.type=="Degraded")].reason}'

read_state() {
  local raw
  raw=$(get "$STATE_PATH") || return 1
  IFS='|' read -r generation observed current failed ready ready_reason degraded degraded_reason <<<"$raw"
}

print_conditions() {
  local type
  for type in Ready Degraded; do
    printf '  %s=%s reason=%s message=%s\n' "$type" \
      "$(get "{.status.conditions[?(@.type==\"$type\")].status}" || true)" \
      "$(get "{.status.conditions[?(@.type==\"$type\")].reason}" || true)" \
      "$(get "{.status.conditions[?(@.type==\"$type\")].message}" || true)"
  done
}

if ! read_state; then
  echo "cannot read deepseekdeployment/$name${namespace:+ in namespace $namespace}" >&2
  exit "$EXIT_FAILED"
fi
previous_image=$current previous_failed=$failed
log "deepseekdeployment/$name: generation $generation, serving ${previous_image:-<none>}; deploying $image"

if ! "${kube[@]}" patch deepseekdeployments.deepseek.ai "$name" --type merge \
  -p "{\"spec\":{\"image\":\"$image\"}}"; then
  echo "the patch was refused" >&2
  exit "$EXIT_FAILED"
fi
target_generation=$(get '{.metadata.generation}')
log "waiting up to ${timeout} for the operator to observe generation $target_generation"

deadline=$((SECONDS + timeout_s))
last=""
while :; do
  if read_state; then
    now="observedGeneration=${observed:-?} image=${current:-?} Ready=${ready:-?}/${ready_reason:-} Degraded=${degraded:-?}/${degraded_reason:-}"
    [ "$now" != "$last" ] && log "$now"
    last=$now
    observed_current=false
    [ -n "$observed" ] && [ "$observed" -ge "$target_generation" ] && observed_current=true
    if $observed_current && [ "$ready" = True ] && [ "$current" = "$image" ]; then
      log "rolled out: $image is Ready"
      show_resource
      exit 0
    fi
    # A RolledBack verdict naming IMAGE counts even before observedGeneration catches up, unless
    # it is left over from an earlier failed deploy of the same image.
    fresh_rollback=false
    [ "$degraded_reason" = RolledBack ] && [ "$failed" = "$image" ] && [ "$previous_failed" != "$image" ] \
      && fresh_rollback=true
    if [ "$degraded" = True ] && { $observed_current || $fresh_rollback; }; then
      log "FAILED: the operator reports Degraded (${degraded_reason:-no reason}); serving ${current:-<none>}"
      print_conditions
      show_resource
      exit "$EXIT_FAILED"
    fi
  else
    log "cannot read the resource (retrying)"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    log "TIMED OUT after ${timeout}: $image is not Ready (previously serving ${previous_image:-<none>})"
    print_conditions
    show_resource
    exit "$EXIT_TIMEOUT"
  fi
  remaining=$((deadline - SECONDS))
  sleep "$((remaining < interval_s ? remaining : interval_s))"
done
