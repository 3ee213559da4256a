"""The Kubernetes manifests: schema validation (kubernetes-validate, offline schemas), cross-references
between them, and every kustomization under deploy/ rendered the way users apply it."""

import json
import os
import pathlib
import re
import subprocess
import sys
import tomllib

from .common import DEPLOY, K8S, ROOT, fail, fail_if, load_yaml_all, yaml_module
from .runner import run, tool

CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
NOT_K8S = {("kustomize.config.k8s.io/v1beta1", "Kustomization")}
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# Kinds that are not namespaced (none today; listed so that one added later is not held to the namespace rule).
CLUSTER_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def k8s_docs():
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for d in load_yaml_all(path):
            out.append((path, d))
    return out


def builtin_files():
    """Manifest files holding only built-in kinds (for kubernetes-validate); fails on files mixing kinds."""
    files = []
    for path in sorted(K8S.glob("*.yaml")):
        kinds = {(d.get("apiVersion"), d.get("kind")) for d in load_yaml_all(path)}
        if kinds & (CRD_KINDS | NOT_K8S):
            if kinds - (CRD_KINDS | NOT_K8S):
                fail(f"{path.name}: mixes custom and built-in kinds")
            continue
        files.append(str(path.relative_to(ROOT)))
    return files


def validate_files():
    """kubernetes-validate --strict on every file of built-in kinds."""
    files = builtin_files()
    if not files:
        fail("no manifest of built-in kinds found")
    run([sys.executable, "-m", "kubernetes_validate", "--strict", *files], cwd=ROOT)


def lint():
    """Cross-references between the manifests, the CRDs' shape, the kustomization."""
    problems = []
    by_kind = {}
    for path, d in k8s_docs():
        by_kind.setdefault(d.get("kind"), []).append((path, d))

    def one(kind):
        items = by_kind.get(kind, [])
        if len(items) != 1:
            problems.append(f"expected exactly one {kind}, found {len(items)}")
            return {}
        return items[0][1]

    dep, svc, cm, sec = one("Deployment"), one("Service"), one("ConfigMap"), one("Secret")
    sm, _pr, kus, pdb = one("ServiceMonitor"), one("PrometheusRule"), one("Kustomization"), one("PodDisruptionBudget")
    fail_if(problems)

    # kustomization: resources exist, every manifest but the example Secret is listed
    listed = set(kus.get("resources", []))
    for r in listed:
        if not (K8S / r).is_file():
            problems.append(f"kustomization.yaml: resource {r} does not exist")
    for path in K8S.glob("*.yaml"):
        if path.name not in listed | {"kustomization.yaml", "secret.example.yaml"}:
            problems.append(f"kustomization.yaml does not list {path.name}")
    if "secret.example.yaml" in listed:
        problems.append("kustomization.yaml must not apply the placeholder secret.example.yaml")

    tpl = dep["spec"]["template"]
    pod_labels = tpl["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    if not sel.items() <= pod_labels.items():
        problems.append("Deployment selector does not match its pod template labels")
    if dep["spec"].get("replicas", 1) < 2:
        problems.append("Deployment: want 2 replicas for HA")
    if not svc["spec"]["selector"].items() <= pod_labels.items():
        problems.append("Service selector does not match the pod labels")
    if not pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items():
        problems.append("PodDisruptionBudget selector does not match the pod labels")
    pod = tpl["spec"]
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problems.append("pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile must be RuntimeDefault")
    containers = pod["containers"]
    if len(containers) != 1:
        problems.append("expected one container")
    c = containers[0]
    csc = c.get("securityContext", {})
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("container readOnlyRootFilesystem must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("container allowPrivilegeEscalation must be false")
    if csc.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("container must drop ALL capabilities")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http-metrics") != 10049:
        problems.append(f"container port http-metrics must be 10049, got {ports}")
    for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
        hg = c.get(probe, {}).get("httpGet", {})
        if hg.get("path") != path or hg.get("port") not in ("http-metrics", 10049):
            problems.append(f"{probe} must GET {path} on http-metrics, got {hg}")
    res = c.get("resources", {})
    if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory") \
            or not res.get("limits", {}).get("memory"):
        problems.append("container needs cpu/memory requests and a memory limit")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    if "http-metrics" not in svc_ports or svc_ports["http-metrics"].get("targetPort") not in ("http-metrics", 10049):
        problems.append("Service needs port http-metrics targeting the container port")

    # ServiceMonitor -> Service
    if not sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"].get("labels", {}).items():
        problems.append("ServiceMonitor selector does not match the Service labels")
    for ep in sm["spec"].get("endpoints", []):
        if ep.get("port") not in svc_ports:
            problems.append(f"ServiceMonitor endpoint port {ep.get('port')} is not a Service port")
        if ep.get("path", "/metrics") != "/metrics":
            problems.append("ServiceMonitor path must be /metrics")
        jobs = [r for r in ep.get("relabelings", []) if r.get("targetLabel") == "job"]
        if not jobs or jobs[-1].get("replacement") != "dli_exporter":
            problems.append("ServiceMonitor must set job=dli_exporter (the alerts select it)")
    if not sm["spec"].get("endpoints"):
        problems.append("ServiceMonitor has no endpoints")

    # volumes -> ConfigMap / Secret; args -> mounted config; config -> mounted secret files
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    cm_name = cm["metadata"]["name"]
    sec_name = sec["metadata"]["name"]
    cm_vol = [n for n, v in vols.items() if v.get("configMap", {}).get("name") == cm_name]
    sec_vol = [n for n, v in vols.items() if v.get("secret", {}).get("secretName") == sec_name]
    if not cm_vol or cm_vol[0] not in mounts:
        problems.append(f"ConfigMap {cm_name} is not mounted")
    if not sec_vol or sec_vol[0] not in mounts:
        problems.append(f"Secret {sec_name} is not mounted")
    fail_if(problems)
    cfg_arg = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--config.file=")]
    cfg_path = f"{mounts[cm_vol[0]]}/config.toml"
    if cfg_arg != [cfg_path]:
        problems.append(f"--config.file should be {cfg_path}, args are {c.get('args')}")
    if "config.toml" not in cm.get("data", {}):
        problems.append("ConfigMap has no config.toml")
    else:
        conf = tomllib.loads(cm["data"]["config.toml"])
        auth = conf.get("auth", {})
        sec_keys = set(sec.get("stringData", {})) | set(sec.get("data", {}))
        for key in ("access_key_file", "secret_key_file"):
            p = auth.get(key)
            if not p:
                problems.append(f"config.toml [auth] {key} missing")
            elif os.path.dirname(p) != mounts[sec_vol[0]] or os.path.basename(p) not in sec_keys:
                problems.append(f"config.toml [auth] {key} = {p} is not a key of the mounted Secret")
        for key in ("access_key", "secret_key", "security_token", "password"):
            if key in auth:
                problems.append(f"config.toml must not hold {key} inline")
    fail_if(problems)
    print("Deployment, Service, PDB, ConfigMap, Secret, ServiceMonitor, PrometheusRule and kustomization agree")


def configmap_config(tmp):
    """Writes the ConfigMap's config.toml with the secret paths moved into TMP (placeholder files there);
    returns its path."""
    cm = next(d for _, d in k8s_docs() if d.get("kind") == "ConfigMap")
    text = cm["data"]["config.toml"]
    auth = tomllib.loads(text).get("auth", {})
    for key, value in auth.items():
        if key.endswith("_file"):
            new = os.path.join(tmp, os.path.basename(value))
            pathlib.Path(new).write_text(f"PLACEHOLDER{key.upper()}\n")
            text = text.replace(f'"{value}"', json.dumps(new))
    out = os.path.join(tmp, "k8s-config.toml")
    pathlib.Path(out).write_text(text)
    return out


# --- kustomize ------------------------------------------------------------------------------------------
def kustomization_dirs():
    """Every directory under deploy/ holding a kustomization (the base and any overlay added later)."""
    dirs = {p.parent for name in KUSTOMIZATION_FILES for p in DEPLOY.rglob(name)}
    return sorted(dirs)


def out_of_band_secrets():
    """Names of the Secrets users create themselves (secret.example.yaml shows their shape)."""
    return {d["metadata"]["name"] for d in load_yaml_all(K8S / "secret.example.yaml") if d.get("kind") == "Secret"}


def rendered_lint(docs):
    """What an overlay can break in what it renders: namespaces, selectors, references, images."""
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
        if not d.get("metadata", {}).get("name"):
            problems.append(f"{d.get('kind')} without metadata.name")
    namespaces = {d["metadata"].get("namespace") for d in docs if d.get("kind") not in CLUSTER_KINDS}
    if len(namespaces) > 1:
        problems.append(f"resources spread over namespaces {sorted(map(str, namespaces))}: the Service, "
                        "ServiceMonitor and pods only find each other in one")
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        problems.append("no Deployment rendered")
    pod_labels = [d["spec"]["template"]["metadata"].get("labels", {}) for d in deployments]

    def selects_pods(selector):
        return bool(selector) and any(selector.items() <= labels.items() for labels in pod_labels)

    for d in deployments:
        name = d["metadata"]["name"]
        if not d["spec"]["selector"].get("matchLabels", {}).items() <= \
                d["spec"]["template"]["metadata"].get("labels", {}).items():
            problems.append(f"Deployment {name}: selector does not match its pod template labels")
        pod = d["spec"]["template"]["spec"]
        configmaps = {c["metadata"]["name"] for c in by_kind.get("ConfigMap", [])}
        secrets = {s["metadata"]["name"] for s in by_kind.get("Secret", [])} | out_of_band_secrets()
        for v in pod.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problems.append(f"Deployment {name}: volume {v['name']} mounts ConfigMap "
                                f"{v['configMap']['name']}, which is not rendered (rendered: {sorted(configmaps)})")
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                problems.append(f"Deployment {name}: volume {v['name']} mounts Secret {v['secret']['secretName']}, "
                                f"neither rendered nor the documented {sorted(out_of_band_secrets())}")
        for c in pod.get("containers", []):
            image = c.get("image", "")
            if not re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image.rsplit("/", 1)[-1]) \
                    or image.endswith(":latest"):
                problems.append(f"Deployment {name}: container {c['name']} image {image!r} has no pinned tag")
    services = by_kind.get("Service", [])
    for s in services:
        if not selects_pods(s["spec"].get("selector", {})):
            problems.append(f"Service {s['metadata']['name']}: selector {s['spec'].get('selector')} matches no pods")
    for p in by_kind.get("PodDisruptionBudget", []):
        if not selects_pods(p["spec"]["selector"].get("matchLabels", {})):
            problems.append(f"PodDisruptionBudget {p['metadata']['name']}: selector matches no pods")
    for m in by_kind.get("ServiceMonitor", []):
        sel = m["spec"].get("selector", {}).get("matchLabels", {})
        matched = [s for s in services if sel and sel.items() <= s["metadata"].get("labels", {}).items()]
        if not matched:
            problems.append(f"ServiceMonitor {m['metadata']['name']}: selector {sel} matches no Service")
        ports = {p.get("name") for s in matched for p in s["spec"]["ports"]}
        for ep in m["spec"].get("endpoints", []):
            if matched and ep.get("port") not in ports:
                problems.append(f"ServiceMonitor {m['metadata']['name']}: port {ep.get('port')} is not a port "
                                f"of the Service it selects ({sorted(ports)})")
    for r in by_kind.get("PrometheusRule", []):
        if not r.get("spec", {}).get("groups"):
            problems.append(f"PrometheusRule {r['metadata']['name']}: no spec.groups")
    return problems


def render(directory, work):
    """`kubectl kustomize DIRECTORY` (what `kubectl apply -k` applies); the built-in kinds of the output
    through kubernetes-validate --strict, the custom kinds checked for shape, the whole for the references
    an overlay can break."""
    directory = pathlib.Path(directory).resolve()
    rel = directory.relative_to(ROOT)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(rel)).strip("-")
    p = subprocess.run([tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"kubectl kustomize {rel}: exit code {p.returncode}\n{p.stderr}{p.stdout}")
    text = p.stdout
    rendered = pathlib.Path(work) / f"rendered-{slug}.yaml"
    rendered.write_text(text, encoding="utf-8")
    docs = [d for d in yaml_module().safe_load_all(text) if d is not None]
    builtin, custom, problems = [], [], []
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        if key in CRD_KINDS:
            custom.append(d)
        elif key in NOT_K8S:
            problems.append(f"{key[1]} left in the rendered output")
        else:
            builtin.append(d)
    for d in custom:
        if not d.get("metadata", {}).get("name") or not isinstance(d.get("spec"), dict):
            problems.append(f"{d.get('kind')} {d.get('metadata', {}).get('name')}: needs metadata.name and spec")
    problems += rendered_lint(docs)
    fail_if(problems)
    builtin_file = pathlib.Path(work) / f"rendered-{slug}-builtin.yaml"
    builtin_file.write_text(yaml_module().safe_dump_all(builtin, sort_keys=False), encoding="utf-8")
    run([sys.executable, "-m", "kubernetes_validate", "--strict", builtin_file])
    kinds = ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    return f"{rel}: {len(docs)} resources ({kinds}); {len(builtin)} validated against the schemas"
