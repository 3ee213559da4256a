"""Checks of the exporter binary against the deploy files: their configs pass its validation, it reloads
as the systemd unit and POST /-/reload expect, and its --demo exposition carries what rules and
dashboards use."""

import json
import pathlib
import signal
import subprocess
import time

from .common import (ABSENT_IN_DEMO_OK, CONTRACT, DEMO_PROJECT, DEMO_QUEUES, FINISHED_STATES, JOB_DURATION_BUCKETS,
                     OPENER, PROCESS, STATES, SYSTEMD, fail, fail_if, free_port, http_get, parse_exposition,
                     parse_exposition_text, wait_http)
from .runner import run, tool


def check_config(binary, config, env=None):
    run([binary, "--check-config", "--config.file", config], env=env)


def systemd_config(binary, work):
    """deploy/systemd/dli_exporter.toml with the credential paths the unit sets through the environment
    (%d = $CREDENTIALS_DIRECTORY), pointing at placeholder files."""
    (work / "cred-ak").write_text("PLACEHOLDERAK\n")
    (work / "cred-sk").write_text("PLACEHOLDERSK\n")
    check_config(binary, SYSTEMD / "dli_exporter.toml",
                 env={"DLI_EXPORTER__AUTH__ACCESS_KEY_FILE": str(work / "cred-ak"),
                      "DLI_EXPORTER__AUTH__SECRET_KEY_FILE": str(work / "cred-sk")})


def serving(base, out, timeout, alive, what):
    """/-/healthy and /-/ready answer 200 (ready: first poll done), /metrics is saved to OUT, / answers,
    an unknown path answers 404."""
    wait_http(f"{base}/-/healthy", timeout, alive, what)
    wait_http(f"{base}/-/ready", timeout, alive, what)
    problems = []
    status, body = http_get(f"{base}/metrics")
    if status != 200:
        problems.append(f"/metrics answered {status}")
    pathlib.Path(out).write_bytes(body)
    status, _ = http_get(f"{base}/")
    if status != 200:
        problems.append(f"/ answered {status}")
    status, _ = http_get(f"{base}/no-such-path")
    if status != 404:
        problems.append(f"/no-such-path answered {status}, want 404")
    fail_if(problems)
    return f"/metrics: {len(body)} bytes"


def promtool_metrics(path):
    """promtool check metrics on a saved exposition: no findings at all (it exits 0 on lint warnings)."""
    with open(path, "rb") as f:
        run([tool("promtool"), "check", "metrics"], stdin=f, quiet=True)


def demo_contract(exposition):
    """The demo exposition carries the contract metrics with their types and the demo queues/states."""
    samples, types = parse_exposition(exposition)
    problems = []
    for n, typ in {**CONTRACT, **PROCESS}.items():
        present = any(s[0] in (n, n + "_bucket", n + "_count") for s in samples)
        if not present and n not in ABSENT_IN_DEMO_OK:
            problems.append(f"{n} missing")
        if present and types.get(n) != typ:
            problems.append(f"{n}: TYPE {types.get(n)!r}, contract says {typ}")
    jobs = {(s[1].get("project_id"), s[1].get("queue"), s[1].get("state"))
            for s in samples if s[0] == "dli_batch_jobs"}
    for q in DEMO_QUEUES:
        for st in STATES:
            if (DEMO_PROJECT, q, st) not in jobs:
                problems.append(f'dli_batch_jobs{{project_id="{DEMO_PROJECT}",queue="{q}",state="{st}"}} missing')
    for n in ("dli_poll_success", "dli_last_successful_poll_timestamp_seconds"):
        qs = {s[1].get("queue") for s in samples if s[0] == n}
        if not set(DEMO_QUEUES) <= qs:
            problems.append(f"{n}: queues {sorted(qs)}, want {DEMO_QUEUES}")
    bi = [s for s in samples if s[0] == "dli_exporter_build_info"]
    if not bi or set(bi[0][1]) != {"version", "revision", "rustversion"}:
        problems.append(f"dli_exporter_build_info labels: {bi and sorted(bi[0][1])}")

    # job lifecycle counters: present (possibly 0) from the first successful poll, which /-/ready waited for
    def keys(name, *labels):
        return {tuple(s[1].get(lb) for lb in labels) for s in samples
                if s[0] == name and s[1].get("project_id") == DEMO_PROJECT}

    finished = keys("dli_batch_jobs_finished_total", "queue", "state")
    durations = keys("dli_batch_job_duration_seconds_count", "queue", "state")
    submitted = keys("dli_batch_jobs_submitted_total", "queue")
    for q in DEMO_QUEUES:
        if (q,) not in submitted:
            problems.append(f'dli_batch_jobs_submitted_total{{queue="{q}"}} missing')
        for st in FINISHED_STATES:
            if (q, st) not in finished:
                problems.append(f'dli_batch_jobs_finished_total{{queue="{q}",state="{st}"}} missing')
            if (q, st) not in durations:
                problems.append(f'dli_batch_job_duration_seconds{{queue="{q}",state="{st}"}} missing')
    les = {}
    for s in samples:
        if s[0] == "dli_batch_job_duration_seconds_bucket":
            key = tuple(sorted((k, v) for k, v in s[1].items() if k != "le"))
            les.setdefault(key, []).append(s[1].get("le"))
    for key, got in les.items():
        if got != JOB_DURATION_BUCKETS:
            problems.append(f"dli_batch_job_duration_seconds{dict(key)} buckets {got}, want {JOB_DURATION_BUCKETS}")
    # a fresh exporter reports its initial configuration load as successful (else DLIExporterConfigReloadFailed
    # would fire on every start)
    ok = [s[2] for s in samples if s[0] == "dli_exporter_config_last_reload_successful"]
    if ok != ["1"]:
        problems.append(f"dli_exporter_config_last_reload_successful: {ok}, want ['1']")
    fail_if(problems)
    print(f"{len(samples)} samples; dli_batch_jobs has {len(jobs)} series; "
          f"{len(finished)} finished / {len(submitted)} submitted / {len(les)} duration series")


def still_running(proc, log):
    if proc.poll() is not None:
        fail(f"the demo exporter exited with {proc.returncode} during the checks; its log:\n{log()}")


def sighup_survives(proc, base):
    """deploy/systemd/dli_exporter.service reloads with SIGHUP (ExecReload=/bin/kill -HUP $MAINPID): the
    exporter must survive it (SIGHUP's default action ends the process, and systemd would not restart it:
    Restart=on-failure counts SIGHUP as a clean exit)."""
    proc.send_signal(signal.SIGHUP)
    try:  # a process that dies of the signal does so at once; one second is ample
        proc.wait(1)
        fail(f"the exporter exited with {proc.returncode} on SIGHUP")
    except subprocess.TimeoutExpired:
        pass
    for path in ("/-/healthy", "/metrics"):
        status, _ = http_get(f"{base}{path}", timeout=5)
        if status != 200:
            fail(f"after SIGHUP {path} answered {status}")


def reload(binary, work, timeout):
    """An exporter started from a config file re-reads it on SIGHUP (the systemd unit's ExecReload) and on
    POST /-/reload: a good file takes effect (a new queue appears) and sets
    dli_exporter_config_last_reload_successful to 1, a bad one sets it to 0 and the previous configuration
    keeps running. The DLI endpoint is a closed port on 127.0.0.1 (polls fail fast; nothing leaves the host)."""
    import urllib.request

    work = pathlib.Path(work) / "reload"
    work.mkdir(parents=True, exist_ok=True)
    (work / "ak").write_text("PLACEHOLDERAK\n")
    (work / "sk").write_text("PLACEHOLDERSK\n")
    cfg = work / "dli_exporter.toml"
    port, dead_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"

    def write_config(queues, broken=False):
        text = (("no_such_key = 1\n" if broken else "")
                + '[poll]\ninterval = "60s"\ntimeout = "5s"\nrequest_timeout = "2s"\nretries = 0\n\n'
                + f'[auth]\nkind = "aksk"\naccess_key_file = {json.dumps(str(work / "ak"))}\n'
                + f'secret_key_file = {json.dumps(str(work / "sk"))}\n\n'
                + f'[[projects]]\nproject_id = "{DEMO_PROJECT}"\nregion = "cn-north-4"\n'
                + f'endpoint = "http://127.0.0.1:{dead_port}"\nqueues = {json.dumps(queues)}\n')
        tmp = cfg.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(cfg)  # atomic, like a ConfigMap update

    def get_metrics():
        with OPENER.open(f"{base}/metrics", timeout=5) as r:
            samples, _ = parse_exposition_text(r.read().decode())

        def one(n):
            return next((float(s[2]) for s in samples if s[0] == n), None)

        queues = {s[1].get("queue") for s in samples if s[0] == "dli_poll_success"}
        return (one("dli_exporter_config_last_reload_successful"),
                one("dli_exporter_config_last_reload_success_timestamp_seconds"), queues)

    def wait_for(what, cond):
        deadline = time.monotonic() + float(timeout)
        last = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exporter exited with {proc.returncode} while waiting for {what}")
            try:
                last = get_metrics()
                if cond(*last):
                    return last
            except OSError as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}; last (successful, timestamp, queues): {last}")

    write_config(["default"])
    log = open(work / "exporter.log", "w")
    proc = subprocess.Popen([str(binary), "--config.file", str(cfg), "--web.listen-address", f"127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _, ts0, _ = wait_for("the exporter to serve, initial load successful, queue default polled",
                             lambda ok, ts, qs: ok == 1 and ts and "default" in qs)
        time.sleep(0.05)  # the reload timestamp has a resolution: make the next one differ

        write_config(["default", "etl"])
        proc.send_signal(signal.SIGHUP)
        _, ts1, _ = wait_for("SIGHUP: reload successful (new timestamp) and the new queue etl polled",
                             lambda ok, ts, qs: ok == 1 and ts > ts0 and "etl" in qs)
        print(f"SIGHUP with a good file: reloaded, queue etl added (timestamp +{ts1 - ts0:.2f}s)")

        write_config(["default"], broken=True)
        proc.send_signal(signal.SIGHUP)
        wait_for("SIGHUP with a broken file: dli_exporter_config_last_reload_successful 0, the previous "
                 "configuration (queues default, etl) still running",
                 lambda ok, ts, qs: ok == 0 and ts == ts1 and {"default", "etl"} <= qs)
        print("SIGHUP with a broken file: reload failed, exporter still serving the previous configuration")

        write_config(["default"])
        req = urllib.request.Request(f"{base}/-/reload", method="POST")
        with OPENER.open(req, timeout=10) as r:
            if r.status != 200:
                raise RuntimeError(f"POST /-/reload answered {r.status}")
        wait_for("POST /-/reload with the fixed file: successful again",
                 lambda ok, ts, qs: ok == 1 and ts > ts1)
        print("POST /-/reload with the fixed file: reloaded")
    except Exception as e:
        log.flush()
        tail = (work / "exporter.log").read_text(errors="replace").splitlines()[-20:]
        fail(f"{e}\nexporter log (last lines):\n" + "\n".join("  " + line for line in tail))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def version(binary):
    out = run([binary, "--version"])
    if not out.strip():
        fail("--version printed nothing")
    return out.strip()
