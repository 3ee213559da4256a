#!/usr/bin/env bash
# Checks everything under deploy/ (Prometheus rules and their unit tests, the PrometheusRule, the Kubernetes
# manifests, the Grafana dashboard, the systemd unit, the Dockerfile) and runs the exporter's demo mode
# against a real Prometheus server.
#
#   .ci/deploy-checks.sh target/debug/dli_exporter    # everything (what CI runs)
#   .ci/deploy-checks.sh --static-only                # no binary: skips the demo / end-to-end part
#
# Runs from anywhere (it cd's to the repository root), as root on Debian bookworm; installs what it misses
# (Debian: prometheus, curl, systemd; PyPI: kubernetes-validate, which brings PyYAML and ships the
# Kubernetes JSON schemas, so validation is offline). All network traffic of the checks themselves stays on
# 127.0.0.1. Ends with the line "deploy-checks: N passed, M failed" and exits non-zero if anything failed.
#
# Environment:
#   DEPLOY_CHECKS_TIMEOUT   seconds to wait for readiness / end-to-end conditions (default 90)
#   DEPLOY_CHECKS_KEEP=1    keep the temporary directory (logs, scraped metrics, Prometheus config)
#   DEPLOY_CHECKS_VERBOSE=1 print the output of passing checks too
set -euo pipefail

SCRIPT=$(realpath "${BASH_SOURCE[0]}")
usage() { sed -n '2,7p' "$SCRIPT" | sed 's/^# \{0,1\}//'; }

BIN=""
case "${1:-}" in
  --static-only) BIN="" ;;
  -h | --help) usage; exit 0 ;;
  "") echo "deploy-checks: missing argument: the path to the built dli_exporter binary, or --static-only" >&2
      usage >&2; exit 2 ;;
  *) BIN=$1
     if [[ ! -x $BIN ]]; then echo "deploy-checks: $BIN is not an executable file" >&2; exit 2; fi
     BIN=$(realpath "$BIN") ;;
esac

cd "$(dirname "$SCRIPT")/.."
ROOT=$(pwd)

TIMEOUT=${DEPLOY_CHECKS_TIMEOUT:-90}
START_TIME=$(date +%s)
WORK=$(mktemp -d /tmp/deploy-checks.XXXXXX)
PIDS=()

cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ ${DEPLOY_CHECKS_KEEP:-0} == 1 ]]; then
    echo "deploy-checks: kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PASSED=0
FAILED=0
FAILED_NAMES=()

# check NAME CMD...: runs CMD, prints "ok" or "FAIL" and, on failure, CMD's output.
check() {
  local name=$1; shift
  local log="$WORK/check.log" t0=$SECONDS
  if "$@" >"$log" 2>&1; then
    PASSED=$((PASSED + 1))
    printf 'ok    %-68s %3ss\n' "$name" "$((SECONDS - t0))"
    if [[ ${DEPLOY_CHECKS_VERBOSE:-0} == 1 ]]; then sed 's/^/      /' "$log"; fi
  else
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("$name")
    printf 'FAIL  %-68s %3ss\n' "$name" "$((SECONDS - t0))"
    sed 's/^/      | /' "$log" | head -n 200
  fi
}

note() { printf -- '----  %s\n' "$*"; }
skip() { printf 'skip  %s\n' "$*"; }

# ------------------------------------------------------------------------------------------------------
# tools
# ------------------------------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  if [[ $APT_UPDATED == 0 ]]; then
    apt-get update -qq >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log"; return 1; }
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    >"$WORK/apt-install.log" 2>&1 || { tail -n 30 "$WORK/apt-install.log"; return 1; }
}

note "tools"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  echo "      installing Debian package prometheus (promtool, prometheus)"
  apt_install prometheus
fi
if ! command -v curl >/dev/null; then
  echo "      installing Debian package curl"
  apt_install curl
fi
PY=python3
if ! $PY -c 'import yaml, kubernetes_validate' 2>/dev/null; then
  echo "      installing kubernetes-validate from PyPI (brings PyYAML)"
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
    $PY -m pip install --quiet 'kubernetes-validate==1.37.0'
fi
HAVE_SYSTEMD_ANALYZE=1
if ! command -v systemd-analyze >/dev/null; then
  echo "      installing Debian package systemd (systemd-analyze)"
  apt_install systemd || true
  command -v systemd-analyze >/dev/null || HAVE_SYSTEMD_ANALYZE=0
fi
echo "      $(promtool --version 2>&1 | head -n 1)"
echo "      $(prometheus --version 2>&1 | head -n 1)"
echo "      kubernetes-validate $($PY -m kubernetes_validate --version 2>&1), $($PY --version 2>&1)"
if [[ $HAVE_SYSTEMD_ANALYZE == 1 ]]; then
  echo "      $(systemd-analyze --version | head -n 1)"
else
  echo "      systemd-analyze: NOT AVAILABLE (the systemd unit checks are skipped)"
fi

# The Python half of the checks: written out once, called per check with a subcommand.
cat >"$WORK/checks.py" <<'PYEOF'
"""Helpers for .ci/deploy-checks.sh: python3 checks.py SUBCOMMAND ARGS..."""
import glob
import json
import os
import pathlib
import re
import sys
import time
import tomllib
import urllib.parse
import urllib.request

import yaml

ROOT = pathlib.Path.cwd()
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "kubernetes"
GRAFANA = DEPLOY / "grafana"

# --- the exporter's contract (shared/design.md §5) -------------------------------------------------------
CONTRACT = {
    "dli_batch_jobs": "gauge",
    "dli_batch_jobs_by_owner": "gauge",
    "dli_batch_oldest_job_created_timestamp_seconds": "gauge",
    "dli_poll_success": "gauge",
    "dli_poll_duration_seconds": "gauge",
    "dli_poll_pages": "gauge",
    "dli_last_successful_poll_timestamp_seconds": "gauge",
    "dli_up": "gauge",
    "dli_api_requests_total": "counter",
    "dli_api_request_failures_total": "counter",
    "dli_api_request_duration_seconds": "histogram",
    "dli_api_requests_held_total": "counter",
    "dli_exporter_build_info": "gauge",
    "dli_batch_jobs_finished_total": "counter",
    "dli_batch_jobs_submitted_total": "counter",
    "dli_batch_job_duration_seconds": "histogram",
    "dli_exporter_config_last_reload_successful": "gauge",
    "dli_exporter_config_last_reload_success_timestamp_seconds": "gauge",
    # queue discovery and the queue list (the demo discovers its queues)
    "dli_queue_info": "gauge",
    "dli_queue_cu": "gauge",
    "dli_queue_cu_used": "gauge",
    "dli_queue_cu_scale_out_limit": "gauge",
    "dli_queue_cu_scale_in_limit": "gauge",
    "dli_discovery_success": "gauge",
    "dli_discovered_queues": "gauge",
}
# Buckets of dli_batch_job_duration_seconds (the dashboard's and recording rules' quantiles rely on them).
JOB_DURATION_BUCKETS = ["30", "60", "120", "300", "600", "1200", "1800", "3600", "7200", "14400", "28800",
                        "43200", "86400", "+Inf"]
# Terminal states whose dli_batch_jobs_finished_total / dli_batch_job_duration_seconds series exist from a
# queue's first successful poll (other terminal states appear when DLI reports one).
FINISHED_STATES = ["success", "dead"]
# process_* metrics of the prometheus crate's process collector that the deploy files use.
PROCESS = {"process_resident_memory_bytes": "gauge", "process_cpu_seconds_total": "counter"}
# Series made by Prometheus itself, not by the exporter.
SYNTHETIC = {"up"}
# Metrics that may legitimately be missing from a fresh `--demo` exposition.
ABSENT_IN_DEMO_OK = {
    # A counter with labels has no series until a child is incremented: it appears with the first failed
    # request, and the demo may not have failed one yet.
    "dli_api_request_failures_total",
}
DEMO_PROJECT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
DEMO_QUEUES = ["etl", "adhoc"]
STATES = ["starting", "running", "recovering", "success", "dead"]
SEVERITIES = {"critical", "warning", "info"}


def fail(msg):
    print(msg)
    sys.exit(1)


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --- PromQL metric names -------------------------------------------------------------------------------
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
            "unless", "inf", "nan", "start", "end", "atan2"}


def metric_names(expr):
    """Metric names referenced by a PromQL expression (good enough for hand-written rules/dashboards:
    strings, label matchers, ranges and grouping clauses are removed, then every identifier that is not
    followed by '(' and is not a keyword is a metric name)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"#[^\n]*", " ", s)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)", s):
        name = m.group(1)
        if name.lower() in KEYWORDS or re.match(r"\s*\(", s[m.end():]):
            continue
        names.add(name)
    return names


def rule_exprs():
    """(where, expr) of every rule in the plain rule files."""
    out = []
    for path in (PROM / "recording.yml", PROM / "alerts.yml"):
        for g in load_yaml(path)["groups"]:
            for r in g["rules"]:
                out.append((f"{path.name}:{r.get('alert') or r.get('record')}", r["expr"]))
    return out


def recording_names():
    return [r["record"] for g in load_yaml(PROM / "recording.yml")["groups"] for r in g["rules"]]


# --- Grafana --------------------------------------------------------------------------------------------
SUBST = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
    "__range_ms": "3600000", "__interval_ms": "60000", "__rate_interval_ms": "300000",
}


def grafana_substitute(expr, variables):
    def value(name):
        if name in SUBST:
            return SUBST[name]
        if name in variables:
            return variables[name]
        raise ValueError(f"unknown dashboard variable ${name} in {expr!r}")

    def repl(m):
        name = m.group("b") or m.group("p") or m.group("s")
        return value(name)

    out = re.sub(r"\$\{(?P<b>\w+)(?::[^}]*)?\}|\[\[(?P<s>\w+)(?::[^\]]*)?\]\]|\$(?P<p>\w+)", repl, expr)
    if "$" in out:
        raise ValueError(f"unsubstituted variable left in {out!r}")
    return out


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def dashboard_queries(path):
    """(where, substituted expr) of every panel target and every query variable (label_values selector)."""
    d = json.load(open(path, encoding="utf-8"))
    variables = {}
    for v in d.get("templating", {}).get("list", []):
        variables[v["name"]] = ".*" if v.get("type") == "query" else "prometheus"
    out = []
    for p in all_panels(d.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                out.append((f"{path.name} panel {p['id']} {p.get('title')!r} ref {t.get('refId')}",
                            grafana_substitute(t["expr"], variables)))
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q)
        if not m:
            raise ValueError(f"variable {v['name']}: expected label_values(SELECTOR, LABEL), got {q!r}")
        out.append((f"{path.name} variable {v['name']}", grafana_substitute(m.group(1), variables)))
    return out


def dashboards():
    return sorted(GRAFANA.glob("*.json"))


# --- exposition -----------------------------------------------------------------------------------------
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_exposition(path):
    with open(path, encoding="utf-8") as f:
        return parse_exposition_text(f.read())


def parse_exposition_text(text):
    samples, types = [], {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(None, 3)
            types[name] = typ
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
            if not m:
                raise ValueError(f"unparsable sample line {line!r}")
            samples.append((m.group(1), dict(LABEL_RE.findall(m.group(3) or "")), m.group(4)))
    return samples, types


def available_names(samples, types):
    names = {s[0] for s in samples}
    names |= {n for n in types if any(s[0] in (n, n + "_bucket", n + "_sum", n + "_count", n + "_total")
                                      for s in samples)}
    return names


# ======================================================================================================
# subcommands
# ======================================================================================================
def cmd_rules_lint():
    """Alerts: labels/annotations/runbook sections; tests: every alert firing and not firing, every
    recording rule tested."""
    problems = []
    runbook = (PROM / "RUNBOOK.md").read_text(encoding="utf-8")
    anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^## (.+)$", runbook, re.M)}
    alerts = []
    for g in load_yaml(PROM / "alerts.yml")["groups"]:
        for r in g["rules"]:
            if "alert" not in r:
                problems.append(f"alerts.yml: group {g['name']} holds a non-alert rule {r}")
                continue
            name = r["alert"]
            alerts.append(name)
            sev = r.get("labels", {}).get("severity")
            if sev not in SEVERITIES:
                problems.append(f"{name}: labels.severity {sev!r} not in {sorted(SEVERITIES)}")
            ann = r.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key):
                    problems.append(f"{name}: annotation {key} missing")
            url = ann.get("runbook_url", "")
            m = re.search(r"RUNBOOK\.md#([\w-]+)$", url)
            if not m:
                problems.append(f"{name}: runbook_url {url!r} does not point at RUNBOOK.md#section")
            elif m.group(1) not in anchors:
                problems.append(f"{name}: runbook_url anchor #{m.group(1)} is not a '## ' section of RUNBOOK.md")
            elif m.group(1) != name.lower():
                problems.append(f"{name}: runbook_url anchor #{m.group(1)} should be #{name.lower()}")
    if len(set(alerts)) != len(alerts):
        problems.append(f"duplicate alert names: {alerts}")
    extra = anchors - {a.lower() for a in alerts}
    if extra:
        problems.append(f"RUNBOOK.md sections without an alert: {sorted(extra)}")
    for g in load_yaml(PROM / "recording.yml")["groups"]:
        for r in g["rules"]:
            if "record" not in r:
                problems.append(f"recording.yml: group {g['name']} holds a non-recording rule {r}")
            elif not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+|[a-z_]+:[a-z0-9_]+", r["record"]):
                problems.append(f"recording rule name {r['record']!r} is not level:metric:operations")

    firing, quiet, tested_exprs = set(), set(), []
    tests = sorted((PROM / "tests").glob("*.yml"))
    if not tests:
        problems.append("no deploy/prometheus/tests/*.yml")
    for path in tests:
        for t in load_yaml(path).get("tests", []):
            for a in t.get("alert_rule_test", []) or []:
                (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
            for e in t.get("promql_expr_test", []) or []:
                tested_exprs.append(e["expr"])
    for name in alerts:
        if name not in firing:
            problems.append(f"{name}: no test where it fires (alert_rule_test with non-empty exp_alerts)")
        if name not in quiet:
            problems.append(f"{name}: no test where it does not fire (alert_rule_test with exp_alerts: [])")
    for rec in recording_names():
        if not any(rec in metric_names(e) for e in tested_exprs):
            problems.append(f"recording rule {rec}: no promql_expr_test")
    print(f"{len(alerts)} alerts, {len(recording_names())} recording rules, {len(tests)} test files")
    if problems:
        fail("\n".join(problems))


def cmd_promrule(out):
    """PrometheusRule: right apiVersion/kind, spec.groups identical to recording.yml + alerts.yml; writes
    the spec to OUT for promtool."""
    docs = load_yaml_all(K8S / "prometheusrule.yaml")
    if len(docs) != 1:
        fail(f"prometheusrule.yaml: expected one document, got {len(docs)}")
    pr = docs[0]
    if pr.get("apiVersion") != "monitoring.coreos.com/v1" or pr.get("kind") != "PrometheusRule":
        fail(f"prometheusrule.yaml: apiVersion/kind {pr.get('apiVersion')}/{pr.get('kind')}")
    if not pr.get("metadata", {}).get("name"):
        fail("prometheusrule.yaml: metadata.name missing")
    want = load_yaml(PROM / "recording.yml")["groups"] + load_yaml(PROM / "alerts.yml")["groups"]
    if pr["spec"]["groups"] != want:
        fail("prometheusrule.yaml spec.groups differ from recording.yml + alerts.yml: "
             "run python3 deploy/prometheus/gen_prometheusrule.py")
    if set(pr["spec"]) != {"groups"}:
        fail(f"prometheusrule.yaml: unexpected spec keys {sorted(pr['spec'])}")
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": pr["spec"]["groups"]}, f, sort_keys=False)
    print(f"{sum(len(g['rules']) for g in want)} rules in {len(want)} groups, identical")


CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
NOT_K8S = {("kustomize.config.k8s.io/v1beta1", "Kustomization")}


def k8s_docs():
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for d in load_yaml_all(path):
            out.append((path, d))
    return out


def cmd_k8s_builtin_files():
    """Files holding only built-in kinds (for kubernetes-validate); fails on unknown kinds."""
    files = []
    for path in sorted(K8S.glob("*.yaml")):
        kinds = {(d.get("apiVersion"), d.get("kind")) for d in load_yaml_all(path)}
        if kinds & (CRD_KINDS | NOT_K8S):
            if kinds - (CRD_KINDS | NOT_K8S):
                fail(f"{path.name}: mixes custom and built-in kinds")
            continue
        files.append(str(path.relative_to(ROOT)))
    print("\n".join(files))


def cmd_k8s_lint():
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
    sm, pr, kus, pdb = one("ServiceMonitor"), one("PrometheusRule"), one("Kustomization"), one("PodDisruptionBudget")
    if problems:
        fail("\n".join(problems))

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
    if problems:
        fail("\n".join(problems))
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
    if problems:
        fail("\n".join(problems))
    print("Deployment, Service, PDB, ConfigMap, Secret, ServiceMonitor, PrometheusRule and kustomization agree")


def cmd_k8s_config(tmp):
    """Writes the ConfigMap's config.toml with the secret paths moved into TMP (placeholder files there)."""
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
    print(out)


def cmd_dashboard_lint():
    problems = []
    files = dashboards()
    if not files:
        fail("no deploy/grafana/*.json")
    for path in files:
        d = json.load(open(path, encoding="utf-8"))
        variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
        ds = variables.get("datasource")
        if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
            problems.append(f"{path.name}: needs a $datasource variable of type datasource, query prometheus")
        for name in ("project_id", "queue"):
            v = variables.get(name)
            q = v and (v["query"]["query"] if isinstance(v["query"], dict) else v["query"])
            if not v or v.get("type") != "query" or not q or not q.startswith("label_values("):
                problems.append(f"{path.name}: needs a ${name} variable with a label_values() query")
            elif v.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{path.name}: variable {name} must use ${{datasource}}")
        ids = [p["id"] for p in all_panels(d.get("panels", []))]
        if len(ids) != len(set(ids)):
            problems.append(f"{path.name}: duplicate panel ids")
        cells = {}
        for p in d.get("panels", []):
            g = p["gridPos"]
            if g["x"] + g["w"] > 24:
                problems.append(f"{path.name}: panel {p['id']} wider than the grid")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        problems.append(f"{path.name}: panels {cells[(x, y)]} and {p['id']} overlap")
                    cells[(x, y)] = p["id"]
            if p["type"] == "row":
                continue
            if p.get("datasource", {}).get("uid") != "${datasource}" or p["datasource"].get("type") != "prometheus":
                problems.append(f"{path.name}: panel {p['id']} does not use the prometheus ${{datasource}}")
            if not p.get("targets"):
                problems.append(f"{path.name}: panel {p['id']} {p.get('title')!r} has no query")
            for t in p.get("targets", []):
                if not t.get("expr"):
                    problems.append(f"{path.name}: panel {p['id']} has a target without expr")
                if t.get("datasource", {}).get("uid") not in (None, "${datasource}"):
                    problems.append(f"{path.name}: panel {p['id']} target with another datasource")
        print(f"{path.name}: {len(ids)} panels, variables {sorted(variables)}")
    if problems:
        fail("\n".join(dict.fromkeys(problems)))


def cmd_dashboard_rules(out):
    """Every dashboard query, variables substituted, as recording rules for `promtool check rules`."""
    rules = []
    for path in dashboards():
        for i, (where, expr) in enumerate(dashboard_queries(path)):
            rules.append({"record": f"dashboard_check:{re.sub(r'[^a-zA-Z0-9_]', '_', path.stem)}:q{i}",
                          "expr": expr, "labels": {"where": where}})
    with open(out, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
    print(f"{len(rules)} dashboard queries")


def referenced():
    """{metric name: [where it is used]} over rules and dashboards."""
    refs = {}
    for where, expr in rule_exprs():
        for n in metric_names(expr):
            refs.setdefault(n, []).append(where)
    for path in dashboards():
        for where, expr in dashboard_queries(path):
            for n in metric_names(expr):
                refs.setdefault(n, []).append(where)
    return refs


def known_contract_name(n):
    for base, typ in {**CONTRACT, **PROCESS}.items():
        if n == base or (typ == "histogram" and n in (base + "_bucket", base + "_sum", base + "_count")):
            return True
    return False


def cmd_refs_contract():
    """Every referenced metric is a contract metric, a recording rule or a synthetic series."""
    refs = referenced()
    records = set(recording_names())
    problems = []
    for n, where in sorted(refs.items()):
        if ":" in n:
            if n not in records:
                problems.append(f"{n} (used in {where[0]}) is not a recording rule of recording.yml")
        elif n not in SYNTHETIC and not known_contract_name(n):
            problems.append(f"{n} (used in {where[0]}) is not an exporter metric of the contract")
    print(f"{len(refs)} names referenced: {', '.join(sorted(refs))}")
    if problems:
        fail("\n".join(problems))


def cmd_refs_demo(exposition):
    """Every referenced exporter metric is in the demo's /metrics (but for the commented allow-list)."""
    samples, types = parse_exposition(exposition)
    have = available_names(samples, types)
    problems = []
    for n, where in sorted(referenced().items()):
        if ":" in n or n in SYNTHETIC:
            continue
        if n not in have:
            if n in ABSENT_IN_DEMO_OK:
                print(f"note: {n} absent from the demo output (allowed: appears with the first failure)")
            else:
                problems.append(f"{n} (used in {', '.join(where[:3])}) is not in the demo /metrics output")
    if problems:
        fail("\n".join(problems))
    print("every referenced exporter metric is exposed by the demo")


def cmd_demo_contract(exposition):
    """The demo exposition carries the contract metrics with their types and the demo queues/states."""
    samples, types = parse_exposition(exposition)
    problems = []
    for n, typ in {**CONTRACT, **PROCESS}.items():
        present = any(s[0] in (n, n + "_bucket", n + "_count") for s in samples)
        if not present and n not in ABSENT_IN_DEMO_OK:
            problems.append(f"{n} missing")
        if present and types.get(n) != typ:
            problems.append(f"{n}: TYPE {types.get(n)!r}, contract says {typ}")
    jobs = {(s[1].get("project_id"), s[1].get("queue"), s[1].get("state"))
            for s in samples if s[0] == "dli_batch_jobs"}
    for q in DEMO_QUEUES:
        for st in STATES:
            if (DEMO_PROJECT, q, st) not in jobs:
                problems.append(f'dli_batch_jobs{{project_id="{DEMO_PROJECT}",queue="{q}",state="{st}"}} missing')
    for n in ("dli_poll_success", "dli_last_successful_poll_timestamp_seconds"):
        qs = {s[1].get("queue") for s in samples if s[0] == n}
        if not set(DEMO_QUEUES) <= qs:
            problems.append(f"{n}: queues {sorted(qs)}, want {DEMO_QUEUES}")
    bi = [s for s in samples if s[0] == "dli_exporter_build_info"]
    if not bi or set(bi[0][1]) != {"version", "revision", "rustversion"}:
        problems.append(f"dli_exporter_build_info labels: {bi and sorted(bi[0][1])}")
    # job lifecycle counters: present (possibly 0) from the first successful poll, which /-/ready waited for
    def keys(name, *labels):
        return {tuple(s[1].get(l) for l in labels) for s in samples
                if s[0] == name and s[1].get("project_id") == DEMO_PROJECT}
    finished = keys("dli_batch_jobs_finished_total", "queue", "state")
    durations = keys("dli_batch_job_duration_seconds_count", "queue", "state")
    submitted = keys("dli_batch_jobs_submitted_total", "queue")
    for q in DEMO_QUEUES:
        if (q,) not in submitted:
            problems.append(f'dli_batch_jobs_submitted_total{{queue="{q}"}} missing')
        for st in FINISHED_STATES:
            if (q, st) not in finished:
                problems.append(f'dli_batch_jobs_finished_total{{queue="{q}",state="{st}"}} missing')
            if (q, st) not in durations:
                problems.append(f'dli_batch_job_duration_seconds{{queue="{q}",state="{st}"}} missing')
    les = {}
    for s in samples:
        if s[0] == "dli_batch_job_duration_seconds_bucket":
            key = tuple(sorted((k, v) for k, v in s[1].items() if k != "le"))
            les.setdefault(key, []).append(s[1].get("le"))
    for key, got in les.items():
        if got != JOB_DURATION_BUCKETS:
            problems.append(f"dli_batch_job_duration_seconds{dict(key)} buckets {got}, want {JOB_DURATION_BUCKETS}")
    # a fresh exporter reports its initial configuration load as successful (else DLIExporterConfigReloadFailed
    # would fire on every start)
    ok = [s[2] for s in samples if s[0] == "dli_exporter_config_last_reload_successful"]
    if ok != ["1"]:
        problems.append(f"dli_exporter_config_last_reload_successful: {ok}, want ['1']")
    if problems:
        fail("\n".join(problems))
    print(f"{len(samples)} samples; dli_batch_jobs has {len(jobs)} series; "
          f"{len(finished)} finished / {len(submitted)} submitted / {len(les)} duration series")


def api(base, path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def cmd_e2e(base, timeout):
    """Against a Prometheus scraping the demo: up == 1, dli_batch_jobs for every demo queue and state,
    every recording rule returns data, every rule evaluates without error, nothing fires."""
    deadline = time.time() + float(timeout)
    records = recording_names()
    while True:
        problems = []
        try:
            up = api(base, "/api/v1/query", query='up{job="dli_exporter"}')["result"]
            if [r["value"][1] for r in up] != ["1"]:
                problems.append(f'up{{job="dli_exporter"}}: {[r["value"][1] for r in up]}, want ["1"]')
            res = api(base, "/api/v1/query", query="dli_batch_jobs")["result"]
            have = {(r["metric"].get("queue"), r["metric"].get("state")) for r in res
                    if r["metric"].get("project_id") == DEMO_PROJECT}
            missing = [f"{q}/{s}" for q in DEMO_QUEUES for s in STATES if (q, s) not in have]
            if missing:
                problems.append(f"dli_batch_jobs series missing for queue/state {missing}")
            for rec in records:
                if not api(base, "/api/v1/query", query=rec)["result"]:
                    problems.append(f"recording rule {rec} returns no data")
            for g in api(base, "/api/v1/rules")["groups"]:
                for r in g["rules"]:
                    if r.get("health") != "ok":
                        problems.append(f"rule {r['name']} health {r.get('health')}: {r.get('lastError', '')}")
            firing = [a["labels"]["alertname"] for a in api(base, "/api/v1/alerts")["alerts"]
                      if a["state"] == "firing"]
            if firing:
                problems.append(f"alerts firing against the demo: {firing}")
        except Exception as e:  # Prometheus still starting
            problems.append(f"query failed: {e}")
        if not problems:
            break
        if time.time() > deadline:
            fail("after %ss:\n%s" % (timeout, "\n".join(problems)))
        time.sleep(1)
    print(f"up == 1, {len(have)} demo queue/state series, {len(records)} recording rules with data, "
          "all rules healthy, nothing firing")


def cmd_reload(binary, work, timeout):
    """An exporter started from a config file re-reads it on SIGHUP (the systemd unit's ExecReload) and on
    POST /-/reload: a good file takes effect (a new queue appears) and sets
    dli_exporter_config_last_reload_successful to 1, a bad one sets it to 0 and the previous configuration
    keeps running. The DLI endpoint is a closed port on 127.0.0.1 (polls fail fast; nothing leaves the host)."""
    import signal
    import socket
    import subprocess

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    work = pathlib.Path(work) / "reload"
    work.mkdir(parents=True, exist_ok=True)
    (work / "ak").write_text("PLACEHOLDERAK\n")
    (work / "sk").write_text("PLACEHOLDERSK\n")
    cfg = work / "dli_exporter.toml"
    port, dead_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"

    def write_config(queues, broken=False):
        text = (("no_such_key = 1\n" if broken else "")
                + '[poll]\ninterval = "60s"\ntimeout = "5s"\nrequest_timeout = "2s"\nretries = 0\n\n'
                + f'[auth]\nkind = "aksk"\naccess_key_file = {json.dumps(str(work / "ak"))}\n'
                + f'secret_key_file = {json.dumps(str(work / "sk"))}\n\n'
                + f'[[projects]]\nproject_id = "{DEMO_PROJECT}"\nregion = "cn-north-4"\n'
                + f'endpoint = "http://127.0.0.1:{dead_port}"\nqueues = {json.dumps(queues)}\n')
        tmp = cfg.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(cfg)  # atomic, like a ConfigMap update

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get_metrics():
        with opener.open(f"{base}/metrics", timeout=5) as r:
            samples, _ = parse_exposition_text(r.read().decode())
        one = lambda n: next((float(s[2]) for s in samples if s[0] == n), None)
        queues = {s[1].get("queue") for s in samples if s[0] == "dli_poll_success"}
        return (one("dli_exporter_config_last_reload_successful"),
                one("dli_exporter_config_last_reload_success_timestamp_seconds"), queues)

    def wait_for(what, cond):
        deadline = time.time() + float(timeout)
        last = None
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exporter exited with {proc.returncode} while waiting for {what}")
            try:
                last = get_metrics()
                if cond(*last):
                    return last
            except OSError as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}; last (successful, timestamp, queues): {last}")

    write_config(["default"])
    log = open(work / "exporter.log", "w")
    proc = subprocess.Popen([binary, "--config.file", str(cfg), "--web.listen-address", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _, ts0, _ = wait_for("the exporter to serve, initial load successful, queue default polled",
                             lambda ok, ts, qs: ok == 1 and ts and "default" in qs)
        time.sleep(0.05)

        write_config(["default", "etl"])
        proc.send_signal(signal.SIGHUP)
        _, ts1, _ = wait_for("SIGHUP: reload successful (new timestamp) and the new queue etl polled",
                             lambda ok, ts, qs: ok == 1 and ts > ts0 and "etl" in qs)
        print(f"SIGHUP with a good file: reloaded, queue etl added (timestamp +{ts1 - ts0:.2f}s)")

        write_config(["default"], broken=True)
        proc.send_signal(signal.SIGHUP)
        wait_for("SIGHUP with a broken file: dli_exporter_config_last_reload_successful 0, the previous "
                 "configuration (queues default, etl) still running",
                 lambda ok, ts, qs: ok == 0 and ts == ts1 and {"default", "etl"} <= qs)
        print("SIGHUP with a broken file: reload failed, exporter still serving the previous configuration")

        write_config(["default"])
        req = urllib.request.Request(f"{base}/-/reload", method="POST")
        with opener.open(req, timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"POST /-/reload answered {r.status}")
        wait_for("POST /-/reload with the fixed file: successful again",
                 lambda ok, ts, qs: ok == 1 and ts > ts1)
        print("POST /-/reload with the fixed file: reloaded")
    except Exception as e:
        log.flush()
        tail = (work / "exporter.log").read_text(errors="replace").splitlines()[-20:]
        fail(f"{e}\nexporter log (last lines):\n" + "\n".join("  " + l for l in tail))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def cmd_dockerfile():
    problems = []
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = re.sub(r"\\\n", " ", text).splitlines()
    froms = [l.split()[1] for l in lines if l.startswith("FROM ")]
    if not froms or not froms[0].startswith("rust:1.95-bookworm"):
        problems.append(f"first stage should be rust:1.95-bookworm, got {froms[:1]}")
    if len(froms) < 2:
        problems.append("not multi-stage")
    if not any("cargo build --release --locked" in l for l in lines):
        problems.append("no `cargo build --release --locked`")
    final = text[text.rindex("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"final stage must switch to a non-root USER, got {users}")
    if not re.search(r"^ENTRYPOINT .*dli_exporter", final, re.M):
        problems.append("no ENTRYPOINT running dli_exporter")
    for l in lines:
        if l.startswith("COPY ") and "--from=" not in l:
            for src in l.split()[1:-1]:
                if not (ROOT / src).exists():
                    problems.append(f"COPY source {src} does not exist in the repository")
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for must in ("target/", ".git/"):
        if must not in ignore and must.rstrip("/") not in ignore:
            problems.append(f".dockerignore does not exclude {must}")
    if problems:
        fail("\n".join(problems))
    print("stages: " + " -> ".join(froms))


def cmd_systemd_lint():
    unit = (DEPLOY / "systemd" / "dli_exporter.service").read_text(encoding="utf-8")
    problems = []
    for want in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "ProtectHome=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                 "SystemCallFilter=@system-service", "LoadCredential=ak:/etc/dli_exporter/ak",
                 "LoadCredential=sk:/etc/dli_exporter/sk", "ExecReload=/bin/kill -HUP $MAINPID"):
        if not re.search(rf"^{re.escape(want)}$", unit, re.M):
            problems.append(f"unit lacks `{want}`")
    if not re.search(r"^CapabilityBoundingSet=$", unit, re.M):
        problems.append("unit lacks an empty CapabilityBoundingSet=")
    env = (DEPLOY / "systemd" / "dli_exporter.env").read_text(encoding="utf-8")
    for n, line in enumerate(env.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#") and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            problems.append(f"dli_exporter.env:{n}: not KEY=value: {line!r}")
    if problems:
        fail("\n".join(problems))
    print("hardening, credentials and reload settings present")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    globals()["cmd_" + cmd.replace("-", "_")](*args)


if __name__ == "__main__":
    main()
PYEOF
CHECKS=("$PY" "$WORK/checks.py")

# ------------------------------------------------------------------------------------------------------
# Prometheus rules
# ------------------------------------------------------------------------------------------------------
note "prometheus rules"
check "promtool check rules (alerts.yml, recording.yml)" \
  promtool check rules deploy/prometheus/recording.yml deploy/prometheus/alerts.yml
check "promtool test rules (deploy/prometheus/tests/*.yml)" \
  bash -c 'promtool test rules deploy/prometheus/tests/*.yml'
check "promtool check config (deploy/prometheus/prometheus.yml)" \
  promtool check config deploy/prometheus/prometheus.yml
check "alerts: severity, annotations, runbook sections; tests cover all" "${CHECKS[@]}" rules-lint
check "PrometheusRule generated file up to date" $PY deploy/prometheus/gen_prometheusrule.py --check
check "PrometheusRule spec.groups == recording.yml + alerts.yml" \
  "${CHECKS[@]}" promrule "$WORK/prometheusrule-spec.yml"
check "promtool check rules (PrometheusRule spec)" promtool check rules "$WORK/prometheusrule-spec.yml"

# ------------------------------------------------------------------------------------------------------
# Grafana
# ------------------------------------------------------------------------------------------------------
note "grafana"
check "dashboard structure (variables, datasource, panels)" "${CHECKS[@]}" dashboard-lint
check "dashboard queries extracted" "${CHECKS[@]}" dashboard-rules "$WORK/dashboard-rules.yml"
check "promtool check rules (dashboard queries, variables substituted)" \
  promtool check rules "$WORK/dashboard-rules.yml"
check "referenced metrics are contract metrics / recording rules" "${CHECKS[@]}" refs-contract

# ------------------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------------------
note "kubernetes"
k8s_validate() {
  local files
  files=$("${CHECKS[@]}" k8s-builtin-files) || { echo "$files"; return 1; }
  # shellcheck disable=SC2086
  $PY -m kubernetes_validate --strict $files
}
check "kubernetes-validate --strict (built-in kinds, offline schemas)" k8s_validate
check "manifests agree (labels, ports, probes, volumes, CRDs, kustomization)" "${CHECKS[@]}" k8s-lint

# ------------------------------------------------------------------------------------------------------
# systemd, Docker
# ------------------------------------------------------------------------------------------------------
note "systemd, docker"
check "systemd unit settings and env file syntax" "${CHECKS[@]}" systemd-lint
if [[ $HAVE_SYSTEMD_ANALYZE == 1 ]]; then
  # verify insists that ExecStart= exists: check a copy pointing at the binary under test (or /bin/true).
  mkdir -p "$WORK/systemd"
  sed "s#/usr/local/bin/dli_exporter#${BIN:-/bin/true}#" deploy/systemd/dli_exporter.service \
    >"$WORK/systemd/dli_exporter.service"
  # verify only warns (exit 0) about settings it cannot parse: any output is a failure.
  systemd_verify() {
    local out
    out=$(systemd-analyze verify "$WORK/systemd/dli_exporter.service" 2>&1) || { echo "$out"; return 1; }
    [[ -z $out ]] || { echo "$out"; return 1; }
  }
  check "systemd-analyze verify dli_exporter.service (no warnings)" systemd_verify
  check "systemd-analyze security --offline (exposure <= 2.0)" \
    systemd-analyze security --offline=yes --threshold=20 "$WORK/systemd/dli_exporter.service"
else
  skip "systemd-analyze not available: unit not verified"
fi
check "Dockerfile (stages, non-root, COPY sources, .dockerignore)" "${CHECKS[@]}" dockerfile
echo "      (the image build itself is not tested: no Docker engine here)"

# ------------------------------------------------------------------------------------------------------
# the binary: configs, demo exposition, end-to-end with Prometheus
# ------------------------------------------------------------------------------------------------------
free_port() {
  $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL SECONDS PID: until URL answers 200, or PID died, or time is up.
wait_http() {
  local url=$1 secs=$2 pid=$3 end=$((SECONDS + $2))
  while ((SECONDS < end)); do
    if curl -fsS --noproxy '*' -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "process $pid exited before $url answered"; return 1; fi
    sleep 0.2
  done
  echo "$url did not answer 200 within ${secs}s"
  return 1
}

if [[ -z $BIN ]]; then
  skip "binary checks (--static-only): demo exposition, --check-config, end-to-end Prometheus"
else
  note "binary $BIN"
  check "dli_exporter --version" "$BIN" --version

  # The deploy configs must pass the exporter's own validation (unknown keys are rejected). Secret paths
  # point at placeholder files in the temp dir, since validation reads them.
  check_k8s_config() {
    local cfg
    cfg=$("${CHECKS[@]}" k8s-config "$WORK") && "$BIN" --check-config --config.file "$cfg"
  }
  check "--check-config: kubernetes ConfigMap config.toml" check_k8s_config
  check_systemd_config() {
    printf 'PLACEHOLDERAK\n' >"$WORK/cred-ak"
    printf 'PLACEHOLDERSK\n' >"$WORK/cred-sk"
    # what the unit sets with %d (= $CREDENTIALS_DIRECTORY)
    DLI_EXPORTER__AUTH__ACCESS_KEY_FILE="$WORK/cred-ak" DLI_EXPORTER__AUTH__SECRET_KEY_FILE="$WORK/cred-sk" \
      "$BIN" --check-config --config.file deploy/systemd/dli_exporter.toml
  }
  check "--check-config: systemd dli_exporter.toml + unit environment" check_systemd_config
  # What `systemctl reload` (ExecReload=/bin/kill -HUP $MAINPID) and `POST /-/reload` do to an exporter
  # started from a config file.
  check "config reload: SIGHUP / POST /-/reload with a good and a broken file" \
    "${CHECKS[@]}" reload "$BIN" "$WORK" "$TIMEOUT"

  EXPORTER_PORT=$(free_port)
  EXPORTER="http://127.0.0.1:$EXPORTER_PORT"
  "$BIN" --demo --web.listen-address "127.0.0.1:$EXPORTER_PORT" >"$WORK/exporter.log" 2>&1 &
  EXPORTER_PID=$!
  PIDS+=("$EXPORTER_PID")
  echo "      demo exporter pid $EXPORTER_PID on $EXPORTER"
  demo_ready() {
    wait_http "$EXPORTER/-/healthy" "$TIMEOUT" "$EXPORTER_PID" &&
      wait_http "$EXPORTER/-/ready" "$TIMEOUT" "$EXPORTER_PID" &&
      curl -fsS --noproxy '*' --max-time 10 -o "$WORK/metrics.txt" "$EXPORTER/metrics" &&
      curl -fsS --noproxy '*' --max-time 10 -o /dev/null "$EXPORTER/" &&
      test "$(curl -sS --noproxy '*' --max-time 10 -o /dev/null -w '%{http_code}' "$EXPORTER/no-such-path")" = 404
  }
  check "demo: /-/healthy, /-/ready, /metrics, / answer; unknown path 404" demo_ready
  if [[ -s $WORK/metrics.txt ]]; then
    promtool_metrics() {
      local out
      out=$(promtool check metrics <"$WORK/metrics.txt" 2>&1) || { echo "$out"; return 1; }
      [[ -z $out ]] || { echo "$out"; return 1; }
    }
    check "promtool check metrics (demo /metrics): no findings" promtool_metrics
    check "demo exposition: contract metrics, types, queues etl/adhoc x 5 states" \
      "${CHECKS[@]}" demo-contract "$WORK/metrics.txt"
    check "every metric used by rules/dashboard is in the demo output" \
      "${CHECKS[@]}" refs-demo "$WORK/metrics.txt"

    PROM_PORT=$(free_port)
    PROM_URL="http://127.0.0.1:$PROM_PORT"
    cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/recording.yml
  - $ROOT/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: dli_exporter
    static_configs:
      - targets: ["127.0.0.1:$EXPORTER_PORT"]
EOF
    prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
      --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
    PROM_PID=$!
    PIDS+=("$PROM_PID")
    echo "      prometheus pid $PROM_PID on $PROM_URL"
    e2e() {
      wait_http "$PROM_URL/-/ready" "$TIMEOUT" "$PROM_PID" && "${CHECKS[@]}" e2e "$PROM_URL" "$TIMEOUT"
    }
    check "end-to-end: Prometheus scrapes the demo, rules evaluate" e2e
    if ! kill -0 "$EXPORTER_PID" 2>/dev/null; then
      FAILED=$((FAILED + 1)); FAILED_NAMES+=("demo exporter stayed up")
      echo "FAIL  the demo exporter died during the checks; its log:"; tail -n 30 "$WORK/exporter.log" | sed "s/^/      | /"
    fi
    # deploy/systemd/dli_exporter.service reloads with SIGHUP (ExecReload=/bin/kill -HUP $MAINPID): the
    # exporter must survive it (SIGHUP's default action ends the process, and systemd would not restart
    # it: Restart=on-failure counts SIGHUP as a clean exit).
    sighup_survives() {
      kill -HUP "$EXPORTER_PID" && sleep 1 &&
        kill -0 "$EXPORTER_PID" 2>/dev/null &&
        curl -fsS --noproxy '*' --max-time 5 -o /dev/null "$EXPORTER/-/healthy" &&
        curl -fsS --noproxy '*' --max-time 5 -o /dev/null "$EXPORTER/metrics"
    }
    check "demo exporter survives SIGHUP (systemctl reload) and still serves" sighup_survives
  else
    echo "      no /metrics output: exporter log follows"
    tail -n 30 "$WORK/exporter.log" | sed 's/^/      | /'
  fi
fi

echo
echo "deploy-checks took $(($(date +%s) - START_TIME))s"
if ((FAILED > 0)); then
  printf 'failed: %s\n' "${FAILED_NAMES[@]}"
fi
echo "deploy-checks: $PASSED passed, $FAILED failed"
((FAILED == 0))
