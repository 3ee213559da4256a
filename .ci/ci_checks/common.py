"""Shared by every check: repository paths, YAML loading, the exporter's metric contract
(shared/design.md section 5), exposition parsing and loopback HTTP helpers."""

import json
import pathlib
import re
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "kubernetes"
GRAFANA = DEPLOY / "grafana"
SYSTEMD = DEPLOY / "systemd"

# The image (deploy/Dockerfile): the base users pull, and the build context deploy/README.md tells users
# to make (and image-checks makes): a directory holding exactly these files.
DISTROLESS = "gcr.io/distroless/cc-debian12:nonroot"
IMAGE_CONTEXT = {"dli_exporter": "the binary of `cargo build --release --locked`",
                 "config.example.toml": "config.example.toml of the repository root"}
IMAGE_USER = "65532:65532"
IMAGE_ENTRYPOINT = ["/usr/local/bin/dli_exporter"]
IMAGE_PORT = 10049


class Failed(Exception):
    """A finding of a check; the message says what is wrong (one problem per line)."""


def fail(msg):
    raise Failed(msg)


def fail_if(problems):
    """Raises Failed listing PROBLEMS (each one once, in order) if there are any."""
    if problems:
        raise Failed("\n".join(dict.fromkeys(problems)))


def yaml_module():
    import yaml  # PyYAML, installed by deploy-checks.sh (kubernetes-validate depends on it)

    return yaml


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml_module().safe_load(f)


def load_yaml_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml_module().safe_load_all(f) if d is not None]


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --- the exporter's contract (shared/design.md section 5) ----------------------------------------------
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
    "dli_exporter_shard_ordinal": "gauge",
    "dli_exporter_total_shards": "gauge",
    # part two: every failed poll, by the reason that ended it (every reason at 0 per polled queue)
    "dli_poll_failures_total": "counter",
    # per-job-name last runs (the demo sets metrics.job_names to its recurring jobs)
    "dli_batch_job_last_run_state": "gauge",
    "dli_batch_job_last_run_start_timestamp_seconds": "gauge",
    "dli_batch_job_last_success_timestamp_seconds": "gauge",
    "dli_batch_job_last_run_duration_seconds": "gauge",
    "dli_batch_job_names_dropped": "gauge",
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


# --- exposition -----------------------------------------------------------------------------------------
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_exposition(path):
    with open(path, encoding="utf-8") as f:
        return parse_exposition_text(f.read())


def parse_exposition_text(text):
    """([(name, labels, value)], {name: type}) of a Prometheus text exposition."""
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


# --- loopback HTTP --------------------------------------------------------------------------------------
# Every URL the checks open is on 127.0.0.1: never go through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url, timeout=10):
    """(status, body bytes) of GET URL; HTTP error statuses are returned, not raised."""
    try:
        with OPENER.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http(url, timeout, alive=lambda: True, what="the process"):
    """Polls URL until it answers 200; fails when ALIVE() turns false or after TIMEOUT seconds."""
    deadline = time.monotonic() + float(timeout)
    last = None
    while time.monotonic() < deadline:
        try:
            status, _ = http_get(url, timeout=2)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as e:
            last = e
        if not alive():
            fail(f"{what} exited before {url} answered 200 (last: {last})")
        time.sleep(0.2)
    fail(f"{url} did not answer 200 within {timeout}s (last: {last})")


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
