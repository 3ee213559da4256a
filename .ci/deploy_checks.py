#!/usr/bin/env python3
"""The deploy and image checks of CI (.ci/deploy-checks.sh and .ci/image-checks.sh call this file after
installing the tools; run it directly to repeat one check).

  python3 .ci/deploy_checks.py deploy [--binary target/debug/dli_exporter]   # what deploy-checks.sh runs
  python3 .ci/deploy_checks.py image --binary target/release/dli_exporter --docker-host unix:///... \\
      --standin /var/cache/.../standin.tar                                    # what image-checks.sh runs
  python3 .ci/deploy_checks.py k8s-render deploy/kubernetes                   # one check
  python3 .ci/deploy_checks.py --help                                         # every subcommand

A single check prints what it found and exits 1 if it failed; a suite prints one line per check and ends
with "NAME: N passed, M failed".
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True  # keep __pycache__ out of the work tree
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from ci_checks import binary, grafana, hostfiles, image, kubernetes, prometheus, suites  # noqa: E402
from ci_checks.common import Failed  # noqa: E402


def existing_executable(path):
    p = pathlib.Path(path)
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise argparse.ArgumentTypeError(f"{path} is not an executable file")
    return p.resolve()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="deploy_checks.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=pathlib.Path,
                        help="directory for generated files and logs (default: a new temporary one, removed "
                             "at the end unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--verbose", action="store_true", help="print the output of passing checks too")
    parser.add_argument("--timeout", type=float, default=90,
                        help="seconds to wait for readiness and end-to-end conditions (default 90)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    def add(name, fn, help_text, *args):
        p = sub.add_parser(name, help=help_text, description=(fn.__doc__ or help_text))
        for a in args:
            p.add_argument(a[0], **a[1]) if len(a) > 1 else p.add_argument(a[0])
        p.set_defaults(fn=fn)
        return p

    # the suites
    add("deploy", None, "every deploy check; with --binary also the exporter, its demo and a real Prometheus",
        ("--binary", {"type": existing_executable, "help": "the built dli_exporter (omit: static checks only)"}))
    add("image", None, "build deploy/Dockerfile on the stand-in base and run the container",
        ("--binary", {"type": existing_executable, "required": True, "help": "the release dli_exporter"}),
        ("--docker-host", {"required": True, "help": "unix:///... socket of the daemon to use"}),
        ("--docker", {"default": "docker", "help": "docker CLI (default: docker on PATH)"}),
        ("--standin", {"type": pathlib.Path, "required": True, "help": "tar made by standin-rootfs"}),
        ("--net-before", {"help": "network interfaces before the daemon started (space-separated): the "
                                  "suite checks that none was added"}))
    add("standin-rootfs", image.standin_rootfs,
        "make the distroless stand-in base tar from a debootstrapped Debian 12 tree",
        ("rootfs", {"type": pathlib.Path}), ("out", {"type": pathlib.Path}))
    # single checks
    add("rules-lint", prometheus.rules_lint, "alerts, runbook sections, rule tests coverage")
    add("promrule", prometheus.promrule, "PrometheusRule == recording.yml + alerts.yml; writes its spec",
        ("out",))
    add("dashboard-lint", grafana.dashboard_lint, "Grafana dashboard structure")
    add("dashboard-rules", grafana.dashboard_rules, "dashboard queries as rules for promtool", ("out",))
    add("refs-contract", prometheus.refs_contract, "referenced metrics are contract metrics or recording rules")
    add("refs-demo", prometheus.refs_demo, "referenced metrics are in a saved demo exposition", ("exposition",))
    add("demo-contract", binary.demo_contract, "contract metrics in a saved demo exposition", ("exposition",))
    add("k8s-validate", kubernetes.validate_files, "kubernetes-validate --strict on the manifest files")
    add("k8s-lint", kubernetes.lint, "cross-references between the manifests")
    add("k8s-sharded", kubernetes.sharded_lint, "the sharded overlay's StatefulSet against the base Deployment")
    add("k8s-render", None, "kubectl kustomize DIR (default: every kustomization under deploy/), validated",
        ("dirs", {"nargs": "*", "type": pathlib.Path}))
    add("systemd-lint", hostfiles.systemd_lint, "systemd unit hardening settings, env file syntax")
    add("systemd-ecs", hostfiles.systemd_ecs_lint, "the ECS unit is the main one without credential lines")
    add("dockerfile", hostfiles.dockerfile_lint, "Dockerfile and Dockerfile.build structure")
    add("hadolint", hostfiles.hadolint, "hadolint on every Dockerfile")
    add("shellcheck", hostfiles.shellcheck, "shellcheck on the CI scripts")
    add("ruff", hostfiles.ruff, "ruff check on the CI and deploy Python")
    add("actionlint", hostfiles.actionlint, "actionlint on .github/workflows")
    add("e2e", prometheus.e2e, "queries against a Prometheus scraping the demo (waits up to --timeout)",
        ("base", {"help": "the Prometheus URL, http://127.0.0.1:PORT"}))
    add("reload", binary.reload, "SIGHUP and POST /-/reload with good and broken config files",
        ("binary", {"type": existing_executable}))

    args = parser.parse_args(argv)
    own_work = args.work is None
    work = pathlib.Path(tempfile.mkdtemp(prefix="deploy-checks.")) if own_work else args.work
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    try:
        if args.command == "deploy":
            return suites.deploy_suite(work, args.binary, args.timeout, args.verbose)
        if args.command == "image":
            return suites.image_suite(work, args.binary, args.docker, args.docker_host, args.standin.resolve(),
                                      args.net_before, args.timeout, args.verbose)
        try:
            if args.command == "k8s-render":
                for d in args.dirs or kubernetes.kustomization_dirs():
                    print(kubernetes.render(d, work))
                return 0
            params = {k: v for k, v in vars(args).items()
                      if k not in ("command", "fn", "work", "keep", "verbose", "timeout")}
            if args.command == "reload":
                params["work"] = work
            if args.command in ("e2e", "reload"):
                params["timeout"] = args.timeout
            detail = args.fn(**params)
            if isinstance(detail, str):
                print(detail)
            return 0
        except Failed as e:
            print(e)
            return 1
    finally:
        if args.keep:
            print(f"kept {work}")
        elif own_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
