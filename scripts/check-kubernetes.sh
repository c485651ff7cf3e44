#!/usr/bin/env bash
# make check-kubernetes (and part of make test): deploy/kubernetes/ checked offline, with no
# cluster and no network to fetch schemas:
#   1. `kubectl kustomize` renders the whole install and each of blue/, green/, service/;
#   2. kubernetes-validate (PyPI; it ships the API schemas) checks every rendered object and the
#      examples strictly (an unknown field fails), against KUBERNETES_VERSION (1.30);
#   3. scripts/check_kubernetes.py asserts the invariants (probe paths, grace period >
#      preStop + SHUTDOWN_TIMEOUT + margin, PDB and HPA per colour, the Service's selector
#      holds the colour, image and environment names those of src/config.rs), and, on a copy
#      with a short grace period and a wrong probe path, that it would have failed.
# kubernetes-validate is installed once into a virtualenv under $KUBE_VALIDATE_VENV.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${KUBERNETES_VERSION:=1.30}"
: "${KUBE_VALIDATE_VENV:=${XDG_CACHE_HOME:-$HOME/.cache}/wsfleet/kubernetes-validate}"
KUBE_VALIDATE_VERSION=1.37.0
DIR="$ROOT_DIR/deploy/kubernetes"

step "static checks of deploy/kubernetes (kubectl kustomize, kubernetes-validate, invariants)"
need_tool kubectl kubectl
need_tool python3 python3
python3 -c 'import yaml' 2>/dev/null ||
    die "python3 has no yaml module: install python3-yaml (apt-get install -y python3-yaml)"

validate="$KUBE_VALIDATE_VENV/bin/kubernetes-validate"
if ! "$validate" --version 2>/dev/null | grep -qF "$KUBE_VALIDATE_VERSION"; then
    say "installing kubernetes-validate $KUBE_VALIDATE_VERSION into $KUBE_VALIDATE_VENV"
    python3 -m venv "$KUBE_VALIDATE_VENV" ||
        die "python3 -m venv failed: install python3-venv (apt-get install -y python3-venv)"
    "$KUBE_VALIDATE_VENV/bin/pip" install --quiet "kubernetes-validate==$KUBE_VALIDATE_VERSION"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for part in . blue green service; do
    kubectl kustomize "$DIR/$part" >"$work/${part//./all}.yaml" ||
        die "kubectl kustomize deploy/kubernetes/$part failed"
done
say "ok:   kubectl kustomize renders deploy/kubernetes and its blue, green and service parts"

"$validate" --strict --quiet --kubernetes-version "$KUBERNETES_VERSION" \
    "$work"/*.yaml "$DIR"/examples/*.yaml ||
    die "kubernetes-validate rejects an object (above)"
say "ok:   kubernetes-validate --strict accepts every object (Kubernetes $KUBERNETES_VERSION)"

python3 "$ROOT_DIR/scripts/check_kubernetes.py" "$work/all.yaml" "$ROOT_DIR/src/config.rs" ||
    die "deploy/kubernetes breaks an invariant (above)"
say "ok:   probes, grace period, PDB, HPA, Service selector, image and environment names"

# The check itself must be able to fail.
sed -e 's/terminationGracePeriodSeconds: .*/terminationGracePeriodSeconds: 12/' \
    -e 's|path: /readyz|path: /healthz|' \
    -e 's|mountPath: /run/secrets/wsfleet|mountPath: /run/elsewhere|' "$work/all.yaml" >"$work/broken.yaml"
if python3 "$ROOT_DIR/scripts/check_kubernetes.py" "$work/broken.yaml" "$ROOT_DIR/src/config.rs" \
    2>"$work/broken.err"; then
    die "check_kubernetes.py accepted a render with a 12 s grace period, no /readyz probe and no Secret under its token file"
fi
if ! grep -q terminationGracePeriodSeconds "$work/broken.err" ||
    ! grep -q /readyz "$work/broken.err" ||
    ! grep -q 'not in a mounted Secret' "$work/broken.err"; then
    die "check_kubernetes.py failed the broken render for other reasons: $(cat "$work/broken.err")"
fi
say "ok:   the invariant check rejects a short grace period, a wrong readiness path and a token file outside the Secret"
