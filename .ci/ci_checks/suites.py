"""Which checks run, in which order. deploy_suite: everything under deploy/ and the CI files, plus (with a
binary) the exporter against them and a real Prometheus. image_suite: the container image."""

import shutil
import sys

from . import binary as b
from . import grafana, hostfiles, image, kubernetes, prometheus
from .common import PROM, ROOT, SYSTEMD, free_port, wait_http
from .runner import Background, Suite, run, tail, tool


def promtool(*args):
    return lambda: run([tool("promtool"), *args], cwd=ROOT)


def static_checks(s, work, binary=None):
    s.note("prometheus rules")
    s.check("promtool check rules (alerts.yml, recording.yml)",
            promtool("check", "rules", PROM / "recording.yml", PROM / "alerts.yml"))
    s.check("promtool test rules (deploy/prometheus/tests/*.yml)",
            promtool("test", "rules", *sorted((PROM / "tests").glob("*.yml"))))
    s.check("promtool check config (deploy/prometheus/prometheus.yml)",
            promtool("check", "config", PROM / "prometheus.yml"))
    s.check("alerts: severity, annotations, runbook sections; tests cover all", prometheus.rules_lint)
    s.check("PrometheusRule generated file up to date",
            lambda: run([sys.executable, PROM / "gen_prometheusrule.py", "--check"], cwd=ROOT))
    spec = work / "prometheusrule-spec.yml"
    if s.check("PrometheusRule spec.groups == recording.yml + alerts.yml", prometheus.promrule, spec):
        s.check("promtool check rules (PrometheusRule spec)", promtool("check", "rules", spec))

    s.note("grafana")
    s.check("dashboard structure (variables, datasource, panels)", grafana.dashboard_lint)
    queries = work / "dashboard-rules.yml"
    if s.check("dashboard queries extracted", grafana.dashboard_rules, queries):
        s.check("promtool check rules (dashboard queries, variables substituted)",
                promtool("check", "rules", queries))
    s.check("referenced metrics are contract metrics / recording rules", prometheus.refs_contract)

    s.note("kubernetes")
    s.check("kubernetes-validate --strict (built-in kinds, offline schemas)", kubernetes.validate_files)
    s.check("manifests agree (labels, ports, probes, volumes, CRDs, kustomization)", kubernetes.lint)
    s.check("sharded overlay: StatefulSet = base pod template + --shard=auto --total-shards=replicas",
            kubernetes.sharded_lint)
    for directory in kubernetes.kustomization_dirs():
        rel = directory.relative_to(ROOT)
        s.check(f"kubectl kustomize {rel}: rendered, validated, references", kubernetes.render, directory, work)

    s.note("systemd, docker, CI files")
    s.check("systemd unit settings and env file syntax", hostfiles.systemd_lint)
    s.check("systemd ECS unit: the main unit without its credential lines", hostfiles.systemd_ecs_lint)
    if shutil.which("systemd-analyze"):
        for rel in hostfiles.UNITS:
            unit = hostfiles.unit_copy(work, binary or "/bin/true", rel)
            s.check(f"systemd-analyze verify {rel} (no warnings)", hostfiles.systemd_verify, unit)
            s.check(f"systemd-analyze security --offline {rel} (exposure <= 2.0)", hostfiles.systemd_security,
                    unit)
    else:
        s.skip("systemd-analyze not available: unit not verified")
    s.check("Dockerfiles (runtime stage, BASE, non-root, no RUN; builder matches)", hostfiles.dockerfile_lint)
    s.check("hadolint deploy/Dockerfile*", hostfiles.hadolint)
    s.check("shellcheck .ci scripts", hostfiles.shellcheck)
    s.check("ruff check + compile (.ci and deploy Python)", hostfiles.ruff)
    s.check("actionlint .github/workflows", hostfiles.actionlint)
    s.info("the image itself is built and run by .ci/image-checks.sh")


def binary_checks(s, work, binary, timeout):
    s.note(f"binary {binary}")
    s.check("dli_exporter --version", b.version, binary)
    # The deploy configs must pass the exporter's own validation (unknown keys are rejected). Secret paths
    # point at placeholder files in the work directory, since validation reads them.
    s.check("--check-config: kubernetes ConfigMap config.toml",
            lambda: b.check_config(binary, kubernetes.configmap_config(str(work))))
    s.check("--check-config: systemd dli_exporter.toml + unit environment", b.systemd_config, binary, work)
    s.check("--check-config: systemd ecs/dli_exporter.toml (kind = metadata, no secret)",
            lambda: b.check_config(binary, SYSTEMD / "ecs" / "dli_exporter.toml"))
    overlay_configs = {}
    if s.check("overlays' ConfigMaps rendered for --check-config",
               lambda: overlay_configs.update(kubernetes.rendered_configs(str(work)))):
        for rel, config in sorted(overlay_configs.items()):
            s.check(f"--check-config: {rel} ConfigMap config.toml", b.check_config, binary, config)
    s.check("config reload: SIGHUP / POST /-/reload with a good and a broken file", b.reload, binary, work, timeout)

    procs = Background()
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = work / "exporter.log"
        exporter = procs.start([binary, "--demo", "--web.listen-address", f"127.0.0.1:{port}"], log)
        s.info(f"demo exporter pid {exporter.pid} on {base}")
        metrics = work / "metrics.txt"
        if not s.check("demo: /-/healthy, /-/ready, /metrics, / answer; unknown path 404", b.serving, base, metrics,
                       timeout, lambda: exporter.poll() is None, "the demo exporter"):
            s.info("no /metrics output: exporter log follows")
            print(tail(log))
            return
        s.check("promtool check metrics (demo /metrics): no findings", b.promtool_metrics, metrics)
        s.check("demo exposition: contract metrics, types, queues etl/adhoc x 5 states", b.demo_contract, metrics)
        s.check("every metric used by rules/dashboard is in the demo output", prometheus.refs_demo, metrics)

        prom_port = free_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        prometheus.prometheus_config(work / "prometheus.yml", port)
        prom = procs.start([tool("prometheus"), f"--config.file={work / 'prometheus.yml'}",
                            f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                            "--log.level=warn"], work / "prometheus.log")
        s.info(f"prometheus pid {prom.pid} on {prom_url}")

        def e2e():
            wait_http(f"{prom_url}/-/ready", timeout, lambda: prom.poll() is None, "prometheus")
            prometheus.e2e(prom_url, timeout)

        s.check("end-to-end: Prometheus scrapes the demo, rules evaluate", e2e)
        s.check("demo exporter stayed up during the checks", b.still_running, exporter, lambda: tail(log))
        s.check("demo exporter survives SIGHUP (systemctl reload) and still serves", b.sighup_survives, exporter, base)
    finally:
        procs.close()


def deploy_suite(work, binary, timeout, verbose):
    s = Suite("deploy-checks", work, verbose)
    static_checks(s, work, binary)
    if binary:
        binary_checks(s, work, binary, timeout)
    else:
        s.skip("binary checks (--static-only): demo exposition, --check-config, end-to-end Prometheus")
    return s.finish()


def image_suite(work, binary, docker_cli, docker_host, standin_tar, net_before, timeout, verbose):
    s = Suite("image-checks", work, verbose)
    docker = image.Docker(docker_cli, docker_host, work)
    s.note(f"image: deploy/Dockerfile with {binary}")
    if not (s.check("base: distroless stand-in imported", image.import_base, docker, standin_tar)
            and s.check("docker build -f deploy/Dockerfile (BASE=stand-in, context: binary + example config)",
                        image.build, docker, binary, work)):
        return s.finish()
    s.check("image config: user 65532:65532, entrypoint, port 10049, COPY layers only", image.image_config, docker)
    s.info(image.sizes(docker))
    s.check("container --version (read-only, no capabilities, no-new-privileges)", image.version_in_container,
            docker, binary)
    s.check("container without a config: non-zero exit naming the config path", image.default_cmd_without_config,
            docker)
    demo = image.DemoContainer(docker, work)
    try:
        if s.check("container --demo starts (host network, 127.0.0.1 only)", demo.start):
            s.info(f"demo container {demo.name} on {demo.base}")
            if s.check("container: /-/healthy, /-/ready, /metrics, / answer; unknown path 404", demo.serving,
                       timeout):
                s.check("promtool check metrics (container /metrics): no findings", b.promtool_metrics,
                        demo.metrics)
                s.check("container exposition: contract metrics, types, demo queues", b.demo_contract, demo.metrics)
            s.check("container process: uid/gid 65532, no capabilities, no_new_privs, read-only root",
                    demo.hardening)
            s.check(f"docker stop (SIGTERM): exit code 0 within {image.STOP_WITHIN:.0f}s", demo.sigterm)
    finally:
        demo.remove()
    if net_before is not None:
        s.check("no network interface added (no bridge, no veth: traffic stayed on loopback)",
                image.no_new_interfaces, net_before)
    return s.finish()
