#!/usr/bin/env bash
# End-to-end test on a real Kubernetes cluster (kind):
#   kind cluster -> build + load the image -> helm install the operator -> apply
#   manifests/examples/minimal.yaml -> wait for Ready -> write data through the leader Service
#   -> trigger a shrink (annotation) -> followers' aofSize == leader's in status -> delete a
#   follower pod and watch it come back -> helm uninstall + delete the cluster, nothing left.
#
# Needs: docker (a running engine), kind, kubectl, helm (kubectl/helm from PATH or
# .tools/bin, see .ci/install-tools). Without them it prints "SKIP: <reason>" and exits 0.
#
# Environment:
#   KIND_CLUSTER   cluster name (default geocluster-e2e)
#   KEEP_CLUSTER=1 keep the cluster afterwards (for debugging)
#   E2E_TIMEOUT    seconds for each wait (default 300)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export PATH="$root/.tools/bin:$PATH"

skip() { echo "SKIP: $*"; exit 0; }
command -v docker >/dev/null 2>&1 || skip "docker not available"
docker info >/dev/null 2>&1 || skip "docker not available (no running engine: docker info failed)"
command -v kind >/dev/null 2>&1 || skip "kind not available"
command -v kubectl >/dev/null 2>&1 || skip "kubectl not available (bash .ci/install-tools)"
command -v helm >/dev/null 2>&1 || skip "helm not available (bash .ci/install-tools)"
if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="python3"; fi

cluster="${KIND_CLUSTER:-geocluster-e2e}"
timeout="${E2E_TIMEOUT:-300}"
release=geocluster
opns=geocluster-system
ns=geo-e2e
gc=minimal
ctx="kind-$cluster"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/geocluster/Chart.yaml)"
# The CRD's default spec.image is this same reference, so GeoCluster pods use the loaded image.
image="ghcr.io/geocluster/geocluster:${app_version}"

k() { kubectl --context "$ctx" "$@"; }
log() { echo "--- $(date +%H:%M:%S) $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_for DESCRIPTION COMMAND...: retry COMMAND every 3 s until it succeeds or $timeout passes.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${timeout}s waiting for: $what"
    sleep 3
  done
  log "ok: $what"
}

status_json() { k -n "$ns" get geocluster "$gc" -o json; }

# Python checks on the GeoCluster's status (stdin: the object as JSON).
check() { status_json | "$py" -c "import json,sys; o=json.load(sys.stdin); s=o.get('status') or {}; $1"; }

cleanup() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    echo "=== diagnostics (exit $rc) ==="
    k get geoclusters,statefulsets,pods,services,pvc -A -o wide 2>/dev/null || true
    k -n "$ns" get geocluster "$gc" -o yaml 2>/dev/null || true
    k -n "$opns" logs deployment/$release --tail=200 2>/dev/null || true
    k -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -40 || true
  fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit $rc
}
trap cleanup EXIT

log "kind cluster $cluster"
kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
kind create cluster --name "$cluster" --wait 180s

log "build $image"
docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

log "helm install"
helm --kube-context "$ctx" install "$release" charts/geocluster \
  --namespace "$opns" --create-namespace \
  --set image.pullPolicy=Never \
  --wait --timeout "${timeout}s"
k -n "$opns" rollout status deployment/$release --timeout="${timeout}s"

log "apply manifests/examples/minimal.yaml"
k create namespace "$ns"
k -n "$ns" apply -f manifests/examples/minimal.yaml
k -n "$ns" wait geocluster/$gc --for=condition=Ready --timeout="${timeout}s"
wait_for "status.observedGeneration == metadata.generation" \
  check "assert s['observedGeneration'] == o['metadata']['generation']"

# A client pod from the same image (it has python and redis-py) talks RESP to the Services.
client() {
  k -n "$ns" run "e2e-client-$RANDOM" --rm -i --restart=Never --quiet \
    --image="$image" --image-pull-policy=Never --command -- python -c "$1"
}

log "write data through the leader Service ($gc:9851)"
client "
import redis
r = redis.Redis(host='$gc', port=9851, socket_timeout=10)
for rnd in range(5):                      # overwrite each point 5 times: the AOF grows,
    p = r.pipeline(transaction=False)     # a shrink keeps only the last version
    for i in range(2000):
        p.execute_command('SET', 'fleet', f'truck{i}', 'POINT', 33 + i / 1e4, -115 + rnd / 1e3)
    p.execute()
print('objects in fleet:', r.execute_command('SCAN', 'fleet', 'COUNT'))
"

log "wait until every follower is caught up at the leader's aofSize"
members_equal="
ms = s.get('members') or []
leader = [m for m in ms if m['role'] == 'leader'][0]
fs = [m for m in ms if m['role'] == 'follower']
assert len(fs) == o['spec']['followers'], fs
assert all(m.get('caughtUp') and m.get('aofSize') == leader['aofSize'] for m in fs), ms
assert any(c['type'] == 'Ready' and c['status'] == 'True' for c in s.get('conditions', []))
"
wait_for "followers caught up (before shrink)" check "$members_equal"
before="$(check "print([m for m in s['members'] if m['role'] == 'leader'][0]['aofSize'])")"
log "leader aofSize before shrink: $before"

prev_shrink="$(check "print((s.get('lastShrink') or {}).get('time', ''))")"
log "trigger a shrink: annotate geo.geocluster.io/shrink-now=true"
k -n "$ns" annotate geocluster "$gc" geo.geocluster.io/shrink-now=true --overwrite
wait_for "a new lastShrink with result ok" check "
ls = s.get('lastShrink') or {}
assert ls.get('time', '') != '$prev_shrink' and ls.get('result') == 'ok', ls"
wait_for "followers' aofSize == leader's after the shrink" check "$members_equal"
after="$(check "print([m for m in s['members'] if m['role'] == 'leader'][0]['aofSize'])")"
log "leader aofSize after shrink: $after"
[ "$after" -lt "$before" ] || fail "shrink did not reduce the leader's AOF ($before -> $after)"
wait_for "shrink-now annotation consumed" \
  check "assert 'geo.geocluster.io/shrink-now' not in (o['metadata'].get('annotations') or {})"

log "data is readable from the followers (read-only Service)"
client "
import redis, json
r = redis.Redis(host='$gc-readonly', port=9851, socket_timeout=10)
print(r.execute_command('GET', 'fleet', 'truck1999'))
"

victim="$gc-follower-1"
old_uid="$(k -n "$ns" get pod "$victim" -o jsonpath='{.metadata.uid}')"
log "delete follower pod $victim (uid $old_uid)"
k -n "$ns" delete pod "$victim" --wait=false
wait_for "$victim recreated" \
  bash -c "u=\$(kubectl --context $ctx -n $ns get pod $victim -o jsonpath='{.metadata.uid}' 2>/dev/null); [ -n \"\$u\" ] && [ \"\$u\" != '$old_uid' ]"
k -n "$ns" wait pod/"$victim" --for=condition=Ready --timeout="${timeout}s"
wait_for "$victim caught up again at the leader's aofSize" check "$members_equal"

log "uninstall: delete the GeoCluster first (the operator releases its finalizer), then helm"
k -n "$ns" delete geocluster "$gc" --timeout="${timeout}s"
helm --kube-context "$ctx" uninstall "$release" --namespace "$opns" --wait --timeout "${timeout}s"
# helm never deletes crds/ (see docs/upgrade.md); PVCs of StatefulSets outlive their pods.
k delete -f manifests/crd.yaml --ignore-not-found
k delete -f charts/geocluster/crds/kopf-peering.yaml --ignore-not-found
k -n "$ns" delete pvc -l app.kubernetes.io/instance="$gc" --ignore-not-found --wait=true

nothing_left() {
  local left=""
  left+="$(k get statefulsets,services,configmaps,poddisruptionbudgets,pods,pvc -n "$ns" \
            -l app.kubernetes.io/part-of=geocluster -o name 2>/dev/null || echo "($ns: kubectl failed)")"
  left+="$(k get deployments,serviceaccounts,services,pods -n "$opns" -o name 2>/dev/null \
            | grep -v '^serviceaccount/default$' || true)"
  left+="$(k get clusterroles,clusterrolebindings -l app.kubernetes.io/instance="$release" \
            -o name 2>/dev/null || echo "(rbac: kubectl failed)")"
  left+="$(k get crd -o name 2>/dev/null | grep -E 'geocluster|kopfpeering' || true)"
  [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}
wait_for "nothing left behind" nothing_left
nothing_left
k delete namespace "$ns" "$opns" --wait=false

log "PASS"
