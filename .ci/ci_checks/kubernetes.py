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


WORKLOADS = ("Deployment", "StatefulSet")


def mounted_config(pod, configmaps):
    """The config.toml of the ConfigMap a pod mounts where its --config.file points, parsed; None if there is
    none to check."""
    c = pod["containers"][0]
    arg = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--config.file=")]
    if not arg:
        return None
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    for v in pod.get("volumes", []):
        name = v.get("configMap", {}).get("name")
        if name in configmaps and v["name"] in mounts and arg[0].startswith(mounts[v["name"]] + "/"):
            key = os.path.relpath(arg[0], mounts[v["name"]])
            text = configmaps[name].get("data", {}).get(key)
            return tomllib.loads(text) if text is not None else None
    return None


def auth_file_problems(kind, name, pod, config):
    """Every *_file of [auth] lies in a volume the container mounts; kind = "oidc" reads a projected service
    account token (with an audience) at exactly that path; the keyless kinds hold no key material."""
    problems = []
    auth = config.get("auth", {})
    c = pod["containers"][0]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = [(m["mountPath"], volumes.get(m["name"], {})) for m in c.get("volumeMounts", [])]
    for key, path in auth.items():
        if not key.endswith("_file"):
            continue
        inside = [(mp, v) for mp, v in mounts if path.startswith(mp.rstrip("/") + "/")]
        if not inside:
            problems.append(f"{kind} {name}: [auth] {key} = {path} is in no mounted volume")
            continue
        mount_path, volume = inside[0]
        if key == "id_token_file":
            rel = os.path.relpath(path, mount_path)
            tokens = [src["serviceAccountToken"] for src in volume.get("projected", {}).get("sources", [])
                      if "serviceAccountToken" in src]
            if not any(t.get("path") == rel and t.get("audience") for t in tokens):
                problems.append(f"{kind} {name}: id_token_file {path} is not a projected serviceAccountToken "
                                "with an audience")
    if auth.get("kind") in ("metadata", "oidc"):
        for key in ("access_key", "secret_key", "security_token", "password", "access_key_file",
                    "secret_key_file", "security_token_file", "password_file"):
            if key in auth:
                problems.append(f"{kind} {name}: [auth] kind = {auth['kind']} with {key}")
        if any("secret" in v for v in pod.get("volumes", [])):
            problems.append(f"{kind} {name}: a keyless [auth] kind still mounts a Secret")
    return problems


def rendered_lint(docs):
    """What an overlay can break in what it renders: namespaces, selectors, references, images, the config's
    files."""
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
    workloads = [d for kind in WORKLOADS for d in by_kind.get(kind, [])]
    if not workloads:
        problems.append("no Deployment or StatefulSet rendered")
    pod_labels = [d["spec"]["template"]["metadata"].get("labels", {}) for d in workloads]

    def selects_pods(selector):
        return bool(selector) and any(selector.items() <= labels.items() for labels in pod_labels)

    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    services = by_kind.get("Service", [])
    accounts = {a["metadata"]["name"] for a in by_kind.get("ServiceAccount", [])} | {"default"}
    for d in workloads:
        kind, name = d["kind"], d["metadata"]["name"]
        if not d["spec"]["selector"].get("matchLabels", {}).items() <= \
                d["spec"]["template"]["metadata"].get("labels", {}).items():
            problems.append(f"{kind} {name}: selector does not match its pod template labels")
        pod = d["spec"]["template"]["spec"]
        secrets = {s["metadata"]["name"] for s in by_kind.get("Secret", [])} | out_of_band_secrets()
        for v in pod.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problems.append(f"{kind} {name}: volume {v['name']} mounts ConfigMap "
                                f"{v['configMap']['name']}, which is not rendered (rendered: {sorted(configmaps)})")
            if "secret" in v and v["secret"]["secretName"] not in secrets:
                problems.append(f"{kind} {name}: volume {v['name']} mounts Secret {v['secret']['secretName']}, "
                                f"neither rendered nor the documented {sorted(out_of_band_secrets())}")
        if pod.get("serviceAccountName", "default") not in accounts:
            problems.append(f"{kind} {name}: serviceAccountName {pod['serviceAccountName']} is not rendered")
        if kind == "StatefulSet":
            governing = [s for s in services if s["metadata"]["name"] == d["spec"].get("serviceName")]
            if not governing or governing[0]["spec"].get("clusterIP") != "None":
                problems.append(f"StatefulSet {name}: serviceName {d['spec'].get('serviceName')} is not a rendered "
                                "headless Service")
        for c in pod.get("containers", []):
            image = c.get("image", "")
            if not re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image.rsplit("/", 1)[-1]) \
                    or image.endswith(":latest"):
                problems.append(f"{kind} {name}: container {c['name']} image {image!r} has no pinned tag")
        config = mounted_config(pod, configmaps)
        if config is not None:
            problems += auth_file_problems(kind, name, pod, config)
    for s in services:
        if not selects_pods(s["spec"].get("selector", {})):
            problems.append(f"Service {s['metadata']['name']}: selector {s['spec'].get('selector')} matches no pods")
    for p in by_kind.get("PodDisruptionBudget", []):
        if not selects_pods(p["spec"]["selector"].get("matchLabels", {})):
            problems.append(f"PodDisruptionBudget {p['metadata']['name']}: selector matches no pods")
    for m in by_kind.get("ServiceMonitor", []):
        sel = m["spec"].get("selector", {}).get("matchLabels", {})
        matched = [s for s in services if sel and sel.items() <= s["metadata"].get("labels", {}).items()]
        if len(matched) != 1:
            problems.append(f"ServiceMonitor {m['metadata']['name']}: selector {sel} matches "
                            f"{[s['metadata']['name'] for s in matched]}: want exactly one Service (two would "
                            "scrape every pod twice)")
        ports = {p.get("name") for s in matched for p in s["spec"]["ports"]}
        for ep in m["spec"].get("endpoints", []):
            if matched and ep.get("port") not in ports:
                problems.append(f"ServiceMonitor {m['metadata']['name']}: port {ep.get('port')} is not a port "
                                f"of the Service it selects ({sorted(ports)})")
    for r in by_kind.get("PrometheusRule", []):
        if not r.get("spec", {}).get("groups"):
            problems.append(f"PrometheusRule {r['metadata']['name']}: no spec.groups")
    return problems


# --- overlays -------------------------------------------------------------------------------------------
OVERLAYS = DEPLOY / "overlays"
SHARD_ARGS = re.compile(r"^--(shard|total-shards)=")


def sharded_lint():
    """deploy/overlays/sharded: its StatefulSet's pod template is the base Deployment's plus --shard=auto and
    --total-shards=N, N being its replicas (a pod numbered N or more would refuse to start)."""
    problems = []
    sts = [d for d in load_yaml_all(OVERLAYS / "sharded" / "statefulset.yaml") if d.get("kind") == "StatefulSet"]
    dep = [d for d in load_yaml_all(K8S / "deployment.yaml") if d.get("kind") == "Deployment"]
    if len(sts) != 1 or len(dep) != 1:
        fail(f"want one StatefulSet in the overlay and one Deployment in the base, got {len(sts)} and {len(dep)}")
    sts, dep = sts[0], dep[0]
    tpl = json.loads(json.dumps(sts["spec"]["template"]))
    args = tpl["spec"]["containers"][0].get("args", [])
    shard_args = [a for a in args if SHARD_ARGS.match(a)]
    tpl["spec"]["containers"][0]["args"] = [a for a in args if not SHARD_ARGS.match(a)]
    if tpl != dep["spec"]["template"]:
        problems.append("statefulset.yaml's pod template differs from deployment.yaml's beyond the shard flags: "
                        "keep them the same")
    replicas = sts["spec"].get("replicas", 1)
    if shard_args != ["--shard=auto", f"--total-shards={replicas}"]:
        problems.append(f"want args --shard=auto --total-shards={replicas} (= replicas), got {shard_args}")
    if sts["metadata"]["name"] != dep["metadata"]["name"]:
        problems.append("the StatefulSet should keep the Deployment's name (pods dli-exporter-N, the ordinal last)")
    fail_if(problems)
    print(f"StatefulSet: {replicas} shards, pod template = the base Deployment's + {' '.join(shard_args)}")


def rendered_configs(tmp):
    """The config.toml of every overlay's ConfigMap (name -> path in TMP), with each [auth] *_file moved to a
    placeholder file in TMP, for --check-config."""
    out = {}
    for directory in kustomization_dirs():
        if directory == K8S:
            continue
        p = subprocess.run([tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True)
        if p.returncode != 0:
            fail(f"kubectl kustomize {directory.relative_to(ROOT)}: {p.stderr}")
        for d in yaml_module().safe_load_all(p.stdout):
            if d and d.get("kind") == "ConfigMap" and "config.toml" in d.get("data", {}):
                slug = re.sub(r"[^A-Za-z0-9]+", "-", str(directory.relative_to(ROOT)))
                out[str(directory.relative_to(ROOT))] = placeholder_config(d["data"]["config.toml"], tmp, slug)
    return out


def placeholder_config(text, tmp, slug):
    """TEXT with every [auth] *_file path replaced by a placeholder file in TMP; returns the written path."""
    auth = tomllib.loads(text).get("auth", {})
    for key, value in auth.items():
        if key.endswith("_file"):
            new = os.path.join(tmp, f"{slug}-{os.path.basename(value)}")
            pathlib.Path(new).write_text(f"PLACEHOLDER{key.upper()}\n")
            text = text.replace(f'"{value}"', json.dumps(new))
    out = os.path.join(tmp, f"{slug}-config.toml")
    pathlib.Path(out).write_text(text)
    return out


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
