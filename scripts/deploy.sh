#!/usr/bin/env bash
# Roll a new worker image out to a DeepSeekDeployment and wait for the operator's verdict.
#
# Usage: scripts/deploy.sh NAME IMAGE [--namespace NS] [--timeout auto|DURATION] [--timeout-margin 5m]
#                           [--interval 5s]
#
# 1. reads the resource (it must exist) and patches spec.image to IMAGE (merge patch);
# 2. reads the new metadata.generation and, with --timeout auto (the default), derives the deadline from
#    the patched resource (see derive_timeout: replicas, rollout batch, model.loadTimeoutSeconds,
#    rollout.progressDeadlineSeconds); an explicit DURATION overrides it;
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
  echo "usage: $0 NAME IMAGE [--namespace NS] [--timeout auto|DURATION] [--timeout-margin DURATION]" \
    "[--interval DURATION]" >&2
  echo "  DURATION: seconds, or a number with s, m or h (default timeout auto: derived from the resource;" \
    "margin 5m, interval 5s)" >&2
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

# Seconds -> "1h05m10s", "7m20s", "2s" (for the log; the deadline itself is kept in seconds).
human() {
  local s=$1
  if [ "$s" -ge 3600 ]; then printf '%dh%02dm%02ds\n' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
  elif [ "$s" -ge 60 ]; then printf '%dm%02ds\n' $((s / 60)) $((s % 60))
  else printf '%ds\n' "$s"; fi
}

# A non-negative integer read from the resource, or the CRD's default when unset.
number_or() { if [[ $1 =~ ^[0-9]+$ ]]; then echo "$1"; else echo "$2"; fi; }

[ $# -ge 2 ] || usage
name=$1 image=$2
shift 2
namespace="" timeout=auto margin=5m interval=5s
while [ $# -gt 0 ]; do
  case "$1" in
    -n | --namespace) [ $# -ge 2 ] || usage; namespace=$2; shift 2 ;;
    --namespace=*) namespace=${1#*=}; shift ;;
    --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#*=}; shift ;;
    --timeout-margin) [ $# -ge 2 ] || usage; margin=$2; shift 2 ;;
    --timeout-margin=*) margin=${1#*=}; shift ;;
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
[ "$timeout" = auto ] || timeout_s=$(seconds "$timeout")
margin_s=$(seconds "$margin")
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

# The longest a rollout of IMAGE can honestly take, from the patched resource (the CRD persists every
# default, so each field is there; the fallbacks are those defaults). Per worker Deployment that rolls
# (the primary, and each variant without an image of its own, in parallel):
#   batch  = pods replaced at once: Surge max(maxSurge,1), Replace max(maxUnavailable,1), Auto the smaller
#   waves  = ceil(replicas / batch); each wave may take model.loadTimeoutSeconds to become Ready, and the
#            last may run to rollout.progressDeadlineSeconds before the operator declares the failure
#   budget = (waves - 1) * loadTimeoutSeconds + max(progressDeadlineSeconds, loadTimeoutSeconds)
#            + surgeTimeoutSeconds (Auto: one wait for a spare GPU before it replaces in place)
# Prints "SECONDS|explanation": the largest budget plus the margin (operator reaction, the rollback
# itself), so a 70B model that takes 25 minutes per replica gets the waves it needs.
ROLLOUT_PATH='{.spec.replicas}|{.spec.model.loadTimeoutSeconds}|{.spec.rollout.strategy}|{.spec.rollout.maxSurge}|'
ROLLOUT_PATH+='{.spec.rollout.maxUnavailable}|{.spec.rollout.progressDeadlineSeconds}|'
ROLLOUT_PATH+='{.spec.rollout.surgeTimeoutSeconds}'
VARIANTS_PATH='{range .spec.variants[*]}{.name}|{.replicas}|{.image}|{.model.loadTimeoutSeconds}{"\n"}{end}'

budget() { # replicas load -> seconds, with strategy/batch/deadline/surge from the caller
  local replicas=$1 load=$2 waves
  waves=$(((replicas + batch - 1) / batch))
  [ "$waves" -ge 1 ] || waves=1
  echo $(((waves - 1) * load + (deadline_pd > load ? deadline_pd : load) + extra))
}

derive_timeout() {
  local raw variants replicas load strategy surge unavailable vname vreplicas vimage vload best why b
  raw=$(get "$ROLLOUT_PATH") && variants=$(get "$VARIANTS_PATH") || return 1
  IFS='|' read -r replicas load strategy surge unavailable deadline_pd extra <<<"$raw"
  replicas=$(number_or "$replicas" 1) load=$(number_or "$load" 1800) strategy=${strategy:-Auto}
  surge=$(number_or "$surge" 0) unavailable=$(number_or "$unavailable" 1)
  deadline_pd=$(number_or "$deadline_pd" 1800) extra=$(number_or "$extra" 120)
  surge=$((surge > 1 ? surge : 1)) unavailable=$((unavailable > 1 ? unavailable : 1))
  case "$strategy" in
    Surge) batch=$surge extra=0 ;;
    Replace) batch=$unavailable extra=0 ;;
    *) batch=$((surge < unavailable ? surge : unavailable)) ;;
  esac
  best=$(budget "$replicas" "$load")
  why="primary: $replicas replica(s), $batch at a time ($strategy), loadTimeoutSeconds $load"
  while IFS='|' read -r vname vreplicas vimage vload; do
    # A variant with an image of its own does not roll when spec.image changes.
    if [ -z "$vname" ] || [ -n "$vimage" ]; then continue; fi
    b=$(budget "$(number_or "$vreplicas" 1)" "$(number_or "$vload" "$load")")
    if [ "$b" -gt "$best" ]; then
      best=$b why="variant $vname: $(number_or "$vreplicas" 1) replica(s), $batch at a time ($strategy),"
      why+=" loadTimeoutSeconds $(number_or "$vload" "$load")"
    fi
  done <<<"$variants"
  why+=", progressDeadlineSeconds $deadline_pd"
  [ "$strategy" = Surge ] || [ "$strategy" = Replace ] || why+=", surgeTimeoutSeconds $extra"
  echo "$((best + margin_s))|$why, margin ${margin_s}s"
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
if [ "$timeout" = auto ]; then
  if ! derived=$(derive_timeout); then
    echo "cannot read the rollout settings of deepseekdeployment/$name to derive the timeout" >&2
    exit "$EXIT_FAILED"
  fi
  timeout_s=${derived%%|*}
  log "timeout $(human "$timeout_s") derived from the resource (${derived#*|}); --timeout overrides it"
else
  log "timeout $(human "$timeout_s") (--timeout $timeout)"
fi
log "waiting up to $(human "$timeout_s") for the operator to observe generation $target_generation"

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
    log "TIMED OUT after $(human "$timeout_s"): $image is not Ready (previously serving ${previous_image:-<none>})"
    print_conditions
    show_resource
    exit "$EXIT_TIMEOUT"
  fi
  remaining=$((deadline - SECONDS))
  sleep "$((remaining < interval_s ? remaining : interval_s))"
done
