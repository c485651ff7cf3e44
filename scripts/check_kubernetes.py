"""The invariants of deploy/kubernetes/, checked on its rendered YAML (kubectl kustomize).

Usage: check_kubernetes.py RENDERED.yaml src/config.rs
Exit 0 when every invariant holds, 1 with one line per broken one. scripts/check-kubernetes.sh
runs it on the real render and on a broken copy (which must fail).
"""

import re
import sys

import yaml

COLOURS = ("blue", "green")
# Seconds kept between the end of the drain and SIGKILL (the process exiting, the kubelet).
EXIT_MARGIN = 5


def seconds(value):
    """'10s', '2m', '1h', '500ms' -> seconds (the forms our humantime settings take here)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(value))
    if not m:
        raise ValueError(f"unreadable duration {value!r}")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def main(rendered, config_rs):
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    with open(config_rs) as f:
        spec_env = set(re.findall(r'env = "([A-Z_]+)"', f.read()))
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

    for colour in COLOURS:
        name = f"wsfleet-{colour}"
        dep = by_kind.get("Deployment", {}).get(name)
        if dep is None:
            problems.append(f"Deployment {name} is missing")
            continue
        selector = dep["spec"]["selector"]["matchLabels"]
        if selector.get("color") != colour:
            problems.append(f"{name}: selector {selector} has no color: {colour}")
        pod = dep["spec"]["template"]
        if pod["metadata"]["labels"].get("color") != colour:
            problems.append(f"{name}: pod template is not labelled color: {colour}")
        if "replicas" in dep["spec"]:
            problems.append(f"{name}: spec.replicas set; the autoscaler owns it")
        containers = pod["spec"]["containers"]
        if len(containers) != 1:
            problems.append(f"{name}: expected one container, found {len(containers)}")
            continue
        c = containers[0]
        if not re.fullmatch(r"(.+/)?wsfleet(:[\w.-]+)?", c["image"]):
            problems.append(f"{name}: image {c['image']} is not wsfleet")
        env = {e["name"]: e for e in c.get("env", [])}
        for unknown in sorted(set(env) - spec_env):
            problems.append(f"{name}: env {unknown} is not a setting of src/config.rs")
        for required in ("REDIS_URL", "BROADCAST_TOKEN_FILE", "COLOR", "SHUTDOWN_TIMEOUT"):
            if required not in env:
                problems.append(f"{name}: env {required} is not set")
        for plain in ("BROADCAST_TOKEN", "AUTH_SECRET"):
            if plain in env:
                problems.append(f"{name}: {plain} is an environment value; mount it as a file ({plain}_FILE)")
        # Every *_FILE points into a mounted Secret volume.
        secret_volumes = {
            v["name"] for v in pod["spec"].get("volumes", []) if "secret" in v
        }
        secret_paths = [
            m["mountPath"].rstrip("/") + "/"
            for m in c.get("volumeMounts", [])
            if m["name"] in secret_volumes
        ]
        for key, e in env.items():
            if key.endswith("_FILE") and key != "SSL_CERT_FILE":
                path = e.get("value", "")
                if not any(path.startswith(p) for p in secret_paths):
                    problems.append(f"{name}: {key}={path!r} is not in a mounted Secret")
        colour_ref = env.get("COLOR", {}).get("valueFrom", {}).get("fieldRef", {})
        if colour_ref.get("fieldPath") != "metadata.labels['color']":
            problems.append(f"{name}: COLOR is not read from the pod's color label")
        ready = c.get("readinessProbe", {}).get("httpGet", {}).get("path")
        live = c.get("livenessProbe", {}).get("httpGet", {}).get("path")
        if ready != "/readyz":
            problems.append(f"{name}: readiness probe path is {ready}, not /readyz")
        if live != "/healthz":
            problems.append(f"{name}: liveness probe path is {live}, not /healthz")
        pre_stop = c.get("lifecycle", {}).get("preStop", {})
        command = pre_stop.get("exec", {}).get("command", [])
        if len(command) != 2 or command[0] != "sleep":
            problems.append(f"{name}: preStop is not an exec of sleep N ({pre_stop})")
            pre_stop_s = 0
        else:
            pre_stop_s = int(command[1])
        timeout_s = seconds(env["SHUTDOWN_TIMEOUT"]["value"]) if "SHUTDOWN_TIMEOUT" in env else 10
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        if grace < pre_stop_s + timeout_s + EXIT_MARGIN:
            problems.append(
                f"{name}: terminationGracePeriodSeconds {grace} < preStop {pre_stop_s} s + "
                f"SHUTDOWN_TIMEOUT {timeout_s} s + {EXIT_MARGIN} s"
            )

        pdb = by_kind.get("PodDisruptionBudget", {}).get(name)
        if pdb is None:
            problems.append(f"PodDisruptionBudget {name} is missing")
        elif pdb["spec"]["selector"]["matchLabels"] != selector:
            problems.append(f"PodDisruptionBudget {name} does not select the pods of {name}")
        hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(name)
        if hpa is None:
            problems.append(f"HorizontalPodAutoscaler {name} is missing")
        else:
            target = hpa["spec"]["scaleTargetRef"]
            if (target.get("kind"), target.get("name")) != ("Deployment", name):
                problems.append(f"HorizontalPodAutoscaler {name} scales {target}, not {name}")
            metrics = [m.get("pods", {}).get("metric", {}).get("name") for m in hpa["spec"]["metrics"]]
            if "wsfleet_connections_active" not in metrics:
                problems.append(f"HorizontalPodAutoscaler {name} does not scale on connections")

    services = by_kind.get("Service", {})
    svc = services.get("wsfleet")
    if svc is None:
        problems.append("Service wsfleet is missing")
    else:
        colour = svc["spec"]["selector"].get("color")
        if colour not in COLOURS:
            problems.append(f"Service wsfleet: selector has no colour ({svc['spec']['selector']})")
        if svc["spec"].get("sessionAffinity", "None") != "None":
            problems.append("Service wsfleet: session affinity is not needed and uneven")

    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
