#!/usr/bin/env bash
# make check-compose (and part of make test): static checks of the Docker path, which needs
# no Docker engine (none runs where this project is built and tested).
#   1. compose/compose.yaml parses: `docker compose config -q` when the docker CLI and its
#      compose plugin exist, else python3 with PyYAML, else that check is reported skipped;
#   2. it has the services the README promises (redis with append-only on and a memory
#      bound, app_blue and app_green built from compose/Dockerfile, nginx on the shared
#      template, prometheus, grafana), and every file or directory it references exists;
#   3. compose/prometheus.yml passes promtool check config, when promtool is installed;
#   4. compose/Dockerfile is multi-stage, builds the binary target `--bin wsfleet` of the
#      package that defines it, and runs on a slim Debian image.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMPOSE="compose/compose.yaml"
DOCKERFILE="compose/Dockerfile"
failures=0
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    failures=$((failures + 1))
}
ok() { printf 'ok:   %s\n' "$*"; }

step "static checks of $COMPOSE and $DOCKERFILE (no Docker engine needed)"
[ -f "$COMPOSE" ] || die "$COMPOSE is missing"
[ -f "$DOCKERFILE" ] || die "$DOCKERFILE is missing"

# --- 1 and 2: parse, services, references --------------------------------------------------
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    if BROADCAST_TOKEN=check docker compose -f "$COMPOSE" config -q; then
        ok "docker compose config -q accepts $COMPOSE"
    else
        fail "docker compose config -q rejects $COMPOSE"
    fi
else
    say "note: no docker compose plugin here; docker compose config was not run"
fi

if command -v python3 >/dev/null 2>&1 && python3 -c 'import yaml' 2>/dev/null; then
    if python3 - "$COMPOSE" <<'PY'; then
import os
import re
import sys

import yaml

path = sys.argv[1]
base = os.path.dirname(os.path.abspath(path))
with open(path) as f:
    doc = yaml.safe_load(f)  # resolves the x-app anchor and the << merge keys
problems = []
services = doc.get("services") or {}
for name in ("redis", "app_blue", "app_green", "nginx", "prometheus", "grafana"):
    if name not in services:
        problems.append(f"service {name} is missing")

redis_cmd = " ".join(services.get("redis", {}).get("command") or [])
if "--appendonly yes" not in redis_cmd:
    problems.append("redis does not run with --appendonly yes")
if "--maxmemory " not in redis_cmd or "--maxmemory-policy volatile-lru" not in redis_cmd:
    problems.append("redis does not run with a --maxmemory and --maxmemory-policy volatile-lru")

for colour in ("blue", "green"):
    svc = services.get(f"app_{colour}", {})
    build = svc.get("build") or {}
    context = os.path.normpath(os.path.join(base, build.get("context", ".")))
    dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
    if not os.path.isfile(dockerfile):
        problems.append(f"app_{colour}: dockerfile {dockerfile} does not exist")
    if not os.path.isfile(os.path.join(context, "Cargo.toml")):
        problems.append(f"app_{colour}: build context {context} has no Cargo.toml")
    if (svc.get("environment") or {}).get("COLOR") != colour:
        problems.append(f"app_{colour}: COLOR is not {colour}")
    if "deploy" in svc and "replicas" in (svc["deploy"] or {}):
        problems.append(f"app_{colour}: a fixed replica count would fight --scale")

# Every bind mount's host path, and every env_file, must exist.
for name, svc in services.items():
    for vol in svc.get("volumes") or []:
        source = vol.split(":", 1)[0] if isinstance(vol, str) else (vol.get("source") or "")
        if source.startswith((".", "/")):
            host = os.path.normpath(os.path.join(base, source))
            if not os.path.exists(host):
                problems.append(f"{name}: volume source {source} ({host}) does not exist")
    env_files = svc.get("env_file") or []
    for env_file in [env_files] if isinstance(env_files, str) else env_files:
        if not os.path.exists(os.path.join(base, env_file)):
            problems.append(f"{name}: env_file {env_file} does not exist")

nginx_mounts = " ".join(v for v in services.get("nginx", {}).get("volumes") or [] if isinstance(v, str))
if "nginx/wsfleet.conf.template" not in nginx_mounts:
    problems.append("nginx does not mount the shared template nginx/wsfleet.conf.template")

# Every ${WSFLEET_…} placeholder of the template must be set in the nginx service's environment
# (the image's envsubst leaves unknown ones in place and nginx would then refuse the file).
with open(os.path.join(base, "..", "nginx", "wsfleet.conf.template")) as f:
    template = f.read()
wanted = set(re.findall(r"\$\{(WSFLEET_[A-Z_]+)\}", template))
given = set((services.get("nginx", {}).get("environment") or {}).keys())
for var in sorted(wanted - given):
    problems.append(f"nginx: the template needs {var}, which the service does not set")

for p in problems:
    print(f"FAIL: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"ok:   {path} parses (PyYAML); {len(services)} services; every referenced file exists")
PY
        :
    else
        fail "$COMPOSE: see the lines above"
    fi
else
    say "SKIPPED: neither docker compose nor python3 with PyYAML is here: $COMPOSE was not parsed (apt-get install python3-yaml)"
fi

# compose/prometheus.yml with the rules mounted beside it, as the container sees them.
if command -v promtool >/dev/null 2>&1; then
    promdir="$(mktemp -d)"
    cp compose/prometheus.yml observability/alerts.yml "$promdir/"
    if promtool check config "$promdir/prometheus.yml" >/dev/null 2>&1; then
        ok "promtool check config accepts compose/prometheus.yml (with observability/alerts.yml)"
    else
        promtool check config "$promdir/prometheus.yml" >&2 || true
        fail "promtool rejects compose/prometheus.yml"
    fi
    rm -rf "$promdir"
else
    say "note: no promtool here (apt-get install prometheus); compose/prometheus.yml was only parsed"
fi

# --- 4: the Dockerfile ---------------------------------------------------------------------
stages="$(grep -ciE '^FROM .* AS ' "$DOCKERFILE" || true)"
if [ "$stages" -ge 2 ]; then ok "$DOCKERFILE has $stages named stages"; else fail "$DOCKERFILE is not multi-stage"; fi
if grep -qE 'cargo build .*--bin wsfleet( |$|\\)' "$DOCKERFILE"; then
    ok "$DOCKERFILE builds --bin wsfleet"
else
    fail "$DOCKERFILE does not run cargo build … --bin wsfleet"
fi
if grep -qE '^name = "wsfleet"' Cargo.toml && grep -A2 '^\[\[bin\]\]' Cargo.toml | grep -q 'name = "wsfleet"'; then
    ok "Cargo.toml defines the binary target wsfleet that the native path builds"
else
    fail "Cargo.toml has no [[bin]] named wsfleet"
fi
if grep -qE '^FROM debian:[a-z]+-slim' "$DOCKERFILE"; then
    ok "$DOCKERFILE runs on a slim Debian image"
else
    fail "$DOCKERFILE's runtime stage is not debian:*-slim"
fi
grep -qE '^ENTRYPOINT \["/usr/local/bin/wsfleet"\]' "$DOCKERFILE" ||
    fail "$DOCKERFILE's entrypoint is not /usr/local/bin/wsfleet"
if ! grep -qx 'target/' .dockerignore 2>/dev/null; then
    fail ".dockerignore does not keep target/ out of the build context"
fi

if [ "$failures" -gt 0 ]; then
    die "$failures compose/Dockerfile check(s) failed"
fi
say "compose checks passed (static only: no image was built and no container was run)"
