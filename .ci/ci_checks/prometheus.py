"""Alert and recording rules, the PrometheusRule generated from them, the metrics that rules and dashboards
reference, and the end-to-end run against a real Prometheus."""

import json
import re
import time
import urllib.parse

from . import grafana
from .common import (ABSENT_IN_DEMO_OK, CONTRACT, DEMO_PROJECT, DEMO_QUEUES, K8S, OPENER, PROCESS, PROM,
                     SEVERITIES, STATES, SYNTHETIC, available_names, fail, fail_if, load_yaml, load_yaml_all,
                     parse_exposition, yaml_module)

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


def rules_lint():
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
    fail_if(problems)


def promrule(out):
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
        yaml_module().safe_dump({"groups": pr["spec"]["groups"]}, f, sort_keys=False)
    print(f"{sum(len(g['rules']) for g in want)} rules in {len(want)} groups, identical")


def referenced():
    """{metric name: [where it is used]} over rules and dashboards."""
    refs = {}
    for where, expr in rule_exprs():
        for n in metric_names(expr):
            refs.setdefault(n, []).append(where)
    for path in grafana.dashboards():
        for where, expr in grafana.dashboard_queries(path):
            for n in metric_names(expr):
                refs.setdefault(n, []).append(where)
    return refs


def known_contract_name(n):
    for base, typ in {**CONTRACT, **PROCESS}.items():
        if n == base or (typ == "histogram" and n in (base + "_bucket", base + "_sum", base + "_count")):
            return True
    return False


def refs_contract():
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
    fail_if(problems)


def refs_demo(exposition):
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
    fail_if(problems)
    print("every referenced exporter metric is exposed by the demo")


def prometheus_config(path, exporter_port):
    """Writes a Prometheus config scraping the exporter on 127.0.0.1:EXPORTER_PORT every second, with
    the deploy rule files loaded."""
    text = f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {PROM / "recording.yml"}
  - {PROM / "alerts.yml"}
scrape_configs:
  - job_name: dli_exporter
    static_configs:
      - targets: ["127.0.0.1:{exporter_port}"]
"""
    path.write_text(text, encoding="utf-8")


def api(base, path, **params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with OPENER.open(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def e2e(base, timeout):
    """Against a Prometheus scraping the demo: up == 1, dli_batch_jobs for every demo queue and state,
    every recording rule returns data, every rule evaluates without error, nothing fires."""
    deadline = time.monotonic() + float(timeout)
    records = recording_names()
    while True:
        problems = []
        have = set()
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
        if time.monotonic() > deadline:
            fail("after %ss:\n%s" % (timeout, "\n".join(problems)))
        time.sleep(1)
    print(f"up == 1, {len(have)} demo queue/state series, {len(records)} recording rules with data, "
          "all rules healthy, nothing firing")
