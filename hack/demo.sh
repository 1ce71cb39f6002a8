#!/usr/bin/env bash
# The one-command demo (`make demo`): on a fresh clone it builds everything,
# starts the local control plane, runs the operator, applies examples/ and
# shows a token minted, verified against the JWKS, used over OAuth 2.0,
# rotated and revoked. Leaves nothing running unless given --keep.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
keep=false
[ "${1:-}" = "--keep" ] && keep=true

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# Tokens and secrets are shown cut short: this is a demo, not a leak.
mask() { sed -E 's/(eyJ[A-Za-z0-9_-]{6})[A-Za-z0-9_.-]+/\1…/g; s/((tks|tkcs|tkrt|etm)_[A-Za-z0-9]{4})[A-Za-z0-9_]+/\1…/g'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "tools and control-plane binaries (built once, then cached)"
hack/install-tools.sh
hack/control-plane.sh build >/dev/null

say "building tokensmith"
cargo build --locked --quiet
tokensmith="$root/target/debug/tokensmith"

dir="$root/target/demo"
operator_pid=""
cleanup() {
  if [ "$keep" = false ]; then
    [ -n "$operator_pid" ] && kill "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null || true
    hack/control-plane.sh stop "$dir" >/dev/null 2>&1 || true
    echo "stopped the operator and the control plane"
  else
    echo "left running: operator (pid $operator_pid), control plane in $dir (hack/control-plane.sh stop $dir)"
  fi
}
trap cleanup EXIT

say "starting a local control plane"
if [ "$keep" = true ]; then
  eval "$(hack/control-plane.sh start "$dir")"
else
  # Watched by this script's PID: it stops even if this script is killed.
  eval "$(hack/control-plane.sh start "$dir" $$)"
fi
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace tokensmith-system >/dev/null

port=$(free_port); metrics_port=$(free_port)
public="https://127.0.0.1:$port"
say "running the operator; token service at $public"
"$tokensmith" run --kubeconfig "$dir/operator.kubeconfig" --namespace tokensmith-system \
  --listen-address "127.0.0.1:$port" --public-url "$public" \
  --metrics-address "127.0.0.1:$metrics_port" --log-format json >"$dir/operator.log" 2>&1 &
operator_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$metrics_port/readyz" >/dev/null || { tail -20 "$dir/operator.log"; exit 1; }
kubectl get configmap tokensmith-ca -n tokensmith-system -o jsonpath='{.data.ca\.crt}' >"$dir/ca.crt"

say "applying examples/ (issuer URLs pointed at this token service)"
for example in examples/without-chart/*.yaml examples/*.yaml; do
  echo "---"
  sed "s#https://tokensmith.tokensmith-system.svc#$public#" "$example"
done | kubectl apply -f -
kubectl wait --for condition=Ready accesstoken/ci-scenarios accesstoken/partner-export appregistration/billing --timeout=60s
kubectl get clustertokenissuers,tokenissuers,accesstokens,appregistrations

say "the minted token, decoded (tokensmith token show)"
"$tokensmith" token show ci-scenarios --kubeconfig "$KUBECONFIG"

say "verified against the issuer's JWKS, fetched over HTTPS (tokensmith token verify)"
"$tokensmith" token verify --access-token ci-scenarios --ca-file "$dir/ca.crt" --audience scenarios-api --kubeconfig "$KUBECONFIG"
echo "discovery: $public/issuers/scenarios/.well-known/openid-configuration"
curl -fsS --cacert "$dir/ca.crt" "$public/issuers/scenarios/.well-known/openid-configuration" |
  python3 -c 'import json,sys; d=json.load(sys.stdin); [print(f"  {k}: {d[k]}") for k in ("issuer","jwks_uri","token_endpoint","grant_types_supported")]'

say "an OAuth 2.0 client: client_credentials with the billing app's secret"
client_id=$(kubectl get secret billing-client -o jsonpath='{.data.client-id}' | base64 -d)
client_secret=$(kubectl get secret billing-client -o jsonpath='{.data.client-secret}' | base64 -d)
response=$(curl -fsS --cacert "$dir/ca.crt" -u "$client_id:$client_secret" \
  -d grant_type=client_credentials -d scope=read_invoices "$public/oauth/token")
echo "$response" | mask
introspect() {
  curl -fsS --cacert "$dir/ca.crt" -u "$client_id:$client_secret" --data-urlencode "token=$1" "$public/oauth/introspect"
}

say "rotation: a 12-second token is replaced before it expires"
cat <<YAML | kubectl apply -f -
apiVersion: tokensmith.dev/v1alpha1
kind: AccessToken
metadata:
  name: short-lived
spec:
  issuerRef: {kind: TokenIssuer, name: scenarios}
  scopes: [read_scenarios]
  lifetime: 12s
YAML
kubectl wait --for condition=Ready accesstoken/short-lived --timeout=60s >/dev/null
first=$(kubectl get accesstoken short-lived -o jsonpath='{.status.tokenID}')
echo "revision 1: token $first"
kubectl wait --for jsonpath='{.status.revision}'=2 accesstoken/short-lived --timeout=60s >/dev/null
echo "revision 2: token $(kubectl get accesstoken short-lived -o jsonpath='{.status.tokenID}')"
kubectl get events --field-selector involvedObject.name=short-lived -o custom-columns=REASON:.reason,MESSAGE:.message --no-headers 2>/dev/null \
  || kubectl get events --field-selector involvedObject.name=short-lived

say "revocation: kubectl delete accesstoken ci-scenarios"
# Introspection answers only clients of the token's own issuer: a verifier
# app of the scenarios issuer asks.
cat <<YAML | kubectl apply -f -
apiVersion: tokensmith.dev/v1alpha1
kind: AppRegistration
metadata:
  name: scenarios-verifier
spec:
  issuerRef: {kind: TokenIssuer, name: scenarios}
YAML
kubectl wait --for condition=Ready appregistration/scenarios-verifier --timeout=60s >/dev/null
client_id=$(kubectl get secret scenarios-verifier -o jsonpath='{.data.client-id}' | base64 -d)
client_secret=$(kubectl get secret scenarios-verifier -o jsonpath='{.data.client-secret}' | base64 -d)
token=$(kubectl get secret ci-scenarios -o jsonpath='{.data.token}' | base64 -d)
active() { introspect "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("active:", d["active"], "sub:", d.get("sub")); sys.exit(0 if d["active"] else 3)'; }
for _ in $(seq 50); do before=$(active "$token") && break; sleep 0.2; done
echo "before: $before"
case "$before" in *True*) ;; *) echo "the token should be active before its revocation" >&2; exit 1 ;; esac
kubectl delete accesstoken ci-scenarios
echo "after:  $(introspect "$token" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("active:", d["active"])')"
echo "secret: $(kubectl get secret ci-scenarios 2>&1 | tail -1)"
echo "(an offline verifier still sees a good signature until exp; introspection is where revocation shows)"

say "metrics"
curl -fsS "http://127.0.0.1:$metrics_port/metrics" | grep -E '^tokensmith_(tokens_|token_requests|leader|soonest)' || true

say "done"
