"""Static checks of the files that are neither rules nor manifests: the systemd unit, the Dockerfile,
and the CI's own scripts (linters)."""

import re
import sys

from .common import DEPLOY, ROOT, SYSTEMD, fail_if
from .runner import run, tool

CI = ROOT / ".ci"
RUST_IMAGE = "rust:1.95-bookworm"


# --- systemd --------------------------------------------------------------------------------------------
def systemd_lint():
    """Hardening, credentials and reload settings of the unit; KEY=value syntax of the env file."""
    unit = (SYSTEMD / "dli_exporter.service").read_text(encoding="utf-8")
    problems = []
    for want in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
                 "ProtectHome=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                 "SystemCallFilter=@system-service", "LoadCredential=ak:/etc/dli_exporter/ak",
                 "LoadCredential=sk:/etc/dli_exporter/sk", "ExecReload=/bin/kill -HUP $MAINPID"):
        if not re.search(rf"^{re.escape(want)}$", unit, re.M):
            problems.append(f"unit lacks `{want}`")
    if not re.search(r"^CapabilityBoundingSet=$", unit, re.M):
        problems.append("unit lacks an empty CapabilityBoundingSet=")
    env = (SYSTEMD / "dli_exporter.env").read_text(encoding="utf-8")
    for n, line in enumerate(env.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#") and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            problems.append(f"dli_exporter.env:{n}: not KEY=value: {line!r}")
    fail_if(problems)
    print("hardening, credentials and reload settings present")


def unit_copy(work, binary):
    """A copy of the unit whose ExecStart= runs BINARY (verify insists that the executable exists)."""
    out = work / "systemd" / "dli_exporter.service"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (SYSTEMD / "dli_exporter.service").read_text(encoding="utf-8")
    out.write_text(text.replace("/usr/local/bin/dli_exporter", str(binary)), encoding="utf-8")
    return out


def systemd_verify(unit):
    """systemd-analyze verify; it only warns (exit 0) about settings it cannot parse: any output fails."""
    run([tool("systemd-analyze"), "verify", unit], quiet=True)


def systemd_security(unit):
    run([tool("systemd-analyze"), "security", "--offline=yes", "--threshold=20", unit])


# --- Dockerfile -----------------------------------------------------------------------------------------
def dockerfile_lint():
    """Stages (rust builder, runtime), non-root USER, ENTRYPOINT, COPY sources exist, .dockerignore."""
    problems = []
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = re.sub(r"\\\n", " ", text).splitlines()
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    if not froms or not froms[0].startswith(RUST_IMAGE):
        problems.append(f"first stage should be {RUST_IMAGE}, got {froms[:1]}")
    if len(froms) < 2:
        problems.append("not multi-stage")
    if not any("cargo build --release --locked" in line for line in lines):
        problems.append("no `cargo build --release --locked`")
    final = text[text.rindex("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"final stage must switch to a non-root USER, got {users}")
    if not re.search(r"^ENTRYPOINT .*dli_exporter", final, re.M):
        problems.append("no ENTRYPOINT running dli_exporter")
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            for src in line.split()[1:-1]:
                if not (ROOT / src).exists():
                    problems.append(f"COPY source {src} does not exist in the repository")
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for must in ("target/", ".git/"):
        if must not in ignore and must.rstrip("/") not in ignore:
            problems.append(f".dockerignore does not exclude {must}")
    fail_if(problems)
    print("stages: " + " -> ".join(froms))


# --- the CI's own code ----------------------------------------------------------------------------------
def shell_scripts():
    return sorted([CI / "run", *CI.glob("*.sh")])


def shellcheck():
    files = shell_scripts()
    run([tool("shellcheck"), "--external-sources", f"--source-path={CI}", *files], quiet=True, cwd=ROOT)
    return f"{len(files)} scripts clean: {', '.join(f.name for f in files)}"


def python_files():
    return sorted([*CI.rglob("*.py"), *DEPLOY.rglob("*.py")])


def ruff():
    files = python_files()
    run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", CI / "ruff.toml", *files], cwd=ROOT)
    for f in files:
        compile(f.read_text(encoding="utf-8"), str(f), "exec")
    return f"{len(files)} Python files clean"

