#!/usr/bin/python3
"""Renders fanout's Kubernetes overlays with `kubectl kustomize` and checks them.

Usage: check_manifests.py [--kubectl KUBECTL] [--fanoutd FANOUTD] [--self-test] OVERLAY_DIR...

For every pod template that runs fanoutd, each overlay must give:
- fanoutd as a native sidecar: an init container with restartPolicy Always;
- startup and readiness probes on /readyz, a liveness probe on /healthz,
  all on the admin port, which is the port of the configured admin.listen
  (on 0.0.0.0, since kubelet probes the pod IP);
- requests and limits of cpu and memory on every container, fanoutd's memory
  limit above cache.l1.capacity by at least 128MiB;
- a restricted securityContext on every container (non-root, read-only root
  filesystem, no privilege escalation, ALL capabilities dropped, seccomp
  RuntimeDefault, at container or pod level);
- the configuration as a ConfigMap mounted where fanoutd reads it, which
  fanoutd itself accepts (`fanoutd --check_config`, with --fanoutd);
- the survival tier (cache.l3.path) on an emptyDir whose sizeLimit is at
  least 1.5 x cache.l3.max_bytes (compaction writes before it deletes);
- the app and fanoutd sharing the unix socket of server.listen through one
  emptyDir, the app told the same address;
- terminationGracePeriodSeconds above server.drain_timeout +
  server.shutdown_delay.

--self-test also breaks each rule in a copy of the rendered objects and
checks that the rule catches it.
Exit 0 when every overlay passes, 1 with the problems on stderr otherwise.
"""

import argparse
import copy
import os
import re
import subprocess
import sys
import tempfile

import yaml

CONFIG_PATH = "/etc/fanout/config.yaml"
L1_HEADROOM = 128 << 20
SURVIVAL_FACTOR = 1.5

_BYTE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_QUANTITY_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
                   "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "m": 0.001}
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}

# The fanoutd binary whose parser checks each ConfigMap's configuration
# (--fanoutd); None = not checked.
FANOUTD = None


def fanoutd_rejects(text):
    """What `fanoutd --check_config` says is wrong with `text`; None when valid."""
    if FANOUTD is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        r = subprocess.run([FANOUTD, "--check_config", "--config", f.name],
                           capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)
    if r.returncode == 0:
        return None
    return (r.stderr.strip() or f"exit {r.returncode}").replace(f.name, "config.yaml")


def parse_bytes(text):
    """A fanout byte size: 4096, 64KiB, 1GiB, 10MB."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m[2] not in _BYTE_UNITS:
        raise ValueError(f"{text!r} is not a byte size")
    return int(m[1]) * _BYTE_UNITS[m[2]]


def parse_quantity(text):
    """A Kubernetes quantity: 2Gi, 384Mi, 500m, 1."""
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m[2] not in _QUANTITY_UNITS:
        raise ValueError(f"{text!r} is not a quantity")
    return float(m[1]) * _QUANTITY_UNITS[m[2]]


def parse_duration(text):
    """A fanout duration (absl): 300ms, 2s, 1m30s, 1h."""
    text = str(text).strip()
    if text == "0":
        return 0.0
    parts = re.findall(r"([0-9.]+)(ns|us|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def get(tree, dotted, default=None):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def render(kubectl, overlay):
    try:
        r = subprocess.run([kubectl, "kustomize", overlay], capture_output=True, text=True,
                           timeout=120)
    except FileNotFoundError:
        raise RuntimeError(f"{kubectl} not found: scripts/deps.sh installs kubernetes-client")
    if r.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {r.stderr.strip()}")
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def pod_templates(objects):
    for o in objects:
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            yield o, o["spec"]["template"]["spec"]


def mount_of(container, volume):
    for m in container.get("volumeMounts") or []:
        if m.get("name") == volume:
            return m
    return None


def volume_for_path(pod, container, path):
    """The volume and mount under which `path` lies in `container`, deepest first."""
    best = None
    for m in container.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[1]["mountPath"].rstrip("/")):
                vol = next((v for v in pod.get("volumes") or [] if v["name"] == m["name"]), None)
                best = (vol, m)
    return best


def check_security(where, pod, c, problems):
    psc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}

    def eff(key):
        return sc.get(key, psc.get(key))

    if eff("runAsNonRoot") is not True:
        problems.append(f"{where}: runAsNonRoot is not true")
    if eff("runAsUser") == 0:
        problems.append(f"{where}: runs as uid 0")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append(f"{where}: capabilities do not drop ALL")
    if (sc.get("capabilities") or {}).get("add"):
        problems.append(f"{where}: adds capabilities")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        problems.append(f"{where}: seccompProfile is not RuntimeDefault")


def check_resources(where, c, problems):
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                problems.append(f"{where}: no {kind}.{r}")
    try:
        for r in ("cpu", "memory"):
            req = parse_quantity(res["requests"][r])
            lim = parse_quantity(res["limits"][r])
            if req > lim:
                problems.append(f"{where}: {r} request above its limit")
    except (KeyError, TypeError, ValueError):
        pass


def check_probe(where, fanoutd, probe_name, path, admin_port, problems):
    probe = fanoutd.get(probe_name)
    if not probe:
        problems.append(f"{where}: no {probe_name}")
        return
    http = probe.get("httpGet") or {}
    if http.get("path") != path:
        problems.append(f"{where}: {probe_name} is not an HTTP GET of {path}")
    port = http.get("port")
    if isinstance(port, str):
        named = {p.get("name"): p.get("containerPort") for p in fanoutd.get("ports") or []}
        port = named.get(port)
    if port != admin_port:
        problems.append(f"{where}: {probe_name} probes port {port}, admin.listen is on {admin_port}")


def check_pod(name, pod, configmaps, problems):
    where = f"{name}"
    sidecars = [c for c in pod.get("initContainers") or [] if c.get("name") == "fanoutd"]
    if not sidecars:
        problems.append(f"{where}: fanoutd is not an init container (native sidecar)")
        return
    fanoutd = sidecars[0]
    fw = f"{where}/fanoutd"
    if fanoutd.get("restartPolicy") != "Always":
        problems.append(f"{fw}: restartPolicy is not Always (not a native sidecar)")
    apps = pod.get("containers") or []
    if not apps:
        problems.append(f"{where}: no app container")

    for c in (pod.get("initContainers") or []) + apps:
        check_security(f"{where}/{c['name']}", pod, c, problems)
        check_resources(f"{where}/{c['name']}", c, problems)

    # The configuration: a ConfigMap volume mounted where fanoutd reads it.
    found = volume_for_path(pod, fanoutd, CONFIG_PATH)
    if not found or not (found[0] or {}).get("configMap"):
        problems.append(f"{fw}: {CONFIG_PATH} is not on a ConfigMap volume")
        return
    volume, mount = found
    cm_name = volume["configMap"]["name"]
    key = CONFIG_PATH[len(mount["mountPath"].rstrip("/")) + 1:]
    for item in volume["configMap"].get("items") or []:
        if item.get("path") == key:
            key = item["key"]
    cm = configmaps.get(cm_name)
    if cm is None or key not in (cm.get("data") or {}):
        problems.append(f"{fw}: ConfigMap {cm_name} has no key {key}")
        return
    rejected = fanoutd_rejects(cm["data"][key])
    if rejected is not None:
        problems.append(f"{fw}: fanoutd rejects ConfigMap {cm_name}/{key}: {rejected}")
        return  # the checks below read it as fanoutd would, so need it valid
    config = yaml.safe_load(cm["data"][key]) or {}

    # Admin endpoint and probes.
    admin = str(get(config, "admin.listen", "127.0.0.1:7071"))
    host, _, port = admin.rpartition(":")
    if host != "0.0.0.0":
        problems.append(f"{fw}: admin.listen is {admin}; kubelet probes the pod IP: use 0.0.0.0")
    admin_port = int(port) if port.isdigit() else None
    check_probe(fw, fanoutd, "startupProbe", "/readyz", admin_port, problems)
    check_probe(fw, fanoutd, "readinessProbe", "/readyz", admin_port, problems)
    check_probe(fw, fanoutd, "livenessProbe", "/healthz", admin_port, problems)

    # Memory: L1 fits under the limit with headroom.
    try:
        l1 = parse_bytes(get(config, "cache.l1.capacity", "256MiB"))
        limit = parse_quantity(fanoutd["resources"]["limits"]["memory"])
        if limit < l1 + L1_HEADROOM:
            problems.append(f"{fw}: memory limit {limit:.0f} is not cache.l1.capacity {l1} + 128MiB")
    except (KeyError, TypeError, ValueError) as e:
        problems.append(f"{fw}: cannot compare the memory limit with cache.l1.capacity: {e}")

    # The survival tier on an emptyDir whose sizeLimit is above its cap.
    l3_path = get(config, "cache.l3.path")
    if not l3_path:
        problems.append(f"{fw}: the configuration has no cache.l3.path")
    else:
        cap = parse_bytes(get(config, "cache.l3.max_bytes", "1GiB"))
        found = volume_for_path(pod, fanoutd, str(l3_path))
        empty_dir = (found[0] or {}).get("emptyDir") if found else None
        if empty_dir is None:
            problems.append(f"{fw}: cache.l3.path {l3_path} is not on an emptyDir")
        elif found[1].get("readOnly"):
            problems.append(f"{fw}: cache.l3.path {l3_path} is mounted read-only")
        elif "sizeLimit" not in empty_dir:
            problems.append(f"{fw}: the survival emptyDir has no sizeLimit")
        elif parse_quantity(empty_dir["sizeLimit"]) < SURVIVAL_FACTOR * cap:
            problems.append(f"{fw}: survival sizeLimit {empty_dir['sizeLimit']} is not "
                            f"{SURVIVAL_FACTOR} x cache.l3.max_bytes ({cap} bytes)")

    # The socket: server.listen on an emptyDir the app mounts at the same path.
    listen = str(get(config, "server.listen", ""))
    if not listen.startswith("unix:///"):
        problems.append(f"{fw}: server.listen {listen} is not a unix socket")
    else:
        sock = listen[len("unix://"):]
        found = volume_for_path(pod, fanoutd, sock)
        if not found or (found[0] or {}).get("emptyDir") is None:
            problems.append(f"{fw}: the socket {sock} is not on an emptyDir")
        else:
            volume, mount = found
            for app in apps:
                am = mount_of(app, volume["name"])
                if am is None or am["mountPath"] != mount["mountPath"]:
                    problems.append(f"{where}/{app['name']}: does not mount the socket volume "
                                    f"{volume['name']} at {mount['mountPath']}")
                env = {e.get("name"): e.get("value") for e in app.get("env") or []}
                if listen not in env.values():
                    problems.append(f"{where}/{app['name']}: no env variable gives it {listen}")

    # Graceful termination.
    drain = parse_duration(get(config, "server.drain_timeout", "10s"))
    delay = parse_duration(get(config, "server.shutdown_delay", "0"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > drain + delay:
        problems.append(f"{where}: terminationGracePeriodSeconds {grace} is not above "
                        f"drain_timeout + shutdown_delay ({drain + delay:g}s)")


def check_objects(objects):
    problems = []
    configmaps = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
    pods = [(o, p) for o, p in pod_templates(objects)
            if any(c.get("name") == "fanoutd" for c in (p.get("initContainers") or []) +
                   (p.get("containers") or []))]
    if not pods:
        problems.append("no workload runs fanoutd")
    for owner, pod in pods:
        check_pod(f"{owner['kind']}/{owner['metadata']['name']}", pod, configmaps, problems)
    # Every other container is held to the same resources and securityContext.
    for owner, pod in pod_templates(objects):
        if (owner, pod) in pods:
            continue
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            where = f"{owner['kind']}/{owner['metadata']['name']}/{c['name']}"
            check_security(where, pod, c, problems)
            check_resources(where, c, problems)
    return problems


# --- self-test: each mutation must be caught.

def _pod(objs):
    return next(p for o, p in pod_templates(objs) if any(
        c.get("name") == "fanoutd" for c in p.get("initContainers") or []))


def _fanoutd(objs):
    return next(c for c in _pod(objs)["initContainers"] if c["name"] == "fanoutd")


def _config(objs, edit):
    pod = _pod(objs)
    vol = next(v for v in pod["volumes"] if v.get("configMap") and
               v["name"] == volume_for_path(pod, _fanoutd(objs), CONFIG_PATH)[0]["name"])
    cm = next(o for o in objs if o.get("kind") == "ConfigMap" and
              o["metadata"]["name"] == vol["configMap"]["name"])
    config = yaml.safe_load(cm["data"]["config.yaml"])
    edit(config)
    cm["data"]["config.yaml"] = yaml.safe_dump(config)


def _survival(objs):
    pod = _pod(objs)
    name = next(m["name"] for m in _fanoutd(objs)["volumeMounts"]
                if m["mountPath"] == "/var/lib/fanout/survival")
    return next(v for v in pod["volumes"] if v["name"] == name)


MUTATIONS = {
    "sidecar without restartPolicy": lambda o: _fanoutd(o).pop("restartPolicy"),
    "fanoutd as a plain container": lambda o: _pod(o)["containers"].append(
        _pod(o)["initContainers"].pop()),
    "no liveness probe": lambda o: _fanoutd(o).pop("livenessProbe"),
    "readiness on /healthz": lambda o: _fanoutd(o)["readinessProbe"]["httpGet"].update(
        path="/healthz"),
    "startup probe on another port": lambda o: _fanoutd(o)["startupProbe"]["httpGet"].update(
        port=9999),
    "admin on loopback": lambda o: _config(o, lambda c: c["admin"].update(
        listen="127.0.0.1:7071")),
    "no memory limit": lambda o: _fanoutd(o)["resources"]["limits"].pop("memory"),
    "L1 above the memory limit": lambda o: _config(o, lambda c: c["cache"]["l1"].update(
        capacity="4GiB")),
    "app without cpu request": lambda o: _pod(o)["containers"][0]["resources"]["requests"].pop(
        "cpu"),
    "writable root filesystem": lambda o: _fanoutd(o)["securityContext"].update(
        readOnlyRootFilesystem=False),
    "privilege escalation": lambda o: _pod(o)["containers"][0]["securityContext"].pop(
        "allowPrivilegeEscalation"),
    "capabilities kept": lambda o: _fanoutd(o)["securityContext"].pop("capabilities"),
    "runs as root": lambda o: (_pod(o)["securityContext"].update(runAsUser=0)),
    "no seccomp": lambda o: (_fanoutd(o)["securityContext"].pop("seccompProfile"),
                             _pod(o)["securityContext"].pop("seccompProfile")),
    "survival sizeLimit below the cap": lambda o: _config(o, lambda c: c["cache"]["l3"].update(
        max_bytes="64GiB")),
    "survival without sizeLimit": lambda o: _survival(o)["emptyDir"].pop("sizeLimit"),
    "survival on the root filesystem": lambda o: _config(o, lambda c: c["cache"]["l3"].update(
        path="/opt/rocksdb")),
    "app without the socket volume": lambda o: _pod(o)["containers"][0].pop("volumeMounts"),
    "app told another address": lambda o: _pod(o)["containers"][0]["env"][0].update(
        value="127.0.0.1:7070"),
    "fanoutd on TCP": lambda o: _config(o, lambda c: c["server"].update(
        listen="127.0.0.1:7070")),
    "grace period below the drain": lambda o: _pod(o).update(terminationGracePeriodSeconds=12),
    "config not from a ConfigMap": lambda o: _fanoutd(o)["volumeMounts"].pop(0),
}
# Caught only by fanoutd's own parser (--fanoutd).
FANOUTD_MUTATIONS = {
    "a key fanoutd does not know": lambda o: _config(o, lambda c: c["cache"].update(
        ttl_seconds=60)),
    "a duration fanoutd cannot read": lambda o: _config(o, lambda c: c["server"].update(
        drain_timeout="soon")),
}


def self_test(objects):
    problems = []
    if check_objects(objects):
        return ["the unmodified objects do not pass"]
    mutations = dict(MUTATIONS)
    if FANOUTD is not None:
        mutations.update(FANOUTD_MUTATIONS)
    for name, mutate in mutations.items():
        broken = copy.deepcopy(objects)
        mutate(broken)
        if not check_objects(broken):
            problems.append(f"self-test: the check misses: {name}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--fanoutd", help="check each configuration with fanoutd --check_config")
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("overlays", nargs="+")
    args = parser.parse_args()
    global FANOUTD
    FANOUTD = args.fanoutd
    failed = False
    for overlay in args.overlays:
        try:
            objects = render(args.kubectl, overlay)
        except (RuntimeError, subprocess.TimeoutExpired, yaml.YAMLError) as e:
            print(f"{overlay}: {e}", file=sys.stderr)
            failed = True
            continue
        problems = check_objects(objects)
        if args.self_test and not problems:
            problems = self_test(objects)
        for p in problems:
            print(f"{overlay}: {p}", file=sys.stderr)
        failed = failed or bool(problems)
        kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
        print(f"{overlay}: {'FAIL' if problems else 'ok'} ({', '.join(kinds)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
