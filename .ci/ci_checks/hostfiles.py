"""Static checks of the files that are neither rules nor manifests: the systemd unit, the Dockerfiles,
and the CI's own scripts and workflow (linters)."""

import json
import re
import shlex
import sys
import tomllib

from .common import (DEPLOY, DISTROLESS, IMAGE_CONTEXT, IMAGE_ENTRYPOINT, IMAGE_PORT, IMAGE_USER, ROOT, SYSTEMD,
                     fail, fail_if)
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


# The units CI verifies: the one with key files, and the ECS one without (auth.kind = "metadata").
UNITS = ("dli_exporter.service", "ecs/dli_exporter.service")
CREDENTIAL_LINE = re.compile(r"^(LoadCredential=|Environment=DLI_EXPORTER__AUTH__)")


def unit_settings(path):
    """The non-comment, non-empty lines of a unit file."""
    return [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def systemd_ecs_lint():
    """deploy/systemd/ecs/dli_exporter.service is the main unit without LoadCredential= and the
    DLI_EXPORTER__AUTH__* environment (so the hardening cannot drift apart); its config is keyless."""
    main = [line for line in unit_settings(SYSTEMD / "dli_exporter.service") if not CREDENTIAL_LINE.match(line)]
    ecs = unit_settings(SYSTEMD / "ecs" / "dli_exporter.service")
    problems = []
    if ecs != main:
        extra = [line for line in ecs if line not in main]
        missing = [line for line in main if line not in ecs]
        problems.append(f"ecs/dli_exporter.service differs from dli_exporter.service beyond the credential "
                        f"lines: extra {extra}, missing {missing} (or in another order)")
    auth = tomllib.loads((SYSTEMD / "ecs" / "dli_exporter.toml").read_text(encoding="utf-8")).get("auth", {})
    if auth.get("kind") != "metadata":
        problems.append(f"ecs/dli_exporter.toml: [auth] kind should be \"metadata\", got {auth.get('kind')!r}")
    if set(auth) - {"kind", "metadata_endpoint", "iam_endpoint"}:
        problems.append(f"ecs/dli_exporter.toml: [auth] holds {sorted(set(auth) - {'kind'})}: keep key material "
                        "out")
    fail_if(problems)
    dropped = len(unit_settings(SYSTEMD / "dli_exporter.service")) - len(ecs)
    print(f"{len(ecs)} settings: the main unit's without its {dropped} credential lines")


def unit_copy(work, binary, rel="dli_exporter.service"):
    """A copy of the unit REL (under deploy/systemd) whose ExecStart= runs BINARY (verify insists that the
    executable exists). The copy keeps the file name: verify names the unit after it."""
    out = work / "systemd" / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    text = (SYSTEMD / rel).read_text(encoding="utf-8")
    out.write_text(text.replace("/usr/local/bin/dli_exporter", str(binary)), encoding="utf-8")
    return out


def systemd_verify(unit):
    """systemd-analyze verify; it only warns (exit 0) about settings it cannot parse: any output fails."""
    run([tool("systemd-analyze"), "verify", unit], quiet=True)


def systemd_security(unit):
    run([tool("systemd-analyze"), "security", "--offline=yes", "--threshold=20", unit])


# --- Dockerfiles ----------------------------------------------------------------------------------------
def instructions(path):
    """[(INSTRUCTION, arguments)] of a Dockerfile, continuation lines joined, comments dropped."""
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages(instrs):
    """[[(INSTRUCTION, arguments)] per stage], each starting with its FROM; [0] is what precedes the
    first FROM (global ARGs)."""
    out = [[]]
    for ins in instrs:
        if ins[0] == "FROM":
            out.append([])
        out[-1].append(ins)
    return out


def final_stage_contract(stage):
    """What users run, whichever Dockerfile built the image: where files go, user, port, entry point."""
    return {
        "COPY destinations": sorted(args.split()[-1] for ins, args in stage if ins == "COPY"),
        "USER": [args for ins, args in stage if ins == "USER"],
        "EXPOSE": [args for ins, args in stage if ins == "EXPOSE"],
        "ENTRYPOINT": [args for ins, args in stage if ins == "ENTRYPOINT"],
        "CMD": [args for ins, args in stage if ins == "CMD"],
    }


def copy_sources(stage):
    out = []
    for ins, args in stage:
        if ins == "COPY" and "--from=" not in args:
            out += [a for a in args.split()[:-1] if not a.startswith("--")]
    return out


def base_arg(global_part, where, problems):
    args = dict(a.split("=", 1) for ins, a in global_part if ins == "ARG" and "=" in a)
    if args.get("BASE") != DISTROLESS:
        problems.append(f"{where}: want `ARG BASE={DISTROLESS}` before the first FROM (the image users "
                        f"pull by default; CI passes its local stand-in), got {args.get('BASE')!r}")


def runtime_stage_problems(stage, where):
    problems = []
    if stage[0][1] not in ("${BASE}", "$BASE"):
        problems.append(f"{where}: the runtime stage must be FROM ${{BASE}}, got FROM {stage[0][1]}")
    if any(ins == "RUN" for ins, _ in stage):
        problems.append(f"{where}: RUN in the runtime stage (distroless has no shell)")
    users = [args for ins, args in stage if ins == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"{where}: the runtime stage must switch to a non-root USER, got {users}")
    elif users[-1] != IMAGE_USER:
        problems.append(f"{where}: USER {users[-1]}, want {IMAGE_USER} (distroless nonroot)")
    entry = [args for ins, args in stage if ins == "ENTRYPOINT"]
    if len(entry) != 1 or not entry[0].startswith("[") or json.loads(entry[0]) != IMAGE_ENTRYPOINT:
        problems.append(f"{where}: want ENTRYPOINT {IMAGE_ENTRYPOINT} in exec form, got {entry}")
    if [args for ins, args in stage if ins == "EXPOSE"] != [str(IMAGE_PORT)]:
        problems.append(f"{where}: want EXPOSE {IMAGE_PORT}")
    return problems


def dockerfile_lint():
    """deploy/Dockerfile (what CI builds): one stage on ${BASE} copying the binary built outside, no RUN,
    no syntax directive, non-root; deploy/Dockerfile.build (for users, not built by CI): builds with
    cargo in rust:1.95-bookworm and ends in the same runtime stage."""
    problems = []
    runtime_path, build_path = DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.build"
    text = runtime_path.read_text(encoding="utf-8")
    if re.search(r"^#\s*syntax\s*=", text, re.M | re.I):
        problems.append("Dockerfile: a `# syntax=` directive makes BuildKit pull a frontend image; CI builds "
                        "offline")
    if "UNTESTED" in text:
        problems.append("Dockerfile still says UNTESTED")
    runtime = stages(instructions(runtime_path))
    base_arg(runtime[0], "Dockerfile", problems)
    if len(runtime) != 2:
        problems.append(f"Dockerfile: want exactly one stage (the binary is built outside), got {len(runtime) - 1}")
    final = runtime[-1]
    problems += runtime_stage_problems(final, "Dockerfile")
    for src in copy_sources(final):
        if src not in IMAGE_CONTEXT:
            problems.append(f"Dockerfile: COPY {src}: the build context holds only {sorted(IMAGE_CONTEXT)}")
    if not (ROOT / "config.example.toml").is_file():
        problems.append("config.example.toml (copied into the image) does not exist")

    build = stages(instructions(build_path))
    base_arg(build[0], "Dockerfile.build", problems)
    froms = [s[0][1].split()[0] for s in build[1:]]
    if not froms or froms[0] != RUST_IMAGE:
        problems.append(f"Dockerfile.build: first stage should be {RUST_IMAGE}, got {froms[:1]}")
    if len(froms) < 2:
        problems.append("Dockerfile.build: not multi-stage")
    if not any(ins == "RUN" and "cargo build --release --locked" in args for ins, args in build[1]):
        problems.append("Dockerfile.build: no `cargo build --release --locked` in the build stage")
    problems += runtime_stage_problems(build[-1], "Dockerfile.build")
    for src in copy_sources(build[-1]) + [s for st in build[1:-1] for s in copy_sources(st)]:
        if not (ROOT / src).exists():
            problems.append(f"Dockerfile.build: COPY source {src} does not exist in the repository")
    want, got = final_stage_contract(final), final_stage_contract(build[-1])
    for key in want:
        if want[key] != got[key]:
            problems.append(f"Dockerfile.build's runtime stage differs from Dockerfile's in {key}: "
                            f"{got[key]} vs {want[key]}")
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for must in ("target/", ".git/"):
        if must not in ignore and must.rstrip("/") not in ignore:
            problems.append(f".dockerignore does not exclude {must} (context of Dockerfile.build)")
    fail_if(problems)
    print("Dockerfile: " + " -> ".join(s[0][1] for s in runtime[1:]))
    print("Dockerfile.build: " + " -> ".join(s[0][1] for s in build[1:]))


def dockerfiles():
    return sorted(p for p in DEPLOY.rglob("Dockerfile*") if not p.name.endswith(".dockerignore"))


def hadolint():
    """hadolint on every Dockerfile under deploy/: no finding of any severity."""
    files = dockerfiles()
    if not files:
        fail("no Dockerfile under deploy/")
    run([tool("hadolint"), "--no-color", *files], quiet=True, cwd=ROOT)
    return f"{len(files)} Dockerfiles clean: {', '.join(str(f.relative_to(ROOT)) for f in files)}"


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


def workflows():
    return sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))


def actionlint():
    """actionlint on every workflow (with shellcheck on PATH it checks the `run:` scripts too)."""
    files = workflows()
    if not files:
        fail("no .github/workflows/*.yml")
    run([tool("actionlint"), "-no-color", *files], quiet=True, cwd=ROOT)
    return f"{len(files)} workflows clean: {', '.join(shlex.quote(f.name) for f in files)}"
