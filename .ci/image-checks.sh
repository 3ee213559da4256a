#!/usr/bin/env bash
# Builds the container image of deploy/Dockerfile from a release binary and runs it: as its non-root user,
# read-only root file system, no capabilities, on the host network. Checks --version, the --demo exporter's
# /metrics (promtool) and /-/healthy on a loopback port, and that SIGTERM stops it with exit code 0.
#
#   .ci/image-checks.sh target/release/dli_exporter      # after cargo build --release --locked
#
# No image registry is reachable from CI, so the base is a stand-in for gcr.io/distroless/cc-debian12 made
# here: a debootstrapped Debian 12 (minbase) tree, cached in $IMAGE_CHECKS_CACHE, from which only the
# distroless packages are kept (.ci/deploy_checks.py standin-rootfs), imported with `docker import`.
# The Docker engine is Debian's docker.io, started here on a private socket with --bridge=none
# --iptables=false --ip-forward=false (no bridge, no NAT: containers use the host network, all traffic
# stays on 127.0.0.1) and stopped at the end. Ends with "image-checks: N passed, M failed".
#
# Environment:
#   IMAGE_CHECKS_CACHE      where the debootstrapped tree is kept between runs (default /var/cache/dli_exporter-ci;
#                           delete it to refresh the base)
#   IMAGE_CHECKS_MIRROR     Debian mirror for debootstrap (default: debootstrap's own)
#   IMAGE_CHECKS_KEEP=1     keep the temporary directory (daemon log, build context, scraped metrics)
#   IMAGE_CHECKS_VERBOSE=1  print the output of passing checks too
set -euo pipefail

SCRIPT=$(realpath "${BASH_SOURCE[0]}")
CI_DIR=$(dirname "$SCRIPT")
usage() { grep '^#   .ci/image-checks.sh' "$SCRIPT" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") echo "image-checks: missing argument: the path to the release dli_exporter binary" >&2; usage >&2; exit 2 ;;
esac
if [[ ! -x $1 || -d $1 ]]; then echo "image-checks: $1 is not an executable file" >&2; exit 2; fi
BIN=$(realpath "$1")

# shellcheck source=.ci/lib.sh
source "$CI_DIR/lib.sh"

echo "----  tools"
need_cmd dockerd docker.io
need_cmd debootstrap debootstrap
need_cmd promtool prometheus
if [[ ! -s /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
  echo "      installing Debian package debian-archive-keyring (for debootstrap)"
  apt_install debian-archive-keyring
fi
# The client of the daemon's own package where there is one (another docker CLI may be first on PATH).
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER=$(command -v docker)
echo "      $(dockerd --version), client $("$DOCKER" --version)"
echo "      debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo '?')"

WORK=$(mktemp -d /tmp/image-checks.XXXXXX)
SOCK=$WORK/docker.sock
DAEMON_PID=""

# shellcheck disable=SC2317  # reached through the EXIT trap
stop_daemon() {
  [[ -n $DAEMON_PID ]] || return 0
  kill -TERM "$DAEMON_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do  # up to 30 s; it stops its containerd and unmounts first
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$DAEMON_PID" 2>/dev/null; then
    echo "image-checks: dockerd $DAEMON_PID did not stop within 30s: killing it"
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
  fi
  wait "$DAEMON_PID" 2>/dev/null || true
  echo "      stopped dockerd (pid $DAEMON_PID)"
  DAEMON_PID=""
}

# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
  local rc=$?
  stop_daemon
  # whatever a killed daemon left mounted under the work directory (overlays, shm), deepest first
  awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r | xargs -r umount -l || true
  if [[ ${IMAGE_CHECKS_KEEP:-0} == 1 ]]; then
    echo "image-checks: kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "----  base image"
CACHE=${IMAGE_CHECKS_CACHE:-/var/cache/dli_exporter-ci}
INCLUDE=ca-certificates,netbase  # what distroless has beyond minbase (libssl3 comes with them)
TREE=$CACHE/debootstrap-bookworm-minbase-${INCLUDE//,/-}
if [[ -d $TREE ]]; then
  echo "      cached Debian 12 tree $TREE"
else
  echo "      debootstrap --variant=minbase --include=$INCLUDE bookworm (cached in $TREE afterwards)"
  mkdir -p "$CACHE"
  rm -rf "$TREE.tmp"
  t0=$SECONDS
  MIRROR=()
  if [[ -n ${IMAGE_CHECKS_MIRROR:-} ]]; then MIRROR=("$IMAGE_CHECKS_MIRROR"); fi
  if ! debootstrap --variant=minbase --include="$INCLUDE" bookworm "$TREE.tmp" "${MIRROR[@]}" \
      >"$WORK/debootstrap.log" 2>&1; then
    echo "image-checks: debootstrap failed:"; tail -n 30 "$WORK/debootstrap.log"; exit 1
  fi
  mv "$TREE.tmp" "$TREE"
  echo "      debootstrap took $((SECONDS - t0))s"
fi
python3 "$CI_DIR/deploy_checks.py" standin-rootfs "$TREE" "$WORK/standin.tar" | sed 's/^/      /'

echo "----  docker daemon"
NET_BEFORE=$(cd /sys/class/net && echo *)
echo '{}' >"$WORK/daemon.json"  # not /etc/docker/daemon.json: nothing of a system daemon's settings
dockerd --host "unix://$SOCK" --config-file "$WORK/daemon.json" --data-root "$WORK/data" \
  --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
  --containerd-namespace dli-ci --containerd-plugins-namespace dli-ci-plugins \
  --bridge=none --iptables=false --ip-forward=false --ip-masq=false --userland-proxy=false \
  --log-level=warn >"$WORK/dockerd.log" 2>&1 &
DAEMON_PID=$!
t0=$SECONDS
until DOCKER_CONFIG=$WORK "$DOCKER" --host "unix://$SOCK" version >/dev/null 2>&1; do
  if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
    echo "image-checks: dockerd exited at start:"; tail -n 30 "$WORK/dockerd.log"; DAEMON_PID=""; exit 1
  fi
  if ((SECONDS - t0 > 60)); then
    echo "image-checks: dockerd did not answer on $SOCK within 60s:"; tail -n 30 "$WORK/dockerd.log"; exit 1
  fi
  sleep 0.2
done
echo "      dockerd pid $DAEMON_PID on unix://$SOCK, ready in $((SECONDS - t0))s (no bridge, no iptables)"

PY_ARGS=()
if [[ ${IMAGE_CHECKS_KEEP:-0} == 1 ]]; then PY_ARGS+=(--keep); fi
if [[ ${IMAGE_CHECKS_VERBOSE:-0} == 1 ]]; then PY_ARGS+=(--verbose); fi
set +e
python3 "$CI_DIR/deploy_checks.py" --work "$WORK/checks" "${PY_ARGS[@]}" image --binary "$BIN" \
  --docker "$DOCKER" --docker-host "unix://$SOCK" --standin "$WORK/standin.tar" --net-before "$NET_BEFORE"
RC=$?
set -e
if ((RC != 0)); then
  echo "dockerd log (last lines):"; tail -n 20 "$WORK/dockerd.log" | sed 's/^/      | /'
fi
exit "$RC"
