#!/usr/bin/env bash
# `make cluster`: a local Kubernetes control plane without Docker, every process on 127.0.0.1.
#   etcd, kube-apiserver (RBAC, ServiceAccount token issuer, JSON audit log at Metadata level),
#   kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods become Running/Ready).
# Then: the upstream CRDs in third_party/crds and two fake GPU nodes (8 x nvidia.com/gpu each).
# And, when build-lws.sh can build it, the LeaderWorkerSet controller (kubernetes-sigs/lws) with its
# CRD (third_party/lws) and admission webhooks served on 127.0.0.1 (lws-webhooks.yaml).
# With CLUSTER_KEDA=1 only: the KEDA operator (build-keda.sh; not built by `make test`) with its
# six CRDs, scaling ScaledObjects' workloads from and to zero (docs/cluster.md, "KEDA").
#
# Idempotent: when every process recorded in $CLUSTER_DIR/pids is alive and the apiserver is ready,
# it changes nothing. Otherwise it stops what is left (by PID) and starts a fresh cluster.
# Writes $CLUSTER_DIR/kubeconfig (admin, system:masters) and $CLUSTER_DIR/env (ports, paths).
# `make cluster-down` (down.sh) stops every process by its PID.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
RUN=${CLUSTER_DIR:-$REPO/.cluster}
API_PORT=${CLUSTER_API_PORT:-16443}
ETCD_PORT=${CLUSTER_ETCD_PORT:-12379}
ETCD_PEER_PORT=${CLUSTER_ETCD_PEER_PORT:-12380}
LWS_WEBHOOK_PORT=${CLUSTER_LWS_WEBHOOK_PORT:-$((API_PORT + 2))}
KEDA=${CLUSTER_KEDA:-0}
KEDA_GRPC_PORT=${CLUSTER_KEDA_GRPC_PORT:-$((API_PORT + 3))}
KEDA_ADAPTER_PORT=${CLUSTER_KEDA_ADAPTER_PORT:-$((API_PORT + 4))}
KEDA_ADAPTER_METRICS_PORT=${CLUSTER_KEDA_ADAPTER_METRICS_PORT:-$((API_PORT + 5))}
# Extra kube-apiserver flags: with CLUSTER_KEDA=1, the aggregation layer's front-proxy (keda_pki).
APISERVER_EXTRA=()
KUBECTL=${KUBECTL:-kubectl}
# A start takes 5-30 s; 180 s stays under pytest's 300 s per test, so a fixture fails with this
# script's message (who holds the lock), not with the test runner's timeout.
LOCK_WAIT=${CLUSTER_LOCK_WAIT_SECONDS:-180}
READY_WAIT=${CLUSTER_READY_WAIT_SECONDS:-30}
# Not $RUN.lock: the processes of a cluster started by an older up.sh inherited that one and hold it
# for as long as they live, so a start that waited for it would wait for ever.
LOCK="$RUN.start.lock"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
START=$SECONDS

log() { printf 'cluster: %s\n' "$*" >&2; }

# A zombie is dead: a component that died waits to be reaped by init (some container inits take
# seconds, some never do), and kill -0 still succeeds on it.
alive() {
  local pid
  [ -f "$RUN/pids/$1" ] && pid=$(cat "$RUN/pids/$1") && kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" != Z* ]]
}

api_ready() {
  [ -f "$RUN/token" ] && curl -sfk --max-time 2 -H "Authorization: Bearer $(cat "$RUN/token")" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1
}

# Every process alive and the apiserver ready. While every process lives, a slow /readyz (a loaded
# machine) is waited for up to READY_WAIT seconds: a restart would destroy a cluster others are using.
running() {
  local c deadline=$((SECONDS + READY_WAIT))
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  until api_ready; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.2 s until it succeeds or the deadline passes.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $what (logs: $RUN/logs)"; exit 1; fi
    sleep 0.2
  done
}

# 9>&-: the start lock's descriptor stays with up.sh. A component that inherited it would hold the
# lock for as long as it lives, and the next up.sh, after another component died, would wait for it.
start() {
  local name=$1; shift
  "$@" 9>&- >"$RUN/logs/$name.log" 2>&1 &
  echo $! >"$RUN/pids/$name"
}

# Who holds the start lock (PID and command), for the message when it is held too long. This script
# has it open too, and so do the subshells it forks to compute this very message ($BASHPID, and the
# one of $(fuser), gone by the time it is looked up): none of them is named.
lock_holders() {
  local pid comm out=""
  for pid in $(fuser "$LOCK" 2>/dev/null); do
    if [ "$pid" = "$$" ] || [ "$pid" = "$BASHPID" ]; then continue; fi
    comm=$(ps -o comm= -p "$pid" 2>/dev/null) || continue  # gone since fuser looked: holds nothing
    out+="$pid ($comm) "
  done
  echo "${out:-unknown}"
}

# One start at a time: a second caller waits here, then finds the cluster running. Past LOCK_WAIT
# it fails naming the holders instead of hanging its caller.
take_lock() {
  exec 9>"$LOCK"
  flock -w "$LOCK_WAIT" 9 && return 0
  log "$LOCK is still held after ${LOCK_WAIT}s by: $(lock_holders)"
  exit 1
}

write_kubeconfig() {
  cat >"$RUN/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: deepseek-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $RUN/pki/apiserver.crt
users:
- name: admin
  user:
    token: $(cat "$RUN/token")
contexts:
- name: deepseek-local
  context: {cluster: deepseek-local, user: admin, namespace: default}
current-context: deepseek-local
EOF
}

prepare() {
  "$HERE/down.sh" >/dev/null 2>&1 || true
  rm -rf "$RUN"
  mkdir -p "$RUN"/{pki,etcd,logs,pids,kubectl-cache}
  python3 -c 'import secrets; print(secrets.token_hex(24))' >"$RUN/token"
  printf '%s,admin,admin,system:masters\n' "$(cat "$RUN/token")" >"$RUN/tokens.csv"
  openssl genrsa -out "$RUN/pki/sa.key" 2048 2>/dev/null
  cp "$HERE/audit-policy.yaml" "$RUN/audit-policy.yaml"
  compose_stages >"$RUN/kwok-stages.yaml"
}

# kwok's own stages plus ours; pod-ready must not make a pod with a failure image Ready.
compose_stages() {
  local f
  for f in node-initialize node-heartbeat-with-lease pod-delete; do
    cat "$STAGES/$f.yaml"; printf '\n---\n'
  done
  # A held download pod ends when the test says so (kwok-stages.yaml), not at once.
  sed '/^    matchExpressions:$/a\
    - key: '"'"'[.spec.containers[].image | ascii_downcase | contains("download-hold")] | any'"'"'\
      operator: NotIn\
      values: ["true"]' "$STAGES/pod-complete.yaml"
  printf '\n---\n'
  sed '/^    matchExpressions:$/a\
    - key: '"'"'[.spec.containers[].image | ascii_downcase | test("never-ready|crashloop|oomkilled|modelloadfail|oomatload|imagepullbackoff|does-not-exist")] | any'"'"'\
      operator: NotIn\
      values: ["true"]' "$STAGES/pod-ready.yaml"
  printf '\n---\n'
  cat "$HERE/kwok-stages.yaml"
}

# A port taken by another process (another cluster, another checkout's) would make the health checks
# below talk to the wrong server: refuse at once, naming the variable that moves it.
check_ports() {
  local var port
  for var in CLUSTER_API_PORT:$API_PORT CLUSTER_ETCD_PORT:$ETCD_PORT CLUSTER_ETCD_PEER_PORT:$ETCD_PEER_PORT \
             CLUSTER_LWS_WEBHOOK_PORT:$LWS_WEBHOOK_PORT; do
    port=${var#*:}
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      log "port $port is in use (another control plane?): stop it or set ${var%%:*}"; exit 1
    fi
  done
}

start_etcd() {
  start etcd "$BIN/etcd" --name=deepseek-local --data-dir="$RUN/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="deepseek-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls="" --unsafe-no-fsync=true --quota-backend-bytes=4294967296 \
    --auto-compaction-mode=periodic --auto-compaction-retention=5m
  wait_for 30 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

# --advertise-address: with a loopback bind address the apiserver would otherwise look for a default
# route. --endpoint-reconciler-type=none: the loopback address is not a valid Endpoints address
# (kubernetes/kubernetes#28723). No --tls-cert-file: it writes a self-signed pair into --cert-dir.
start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --cert-dir="$RUN/pki" --token-auth-file="$RUN/tokens.csv" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$RUN/pki/sa.key" --service-account-signing-key-file="$RUN/pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none --profiling=false \
    --audit-policy-file="$RUN/audit-policy.yaml" --audit-log-path="$RUN/audit.log" \
    --audit-log-format=json --audit-log-mode=blocking --audit-log-maxsize=0 "${APISERVER_EXTRA[@]}"
  wait_for 90 "the apiserver (/readyz)" api_ready
}

start_controllers() {
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$RUN/kubeconfig" --leader-elect=false --secure-port=0 \
    --service-account-private-key-file="$RUN/pki/sa.key" --root-ca-file="$RUN/pki/apiserver.crt" \
    --use-service-account-credentials=false --concurrent-deployment-syncs=10 \
    --concurrent-replicaset-syncs=10 --concurrent-gc-syncs=20 --kube-api-qps=200 --kube-api-burst=400
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$RUN/kubeconfig" --leader-elect=false \
    --secure-port=0 --kube-api-qps=200 --kube-api-burst=400
  start kwok "$BIN/kwok" --kubeconfig="$RUN/kubeconfig" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr=10.244.0.0/16 --node-ip=127.0.0.1 \
    --config="$RUN/kwok-stages.yaml"
}

# The LeaderWorkerSet controller: its CRDs first (its manager waits for every kind it watches), then
# the controller with webhooks on 127.0.0.1:$LWS_WEBHOOK_PORT (a CA and serving cert of our own, no
# cert rotator: that one expects an in-cluster Service), then the webhook configurations pointing
# there. Leader election, metrics and health probes are off: one replica, nothing scrapes it.
# Without a binary (build-lws.sh says why) the cluster runs without LeaderWorkerSets.
start_lws() {
  local lws dir="$RUN/lws"
  if ! lws=$("$HERE/build-lws.sh" 2>>"$RUN/logs/lws-build.log"); then
    log "no LeaderWorkerSet controller: $(tail -n 2 "$RUN/logs/lws-build.log" | tr '\n' ' ')"
    return 0
  fi
  mkdir -p "$dir/certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=deepseek-local-lws-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$dir/certs/tls.key" \
    -out "$dir/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 3650 \
    -extfile "$dir/san.ext" -out "$dir/certs/tls.crt" 2>/dev/null
  printf '%s\n' 'apiVersion: config.lws.x-k8s.io/v1alpha1' 'kind: Configuration' \
    'leaderElection: {leaderElect: false}' 'internalCertManagement: {enable: false}' \
    "webhook: {host: 127.0.0.1, port: $LWS_WEBHOOK_PORT, certDir: $dir/certs}" \
    'metrics: {bindAddress: "0"}' 'health: {healthProbeBindAddress: "0"}' >"$dir/config.yaml"
  kc apply --server-side --force-conflicts -f "$REPO/third_party/lws/" >/dev/null
  wait_for 60 "the LeaderWorkerSet CRDs" kc wait --for=condition=Established --timeout=2s \
    crd/leaderworkersets.leaderworkerset.x-k8s.io crd/disaggregatedsets.disaggregatedset.x-k8s.io \
    crd/disaggregatedsetrolescalers.disaggregatedset.x-k8s.io
  start lws-controller env KUBECONFIG="$RUN/kubeconfig" ENABLE_WEBHOOKS=true "$lws" --config="$dir/config.yaml"
  wait_for 120 "the LeaderWorkerSet webhook server" \
    curl -sk --max-time 2 -o /dev/null "https://127.0.0.1:$LWS_WEBHOOK_PORT/healthz"
  sed -e "s|LWS_WEBHOOK_URL|https://127.0.0.1:$LWS_WEBHOOK_PORT|" \
      -e "s|LWS_CA_BUNDLE|$(base64 -w0 "$dir/ca.crt")|" "$HERE/lws-webhooks.yaml" | kc apply -f - >/dev/null
}

# A cluster started by an older up.sh runs without the LeaderWorkerSet controller: add it (the other
# components keep running, and so do the tests using them) instead of restarting everything.
ensure_lws() {
  alive lws-controller && return 0
  "$HERE/build-lws.sh" >/dev/null 2>&1 || return 0
  take_lock
  alive lws-controller && return 0
  log "starting the LeaderWorkerSet controller in the running cluster"
  start_lws
}

# KEDA (CLUSTER_KEDA=1): its CRDs (from the build, same version), namespace `keda` (its cluster
# objects' namespace), then the operator with the admin kubeconfig, watching every namespace.
# Leader election, metrics, health probes and cert rotation are off; its gRPC metrics service (for
# keda-adapter) listens on 127.0.0.1:$KEDA_GRPC_PORT with a CA and serving cert of our own, as the
# LWS webhooks do. The operator alone scales between zero and one replica (activation); from one to
# many is the HPA it creates, which needs keda-adapter served as external.metrics.k8s.io: not run
# here (docs/cluster.md says why). Without a binary, or with CLUSTER_KEDA unset, no KEDA at all: the
# operator under test then sees no keda.sh API.
# CLUSTER_KEDA=1, before the apiserver starts: a front-proxy CA and client certificate, so that the
# aggregation layer can forward external.metrics.k8s.io requests to keda-adapter with the caller's
# identity (requestheader authentication), as a kubeadm cluster does.
keda_pki() {
  [ "$KEDA" = 1 ] || return 0
  local pki="$RUN/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=front-proxy-ca \
    -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=front-proxy-client -keyout "$pki/front-proxy-client.key" \
    -out "$pki/front-proxy-client.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$pki/front-proxy-client.ext"
  openssl x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" \
    -CAkey "$pki/front-proxy-ca.key" -CAcreateserial -days 3650 -extfile "$pki/front-proxy-client.ext" \
    -out "$pki/front-proxy-client.crt" 2>/dev/null
  APISERVER_EXTRA=(--requestheader-client-ca-file="$pki/front-proxy-ca.crt"
    --requestheader-allowed-names=front-proxy-client --requestheader-username-headers=X-Remote-User
    --requestheader-group-headers=X-Remote-Group --requestheader-extra-headers-prefix=X-Remote-Extra-
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key")
}

# keda-adapter (the metrics apiserver, external.metrics.k8s.io) on 127.0.0.1:$KEDA_ADAPTER_PORT, when the
# apiserver has the front-proxy (keda_pki; not a cluster that got KEDA added later). The APIService needs
# a Service: an ExternalName one naming 127.0.0.1 (the aggregator dials an ExternalName directly; there
# is no pod network). It reads the operator's metrics over gRPC with the same certificates.
start_keda_adapter() {
  local bin=$1 dir="$RUN/keda"
  [ -f "$RUN/pki/front-proxy-client.crt" ] || { log "no keda-adapter: the apiserver has no front-proxy"; return 0; }
  start keda-adapter env KUBECONFIG="$RUN/kubeconfig" WATCH_NAMESPACE="" POD_NAMESPACE=keda \
    KEDA_CLUSTER_OBJECT_NAMESPACE=keda "$bin/keda-adapter" --bind-address=127.0.0.1 \
    --secure-port="$KEDA_ADAPTER_PORT" --cert-dir="$dir/certs" --tls-cert-file="$dir/certs/tls.crt" \
    --tls-private-key-file="$dir/certs/tls.key" --lister-kubeconfig="$RUN/kubeconfig" \
    --authentication-kubeconfig="$RUN/kubeconfig" --authorization-kubeconfig="$RUN/kubeconfig" \
    --metrics-service-address="127.0.0.1:$KEDA_GRPC_PORT" --port="$KEDA_ADAPTER_METRICS_PORT" \
    --zap-encoder=console
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: keda-metrics-apiserver, namespace: keda}
spec: {type: ExternalName, externalName: 127.0.0.1}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {namespace: keda, name: keda-metrics-apiserver, port: $KEDA_ADAPTER_PORT}
  caBundle: $(base64 -w0 "$dir/certs/ca.crt")
EOF
  wait_for 90 "keda-adapter's APIService Available (logs: keda-adapter.log)" \
    kc wait --for=condition=Available --timeout=2s apiservice/v1beta1.external.metrics.k8s.io
}

start_keda() {
  [ "$KEDA" = 1 ] || return 0
  local bin dir="$RUN/keda"
  log "building KEDA (tools/control-plane/build-keda.sh; cold: many minutes, see docs/cluster.md)"
  if ! bin=$("$HERE/build-keda.sh" 2>>"$RUN/logs/keda-build.log"); then
    log "no KEDA: $(tail -n 2 "$RUN/logs/keda-build.log" | tr '\n' ' ')"
    return 0
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$KEDA_GRPC_PORT") 2>/dev/null; then
    log "port $KEDA_GRPC_PORT is in use: stop it or set CLUSTER_KEDA_GRPC_PORT"; exit 1
  fi
  mkdir -p "$dir/certs"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=deepseek-local-keda-ca \
    -keyout "$dir/ca.key" -out "$dir/certs/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$dir/certs/tls.key" \
    -out "$dir/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:keda-metrics-apiserver.keda.svc\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/tls.csr" -CA "$dir/certs/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -extfile "$dir/san.ext" -out "$dir/certs/tls.crt" 2>/dev/null
  kc apply --server-side --force-conflicts -f "$bin/../crd/" >/dev/null
  wait_for 60 "the KEDA CRDs" kc wait --for=condition=Established --timeout=2s \
    crd/scaledobjects.keda.sh crd/scaledjobs.keda.sh crd/triggerauthentications.keda.sh \
    crd/clustertriggerauthentications.keda.sh crd/cloudeventsources.eventing.keda.sh \
    crd/clustercloudeventsources.eventing.keda.sh
  kc get namespace keda >/dev/null 2>&1 || kc create namespace keda >/dev/null
  # CLUSTER_KEDA_HOSTS=FILE: the operator runs in a mount namespace of its own where FILE is /etc/hosts
  # (a test maps in-cluster Service names, as in a ScaledObject's metrics-api URL, to local addresses;
  # edits to FILE in place apply). The recorded PID is still the operator's: unshare and sh exec it.
  local wrap=()
  if [ -n "${CLUSTER_KEDA_HOSTS:-}" ]; then
    wrap=(unshare --mount --propagation private sh -c 'mount --bind "$0" /etc/hosts && exec "$@"'
      "$CLUSTER_KEDA_HOSTS")
  fi
  start keda-operator "${wrap[@]}" env KUBECONFIG="$RUN/kubeconfig" WATCH_NAMESPACE="" POD_NAMESPACE=keda \
    KEDA_CLUSTER_OBJECT_NAMESPACE=keda "$bin/keda-operator" --leader-elect=false \
    --metrics-bind-address=0 --health-probe-bind-address=0 --enable-cert-rotation=false \
    --metrics-service-bind-address="127.0.0.1:$KEDA_GRPC_PORT" --cert-dir="$dir/certs" \
    --ca-dir="$dir/certs" --zap-log-level=info --zap-encoder=console
  wait_for 60 "the KEDA operator's gRPC metrics service (logs: keda-operator.log)" \
    bash -c "exec 3<>/dev/tcp/127.0.0.1/$KEDA_GRPC_PORT"
  alive keda-operator || { log "the KEDA operator exited: $(tail -n 3 "$RUN/logs/keda-operator.log")"; exit 1; }
  start_keda_adapter "$bin"
  printf 'CLUSTER_KEDA_BIN=%s\n' "$bin" >"$RUN/keda.env"
}

# CLUSTER_KEDA=1 on a running cluster without KEDA: add it, as ensure_lws adds LWS.
ensure_keda() {
  [ "$KEDA" = 1 ] || return 0
  alive keda-operator && return 0
  "$HERE/build-keda.sh" >/dev/null 2>>"$RUN/logs/keda-build.log" \
    || { log "no KEDA: $(tail -n 2 "$RUN/logs/keda-build.log" | tr '\n' ' ')"; return 0; }
  take_lock
  alive keda-operator && return 0
  log "starting the KEDA operator in the running cluster"
  start_keda
}

kc() { KUBECONFIG="$RUN/kubeconfig" KUBECACHEDIR="$RUN/kubectl-cache" "$KUBECTL" "$@"; }

install_basics() {
  # The ServiceAccount admission plugin refuses pods until the controller-manager made `default`.
  wait_for 60 "the default ServiceAccount" kc get serviceaccount default -n default
  kc apply --server-side --force-conflicts -f "$REPO/third_party/crds/" >/dev/null
  kc apply -f "$HERE/gpu-nodes.yaml" >/dev/null
  wait_for 60 "the upstream CRDs" kc wait --for=condition=Established --timeout=2s crd --all
  wait_for 60 "the fake GPU nodes" kc wait --for=condition=Ready --timeout=2s node --all
}

write_env() {
  cat >"$RUN/env" <<EOF
export KUBECONFIG=$RUN/kubeconfig
export KUBECACHEDIR=$RUN/kubectl-cache
CLUSTER_API_PORT=$API_PORT
CLUSTER_AUDIT_LOG=$RUN/audit.log
CLUSTER_BIN=$BIN
EOF
}

main() {
  command -v "$KUBECTL" >/dev/null || { log "kubectl not found (run make bootstrap)"; exit 1; }
  if running; then ensure_lws; ensure_keda; log "already running ($RUN)"; echo "$RUN"; return 0; fi
  BIN=$("$HERE/build.sh")
  mkdir -p "$(dirname "$RUN")"
  take_lock
  if running; then ensure_lws; ensure_keda; log "already running ($RUN)"; echo "$RUN"; return 0; fi
  STAGES="$BIN/../kwok/stages"
  prepare
  check_ports
  keda_pki
  start_etcd
  start_apiserver
  write_kubeconfig
  start_controllers
  install_basics
  start_lws
  start_keda
  write_env
  log "ready in $((SECONDS - START)) s: export KUBECONFIG=$RUN/kubeconfig KUBECACHEDIR=$RUN/kubectl-cache"
  echo "$RUN"
}

main "$@"
