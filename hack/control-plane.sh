#!/usr/bin/env bash
# A real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)
# on loopback, built from pinned Go modules, for the tests and the demo.
#
#   hack/control-plane.sh build          build (or reuse) the binaries, print their folder
#   hack/control-plane.sh start [DIR [PID]]  start a control plane whose state lives in DIR;
#                                        with PID, it stops itself once that process is gone
#   hack/control-plane.sh stop  [DIR]    stop it and remove DIR
#   hack/control-plane.sh stop-apiserver DIR / start-apiserver DIR / stop-etcd DIR / start-etcd DIR
#                                        stop one component / start it again (same
#                                        ports, same data), for fault tests
#   hack/control-plane.sh bin-dir        print the folder holding the cached binaries
#
# `start` prints `export KUBECONFIG=...` lines and how long start-up took.
# DIR defaults to $TOKENSMITH_CP_DIR, then to ./target/control-plane.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# The oldest supported Kubernetes (README: Supported Kubernetes versions) is
# tested with the same suite: TOKENSMITH_KUBERNETES_VERSION=v1.33.13 make test
# builds that version into a cache folder of its own.
KUBERNETES_VERSION="${TOKENSMITH_KUBERNETES_VERSION:-$KUBERNETES_VERSION}"

cache_root="${TOKENSMITH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokensmith}"
cache="$cache_root/$KUBERNETES_VERSION"
bin="$cache/bin"
stamp_text="kubernetes=$KUBERNETES_VERSION helm=$HELM_VERSION kubeconform=$KUBECONFORM_VERSION"

log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- build

# Writes a Go module that requires k8s.io/kubernetes and points each staging
# module k8s.io/X at its published v0.Y.Z, as the module's own go.mod points
# them at ./staging. The list of staging modules is read from that go.mod, so a
# new Kubernetes version needs no edit here.
write_tools_module() {
  local src="$1" minor_version="v0.${KUBERNETES_VERSION#v1.}"
  local upstream_mod
  upstream_mod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [ -f "$upstream_mod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION"
  local go_line
  go_line="$(grep -m1 '^go ' "$upstream_mod")"

  mkdir -p "$src/etcd"
  cp "$here/tools/etcd.go.txt" "$src/etcd/main.go"
  {
    echo "module tokensmith.dev/hack/control-plane"
    echo
    echo "$go_line"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    grep -E '^[[:space:]]*k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream_mod" |
      awk -v v="$minor_version" '{ print "\t" $1 " => " $1 " " v }'
    echo ")"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<'EOF'
//go:build tools

// Keeps the commands built from k8s.io/kubernetes in the module graph.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
}

# promtool (the tests evaluate the chart's alert rules with it),
# helm-docs (the chart's README is generated from its values) and hey (make
# bench's load generator for the token service), each cached in
# a folder of its own so that a new version rebuilds only that tool, and
# copied beside the control plane's binaries. The service-discovery plugins
# promtool links by default are left out (remove_all_sd): the tests use
# `promtool test rules` and `check rules` only.
build_tools() {
  build_promtool
  cached_go_install helm-docs "$HELM_DOCS_VERSION" github.com/norwoodj/helm-docs/cmd/helm-docs
  cached_go_install hey "$HEY_VERSION" github.com/rakyll/hey
}

# `go install`s NAME from MODULE at VERSION into a cache folder of its own
# (once per version) and copies it beside the control plane's binaries.
cached_go_install() {
  local name="$1" version="$2" module="$3"
  local dir="$cache_root/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    log "go install $name $version"
    mkdir -p "$dir"
    CGO_ENABLED=0 GOBIN="$dir" go install -trimpath -ldflags "-s -w" "$module@$version"
  fi
  cmp -s "$dir/$name" "$bin/$name" 2>/dev/null || cp "$dir/$name" "$bin/$name"
}

build_promtool() {
  local dir="$cache_root/prometheus-$PROMETHEUS_VERSION"
  if [ ! -x "$dir/promtool" ]; then
    local started
    started=$(date +%s)
    log "go install promtool (prometheus $PROMETHEUS_VERSION)"
    mkdir -p "$dir"
    CGO_ENABLED=0 GOBIN="$dir" go install -trimpath -tags remove_all_sd -ldflags "-s -w" \
      "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
    log "promtool built in $(($(date +%s) - started)) s"
  fi
  cmp -s "$dir/promtool" "$bin/promtool" 2>/dev/null || cp "$dir/promtool" "$bin/promtool"
}

build() {
  if [ -f "$bin/.stamp" ] && [ "$(cat "$bin/.stamp")" = "$stamp_text" ]; then
    build_tools
    log "binaries for $stamp_text are cached in $bin"
    echo "$bin"
    return
  fi
  command -v go >/dev/null || die "go is required to build the control plane"
  local started src major minor
  started=$(date +%s)
  src="$cache/src"
  rm -rf "$src" "$bin"
  mkdir -p "$src" "$bin"
  log "building $stamp_text into $bin (the first build takes a while)"

  write_tools_module "$src"
  major="${KUBERNETES_VERSION#v}"; major="${major%%.*}"
  minor="${KUBERNETES_VERSION#v*.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done

  (
    cd "$src"
    export CGO_ENABLED=0 GOFLAGS="-mod=mod"
    go mod tidy
    go build -trimpath -ldflags "$ldflags" -o "$bin/etcd" ./etcd
    for cmd in kube-apiserver kube-controller-manager kubectl; do
      log "go build $cmd"
      go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    done
  )
  # helm and kubeconform carry no replace directives, so they install as is
  # (helm needs a newer client-go than the control plane module pins).
  log "go install helm $HELM_VERSION and kubeconform $KUBECONFORM_VERSION"
  CGO_ENABLED=0 GOBIN="$bin" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  CGO_ENABLED=0 GOBIN="$bin" go install -trimpath -ldflags "-s -w" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"

  echo "$stamp_text" >"$bin/.stamp"
  build_tools
  log "built in $(($(date +%s) - started)) s"
  echo "$bin"
}


# ---------------------------------------------------------------- start / stop

default_dir() { echo "${TOKENSMITH_CP_DIR:-$PWD/target/control-plane}"; }

# Prints N distinct free loopback ports, holding them all open while choosing
# so that no two are the same.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Waits until URL answers 200 with the admin token, or the process behind
# PIDFILE dies, or TIMEOUT seconds pass.
wait_healthy() {
  local url="$1" pidfile="$2" name="$3" deadline=$((SECONDS + ${4:-60}))
  until curl -fsk -o /dev/null -H "Authorization: Bearer $(cat "$dir/admin.token")" "$url"; do
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -n 30 "$dir/$name.log" >&2; die "$name exited during start-up (log: $dir/$name.log)"; }
    [ $SECONDS -lt "$deadline" ] || { tail -n 30 "$dir/$name.log" >&2; die "$name not healthy after ${4:-60} s"; }
    sleep 0.2
  done
}

# Starts NAME in its own session so that `stop` can end it and every child
# with one signal to the process group.
launch() {
  local name="$1"; shift
  setsid "$@" >"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

# Starts etcd on the ports recorded in $dir/ports, on the data in $dir/etcd.
launch_etcd() {
  local etcd_port etcd_peer_port api_port
  eval "$(cat "$dir/ports")"
  launch etcd "$bin/etcd" \
    --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "default=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --quota-backend-bytes 8589934592 --log-level warn
}

# Starts kube-apiserver on the ports recorded in $dir/ports: at start, and
# again by `start-apiserver` after `stop-apiserver` (fault tests).
launch_apiserver() {
  local etcd_port etcd_peer_port api_port
  eval "$(cat "$dir/ports")"
  launch kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$api_port" \
    --cert-dir "$dir/pki" \
    --token-auth-file "$dir/pki/tokens.csv" \
    --authorization-mode RBAC \
    --service-account-issuer "https://127.0.0.1:$api_port" \
    --service-account-key-file "$dir/pki/sa.pub" \
    --service-account-signing-key-file "$dir/pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 \
    --audit-policy-file "$dir/audit-policy.yaml" \
    --audit-log-path "$dir/audit.log" --audit-log-format json \
    --audit-log-mode blocking \
    --enable-priority-and-fairness=false \
    --v 1
}

start() {
  dir="${1:-$(default_dir)}"
  local watch_pid="${2:-}"
  local started_ns; started_ns=$(date +%s%N)
  build >/dev/null
  if [ -f "$dir/kubeconfig" ] && [ -f "$dir/kube-apiserver.pid" ] && kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null; then
    die "a control plane is already running in $dir (stop it first)"
  fi
  rm -rf "$dir"
  mkdir -p "$dir/etcd" "$dir/pki"
  dir="$(cd "$dir" && pwd)"

  local etcd_port etcd_peer_port api_port kcm_port
  read -r etcd_port etcd_peer_port api_port kcm_port <<<"$(free_ports 4)"

  # Identities: an admin for tests and tools, and a separate one for an
  # operator under test, so the audit log can tell the operator's requests apart.
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/admin.token"
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/operator.token"
  {
    echo "$(cat "$dir/admin.token"),admin,admin-uid,system:masters"
    echo "$(cat "$dir/operator.token"),tokensmith-operator,operator-uid,system:masters"
  } >"$dir/pki/tokens.csv"
  openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub" 2>/dev/null
  cat >"$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
EOF

  echo "etcd_port=$etcd_port etcd_peer_port=$etcd_peer_port api_port=$api_port" >"$dir/ports"
  launch_etcd
  launch_apiserver

  local server="https://127.0.0.1:$api_port"
  wait_healthy "$server/readyz" "$dir/kube-apiserver.pid" kube-apiserver 120
  # The serving certificate the API server made for itself is followed by the
  # CA that signed it: clients trust that CA instead of skipping verification.
  awk '/BEGIN CERT/ { n++ } n == 2' "$dir/pki/apiserver.crt" >"$dir/pki/ca.crt"
  [ -s "$dir/pki/ca.crt" ] || die "no CA certificate in $dir/pki/apiserver.crt"
  write_kubeconfig "$dir/kubeconfig" "$server" "$(cat "$dir/admin.token")" admin
  write_kubeconfig "$dir/operator.kubeconfig" "$server" "$(cat "$dir/operator.token")" tokensmith-operator

  launch kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$dir/kubeconfig" \
    --authentication-kubeconfig "$dir/kubeconfig" \
    --authorization-kubeconfig "$dir/kubeconfig" \
    --controllers "${TOKENSMITH_CP_CONTROLLERS:-garbagecollector,namespace,serviceaccount}" \
    --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" \
    --cert-dir "$dir/pki/kcm" \
    --v 1
  wait_healthy "https://127.0.0.1:$kcm_port/healthz" "$dir/kube-controller-manager.pid" kube-controller-manager 60

  "$bin/kubectl" --kubeconfig "$dir/kubeconfig" get namespace default -o name >/dev/null

  if [ -n "$watch_pid" ]; then
    # Stops this control plane once WATCH_PID is gone, however it ended
    # (a panicking or killed test binary included).
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 0.3; done; "$2" stop "$3"' \
      watchdog "$watch_pid" "$here/control-plane.sh" "$dir" >/dev/null 2>&1 </dev/null &
    echo $! >"$dir/watchdog.pid"
  fi
  local elapsed_ms=$((($(date +%s%N) - started_ns) / 1000000))
  log "ready in $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000))) s: $server (etcd :$etcd_port, controller-manager :$kcm_port)"
  echo "export KUBECONFIG=$dir/kubeconfig"
  echo "export TOKENSMITH_TEST_KUBECONFIG=$dir/kubeconfig"
  echo "export PATH=$bin:\$PATH"
}

write_kubeconfig() {
  local file="$1" server="$2" token="$3" user="$4"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: tokensmith-local
    cluster:
      server: $server
      certificate-authority-data: $(base64 -w0 "$dir/pki/ca.crt")
users:
  - name: $user
    user:
      token: $token
contexts:
  - name: tokensmith-local
    context: {cluster: tokensmith-local, user: $user}
current-context: tokensmith-local
EOF
}

stop() {
  dir="${1:-$(default_dir)}"
  [ -d "$dir" ] || return 0
  local name pid pids=()
  for name in watchdog kube-controller-manager kube-apiserver etcd; do
    [ -f "$dir/$name.pid" ] || continue
    pid="$(cat "$dir/$name.pid")"
    # The watchdog is the one calling stop when it fires: do not kill ourselves.
    if [ "$name" = watchdog ] && [ "$pid" = "$(ps -o sid= -p $$ | tr -d ' ')" ]; then continue; fi
    kill -TERM -- "-$pid" 2>/dev/null && pids+=("$pid")
  done
  # Its state is thrown away, so a graceful shutdown buys nothing: one second
  # of grace for all, then SIGKILL, and wait until every process is gone.
  alive() { local p; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
  local tries
  for tries in $(seq 10); do alive || break; sleep 0.1; done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  for tries in $(seq 100); do alive || break; sleep 0.1; done
  rm -rf "$dir"
  log "stopped and removed $dir"
}

# Stops one component (NAME: kube-apiserver or etcd); the others keep running.
stop_one() {
  local name="$1"
  dir="$(cd "${2:?control plane directory}" && pwd)"
  local pid; pid="$(cat "$dir/$name.pid")"
  kill -TERM -- "-$pid" 2>/dev/null || true
  local tries
  for tries in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  for tries in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  log "$name stopped in $dir"
}

# Starts etcd again on its data and ports; returns once it answers.
start_etcd() {
  dir="$(cd "${1:?control plane directory}" && pwd)"
  mv "$dir/etcd.log" "$dir/etcd.log.$(date +%s)" 2>/dev/null || true
  launch_etcd
  local etcd_port etcd_peer_port api_port; eval "$(cat "$dir/ports")"
  local deadline=$((SECONDS + 60))
  until curl -fs -o /dev/null "http://127.0.0.1:$etcd_port/health"; do
    kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || die "etcd exited during start-up"
    [ $SECONDS -lt "$deadline" ] || die "etcd not healthy after 60 s"
    sleep 0.2
  done
  log "etcd ready again in $dir"
}

# Starts kube-apiserver again, same port, same etcd; returns once it is ready.
start_apiserver() {
  dir="$(cd "${1:?control plane directory}" && pwd)"
  mv "$dir/kube-apiserver.log" "$dir/kube-apiserver.log.$(date +%s)" 2>/dev/null || true
  launch_apiserver
  local api_port; eval "$(cat "$dir/ports")"
  wait_healthy "https://127.0.0.1:$api_port/readyz" "$dir/kube-apiserver.pid" kube-apiserver 120
  log "kube-apiserver ready again in $dir"
}

case "${1:-}" in
  build) build ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  stop-apiserver) shift; stop_one kube-apiserver "$@" ;;
  start-apiserver) shift; start_apiserver "$@" ;;
  stop-etcd) shift; stop_one etcd "$@" ;;
  start-etcd) shift; start_etcd "$@" ;;
  bin-dir) echo "$bin" ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
