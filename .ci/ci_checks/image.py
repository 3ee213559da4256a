"""The container image: a local stand-in for the distroless base (CI cannot pull images), deploy/Dockerfile
built on it, and the image run the way deploy/README.md and the Kubernetes manifests run it: as its
non-root user, read-only root file system, no capabilities, no new privileges, on the host network (so all
traffic stays on 127.0.0.1)."""

import glob
import io
import json
import os
import pathlib
import shutil
import tarfile
import time

from . import binary as binary_checks
from .common import (DISTROLESS, IMAGE_CONTEXT, IMAGE_ENTRYPOINT, IMAGE_PORT, IMAGE_USER, ROOT, fail, fail_if,
                     free_port)
from .runner import run, run_status

# What gcr.io/distroless/cc-debian12 is made of (its package list: glibc, libgcc, libstdc++, OpenSSL,
# CA certificates, tzdata, netbase, base-files), taken from a debootstrapped Debian 12 tree, plus the
# files distroless writes itself (passwd/group with the nonroot user, nsswitch.conf, /tmp, /home/nonroot).
# No shell, no package manager, no coreutils: like the real base, a Dockerfile that RUNs anything fails.
STANDIN_PACKAGES = ["base-files", "netbase", "tzdata", "libc6", "libgcc-s1", "gcc-12-base", "libstdc++6",
                    "libssl3", "ca-certificates"]
STANDIN_EXTRA_FILES = ["etc/ssl/certs/ca-certificates.crt"]  # made by ca-certificates' postinst
STANDIN_PASSWD = ("root:x:0:0:root:/root:/sbin/nologin\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
                  "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
STANDIN_GROUP = "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"
# Written by standin_rootfs itself, whatever the packages hold.
SYNTHETIC = {"etc/passwd", "etc/group", "etc/nsswitch.conf", "tmp", "root", "home", "home/nonroot"}
STANDIN_NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"
# The image configuration of distroless cc-debian12:nonroot, applied by `docker import --change`.
STANDIN_CHANGES = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "USER 65532", "WORKDIR /home/nonroot"]
STANDIN_TAG = "localhost/dli-ci/cc-debian12-standin:nonroot"
IMAGE_TAG = "localhost/dli-exporter:ci"
# How deploy/README.md and deploy/kubernetes run the container (the manifests add seccomp RuntimeDefault,
# which is Docker's default too).
HARDENED = ["--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
STOP_WITHIN = 5.0  # seconds from SIGTERM to exit


def standin_rootfs(rootfs, out):
    """Writes OUT, a tar of the stand-in base: the files of STANDIN_PACKAGES from the debootstrapped
    tree ROOTFS (usr-merged paths resolved), their parent directories, and distroless' own files."""
    rootfs = pathlib.Path(rootfs).resolve()
    picked = {}

    def pick(listed):
        full = rootfs / listed.lstrip("/")
        if listed in ("/.", "/") or not os.path.lexists(full):
            return
        parent = pathlib.Path(os.path.realpath(full.parent))  # /lib -> usr/lib and the like
        if not parent.is_relative_to(rootfs):
            fail(f"{listed} resolves outside {rootfs}")
        real = parent / full.name
        picked[str(real.relative_to(rootfs))] = real
        for up in real.relative_to(rootfs).parents:
            if str(up) != ".":
                picked[str(up)] = rootfs / up

    info = rootfs / "var/lib/dpkg/info"
    for pkg in STANDIN_PACKAGES:
        lists = glob.glob(str(info / f"{pkg}.list")) + glob.glob(str(info / f"{pkg}:*.list"))
        if not lists:
            fail(f"package {pkg} is not installed in {rootfs} (debootstrap --include it)")
        for path in lists:
            for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
                pick(line)
    for extra in STANDIN_EXTRA_FILES:
        if not (rootfs / extra).is_file():
            fail(f"{extra} missing in {rootfs}")
        pick("/" + extra)
    for link in ("bin", "lib", "lib64", "sbin"):  # the usr-merge symlinks
        if (rootfs / link).is_symlink():
            picked[link] = rootfs / link

    def synthetic(tar, name, mode, data=None, uid=0, directory=False):
        ti = tarfile.TarInfo(name)
        ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, uid, int(time.time())
        if directory:
            ti.type = tarfile.DIRTYPE
            tar.addfile(ti)
        else:
            raw = data.encode()
            ti.size = len(raw)
            tar.addfile(ti, io.BytesIO(raw))

    tmp = pathlib.Path(str(out) + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for arc in sorted(picked):
            if arc in SYNTHETIC:
                continue
            ti = tar.gettarinfo(str(picked[arc]), arcname=arc)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if ti.isreg():
                with open(picked[arc], "rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
        synthetic(tar, "etc/passwd", 0o644, STANDIN_PASSWD)
        synthetic(tar, "etc/group", 0o644, STANDIN_GROUP)
        synthetic(tar, "etc/nsswitch.conf", 0o644, STANDIN_NSSWITCH)
        synthetic(tar, "tmp", 0o1777, directory=True)
        synthetic(tar, "root", 0o700, directory=True)
        synthetic(tar, "home", 0o755, directory=True)
        synthetic(tar, "home/nonroot", 0o700, uid=65532, directory=True)
    tmp.replace(out)
    print(f"{out}: {len(picked)} entries from {', '.join(STANDIN_PACKAGES)}; {os.path.getsize(out) // 1024} KiB")


class Docker:
    """The docker CLI talking to the daemon image-checks.sh started (its own socket), with its own empty
    client configuration (no credential helpers), and the classic builder (works offline)."""

    def __init__(self, cli, host, work):
        self.cli, self.host = cli, host
        self.config = pathlib.Path(work) / "docker-client"
        self.config.mkdir(parents=True, exist_ok=True)

    def env(self):
        return {"DOCKER_CONFIG": str(self.config), "DOCKER_BUILDKIT": "0"}

    def __call__(self, *args, **kwargs):
        return run([self.cli, "--host", self.host, *args], env=self.env(), **kwargs)

    def quiet(self, *args, **kwargs):
        return self(*args, echo=False, **kwargs)

    def status(self, *args, timeout=60):
        return run_status([self.cli, "--host", self.host, *args], env=self.env(), timeout=timeout)

    def inspect(self, what, name):
        return json.loads(self.quiet(what, "inspect", name, timeout=60))[0]


def import_base(docker, standin_tar):
    args = []
    for change in STANDIN_CHANGES:
        args += ["--change", change]
    docker("import", *args, standin_tar, STANDIN_TAG)
    size = docker.inspect("image", STANDIN_TAG)["Size"]
    return f"{STANDIN_TAG} in place of {DISTROLESS}: {size / 1e6:.1f} MB"


def build(docker, binary, work):
    """The build context users make (deploy/README.md): a directory holding the release binary and the
    example config; deploy/Dockerfile built from it with BASE set to the stand-in."""
    ctx = pathlib.Path(work) / "image-context"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    sources = {"dli_exporter": pathlib.Path(binary), "config.example.toml": ROOT / "config.example.toml"}
    assert set(sources) == set(IMAGE_CONTEXT)
    for name, src in sources.items():
        shutil.copy2(src, ctx / name)
    docker("build", "--network", "none", "--file", ROOT / "deploy" / "Dockerfile",
           "--build-arg", f"BASE={STANDIN_TAG}", "--tag", IMAGE_TAG, ctx, timeout=600)


def image_config(docker):
    """The built image runs the binary as 65532:65532, exposes 10049, and adds only COPY layers."""
    img = docker.inspect("image", IMAGE_TAG)
    base = docker.inspect("image", STANDIN_TAG)
    cfg = img["Config"]
    problems = []
    if cfg.get("User") != IMAGE_USER:
        problems.append(f"User {cfg.get('User')!r}, want {IMAGE_USER!r}")
    if cfg.get("Entrypoint") != IMAGE_ENTRYPOINT:
        problems.append(f"Entrypoint {cfg.get('Entrypoint')}, want {IMAGE_ENTRYPOINT}")
    if f"{IMAGE_PORT}/tcp" not in (cfg.get("ExposedPorts") or {}):
        problems.append(f"ExposedPorts {cfg.get('ExposedPorts')}, want {IMAGE_PORT}/tcp")
    added = len(img["RootFS"]["Layers"]) - len(base["RootFS"]["Layers"])
    if added != len(IMAGE_CONTEXT):
        problems.append(f"{added} layers on top of the base, want {len(IMAGE_CONTEXT)} (one per COPY)")
    fail_if(problems)
    return (f"User {cfg['User']}, Entrypoint {cfg['Entrypoint']}, Cmd {cfg.get('Cmd')}, "
            f"{added} layers on the base")


def sizes(docker):
    """The line reporting the image size (deploy/README.md quotes it)."""
    try:
        img = docker.inspect("image", IMAGE_TAG)["Size"]
        base = docker.inspect("image", STANDIN_TAG)["Size"]
    except Exception as e:
        return f"image size: unknown ({e})"
    return (f"image size: {img / 1e6:.1f} MB ({img} bytes; the stand-in base {base / 1e6:.1f} MB, "
            f"the binary and config {(img - base) / 1e6:.1f} MB)")


def version_in_container(docker, binary):
    """--version in the hardened container prints what the binary prints on the host."""
    want = run([binary, "--version"]).strip()
    got = docker("run", "--rm", *HARDENED, IMAGE_TAG, "--version", timeout=60).strip()
    if got != want:
        fail(f"container --version printed {got!r}, the binary prints {want!r}")
    return got


def default_cmd_without_config(docker):
    """Without arguments and without a mounted config the container exits non-zero and names the config
    path it looked for (the default CMD reads /etc/dli_exporter/dli_exporter.toml)."""
    code, out = docker.status("run", "--rm", *HARDENED, IMAGE_TAG)
    if code == 0:
        fail(f"the container exited 0 without a config:\n{out}")
    if "/etc/dli_exporter/dli_exporter.toml" not in out:
        fail(f"the error does not name /etc/dli_exporter/dli_exporter.toml:\n{out}")
    return f"exit code {code}: {out.strip().splitlines()[-1]}"


class DemoContainer:
    """`--demo` in the hardened container, listening on 127.0.0.1:PORT of the host network."""

    def __init__(self, docker, work):
        self.docker = docker
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.name = f"dli-ci-demo-{os.getpid()}"
        self.metrics = pathlib.Path(work) / "container-metrics.txt"

    def start(self):
        self.docker("run", "--detach", "--name", self.name, *HARDENED, IMAGE_TAG, "--demo",
                    "--web.listen-address", f"127.0.0.1:{self.port}", timeout=60)

    def state(self):
        return self.docker.inspect("container", self.name)["State"]

    def running(self):
        return self.state().get("Running", False)

    def logs(self):
        try:
            return self.docker.quiet("logs", "--tail", "30", self.name, timeout=30)
        except Exception as e:
            return f"(no logs: {e})"

    def serving(self, timeout):
        try:
            return binary_checks.serving(self.base, self.metrics, timeout, self.running, "the container")
        except Exception:
            print(f"container logs:\n{self.logs()}")
            raise

    def hardening(self):
        """What the kernel says about the container's process: uid/gid 65532, no capabilities in any set,
        no_new_privs, root file system mounted read-only."""
        pid = self.state()["Pid"]
        status = dict(line.split(":", 1) for line in
                      pathlib.Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
        status = {k: v.split() for k, v in status.items()}
        problems = []
        uid, gid = IMAGE_USER.split(":")
        if set(status["Uid"]) != {uid} or set(status["Gid"]) != {gid}:
            problems.append(f"Uid {status['Uid']} Gid {status['Gid']}, want all {uid}/{gid}")
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            if int(status[cap][0], 16) != 0:
                problems.append(f"{cap} {status[cap][0]}, want 0")
        if status.get("NoNewPrivs") != ["1"]:
            problems.append(f"NoNewPrivs {status.get('NoNewPrivs')}, want 1")
        root = [line.split() for line in pathlib.Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                if line.split()[4] == "/"]
        if not root or "ro" not in root[-1][5].split(","):
            problems.append(f"root mount options {root[-1][5] if root else None}, want ro")
        fail_if(problems)
        return (f"pid {pid}: Uid/Gid {uid}/{gid}, CapEff/CapBnd 0, NoNewPrivs 1, "
                f"root mounted {root[-1][5]}")

    def sigterm(self):
        """`docker stop` sends SIGTERM (to the exporter: it is PID 1, without an init) and waits: exit code
        0 within STOP_WITHIN seconds, not the SIGKILL after the grace period."""
        t0 = time.monotonic()
        self.docker("stop", "--time", "20", self.name, timeout=60)
        took = time.monotonic() - t0
        state = self.state()
        problems = []
        if state.get("ExitCode") != 0 or state.get("OOMKilled"):
            problems.append(f"exit code {state.get('ExitCode')} (OOMKilled {state.get('OOMKilled')}), want 0")
        if took > STOP_WITHIN:
            problems.append(f"stopped after {took:.1f}s, want under {STOP_WITHIN:.0f}s")
        if problems:
            problems.append(f"container logs:\n{self.logs()}")
        fail_if(problems)
        return f"exit code 0, {took:.2f}s after SIGTERM"

    def remove(self):
        try:
            self.docker.quiet("rm", "--force", self.name, timeout=60)
        except Exception as e:
            print(f"could not remove container {self.name}: {e}")


def no_new_interfaces(before):
    """The daemon runs with --bridge=none and the containers on the host network: no interface (docker0,
    veth) may have appeared since it started."""
    now = set(os.listdir("/sys/class/net"))
    added = now - set(before.split())
    if added:
        fail(f"network interfaces added while the image checks ran: {sorted(added)}")
    return f"interfaces: {' '.join(sorted(now))}"
