#!/usr/bin/env bash
# Debian packages the tests need: promtool/prometheus (alert rules, real scraping), rsync (gitlab-ci-local),
# curl, openssl, flock (util-linux) and fuser (psmisc) for the real control plane (tools/control-plane/up.sh).
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v rsync >/dev/null || need+=(rsync)
command -v unzip >/dev/null || need+=(unzip)
command -v npm >/dev/null || need+=(npm)  # gitlab-ci-local
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v flock >/dev/null || need+=(util-linux)
command -v fuser >/dev/null || need+=(psmisc)  # up.sh names who holds its start lock
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)  # tests/reliability: a real reverse proxy
[ ${#need[@]} -eq 0 ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts prometheus (and nginx) services on install; tests start their own on loopback.
(systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || pkill -x prometheus) || true
(systemctl stop nginx 2>/dev/null || service nginx stop 2>/dev/null) || true
