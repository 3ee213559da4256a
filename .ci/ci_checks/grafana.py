"""The Grafana dashboards: structure, and every query (variables substituted) for promtool."""

import re

from .common import GRAFANA, fail, fail_if, load_json, yaml_module

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
    d = load_json(path)
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


def dashboard_lint():
    """Variables ($datasource, $project_id, $queue), the datasource of every panel, unique panel ids, no
    overlapping panels, a query on every panel."""
    problems = []
    files = dashboards()
    if not files:
        fail("no deploy/grafana/*.json")
    for path in files:
        d = load_json(path)
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
    fail_if(problems)


def dashboard_rules(out):
    """Every dashboard query, variables substituted, as recording rules for `promtool check rules`."""
    rules = []
    for path in dashboards():
        for i, (where, expr) in enumerate(dashboard_queries(path)):
            rules.append({"record": f"dashboard_check:{re.sub(r'[^a-zA-Z0-9_]', '_', path.stem)}:q{i}",
                          "expr": expr, "labels": {"where": where}})
    with open(out, "w", encoding="utf-8") as f:
        yaml_module().safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
    print(f"{len(rules)} dashboard queries")
