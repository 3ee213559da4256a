# shellcheck shell=bash
# Sourced by the .ci scripts: installing what the checks need, from Debian's packages and PyPI (the only
# registries CI reaches). Each installs only what is missing, so a second run installs nothing.

APT_UPDATED=0

# apt_install PACKAGE...: quiet; on failure prints the tail of apt's output and returns non-zero.
apt_install() {
  local log
  log=$(mktemp)
  if [[ $APT_UPDATED == 0 ]]; then
    if ! apt-get update -qq >"$log" 2>&1; then
      cat "$log"; rm -f "$log"; return 1
    fi
    APT_UPDATED=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1; then
    tail -n 30 "$log"; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

# need_cmd COMMAND PACKAGE...: installs the Debian PACKAGEs unless COMMAND is already on PATH.
need_cmd() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null && return 0
  echo "      installing Debian package $* (for $cmd)"
  apt_install "$@" || { echo "      could not install $* (for $cmd)"; return 1; }
}

# pip_install REQUIREMENT...: into the Python that runs the checks (pinned versions: a second run is a no-op).
pip_install() {
  PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip install --quiet "$@"
}
