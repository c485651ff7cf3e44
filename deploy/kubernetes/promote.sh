#!/usr/bin/env bash
# Blue-green on Kubernetes: deploy/kubernetes/promote.sh green [NAMESPACE]
#   1. scales COLOR up to its autoscaler's minimum (when at 0) and waits until its rollout is
#      complete and ready (/readyz answers 200 on every pod);
#   2. switches the Service's selector to COLOR: new sockets go to it from here on;
#   3. scales the other colour to 0: each of its pods drains (bye, close 1001) and its clients
#      reconnect through the Service, to COLOR, resuming their counters from Redis.
# Deploy COLOR's new image first: `kubectl apply -k deploy/kubernetes/COLOR`.
set -euo pipefail

usage() { echo "usage: $0 blue|green [NAMESPACE]" >&2; exit 2; }
[ $# -ge 1 ] || usage
color=$1
case "$color" in
    blue) old=green ;;
    green) old=blue ;;
    *) usage ;;
esac
ns=(--namespace "${2:-${NAMESPACE:-default}}")
command -v kubectl >/dev/null 2>&1 || { echo "kubectl not found" >&2; exit 1; }

replicas="$(kubectl "${ns[@]}" get deployment "wsfleet-$color" -o jsonpath='{.spec.replicas}')"
if [ "${replicas:-0}" = 0 ]; then
    min="$(kubectl "${ns[@]}" get hpa "wsfleet-$color" -o jsonpath='{.spec.minReplicas}')"
    echo "scaling wsfleet-$color to ${min:-2}"
    kubectl "${ns[@]}" scale deployment "wsfleet-$color" --replicas="${min:-2}"
fi
kubectl "${ns[@]}" rollout status deployment "wsfleet-$color" --timeout=300s

echo "switching Service wsfleet to $color"
kubectl "${ns[@]}" patch service wsfleet --type merge \
    -p "{\"spec\":{\"selector\":{\"color\":\"$color\"}}}"

echo "scaling wsfleet-$old to 0 (its pods drain)"
kubectl "${ns[@]}" scale deployment "wsfleet-$old" --replicas=0
