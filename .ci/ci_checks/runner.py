"""Runs checks and reports them: one "ok"/"FAIL" line per check with its time, the output of a failed
check indented below it, and a closing "NAME: N passed, M failed" line."""

import contextlib
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import traceback

from .common import Failed


class Suite:
    def __init__(self, name, work, verbose=False):
        self.name = name
        self.work = work
        self.verbose = verbose
        self.passed = 0
        self.failed = 0
        self.failed_names = []
        self.start = time.monotonic()

    def check(self, name, fn, *args, **kwargs):
        """Runs FN(*ARGS); it passes unless it raises. Whatever it prints (and a string it returns) is
        shown on failure, or always with verbose. Returns whether it passed."""
        out = io.StringIO()
        t0 = time.monotonic()
        try:
            with contextlib.redirect_stdout(out):
                detail = fn(*args, **kwargs)
            if isinstance(detail, str) and detail:
                print(detail, file=out)
            ok = True
        except Failed as e:
            print(e, file=out)
            ok = False
        except Exception:  # a bug in the check or an unexpected file shape: show where
            out.write(traceback.format_exc())
            ok = False
        secs = round(time.monotonic() - t0)
        if ok:
            self.passed += 1
            print(f"ok    {name:<76} {secs:>3}s", flush=True)
            if self.verbose:
                self._indent(out.getvalue(), "      ")
        else:
            self.failed += 1
            self.failed_names.append(name)
            print(f"FAIL  {name:<76} {secs:>3}s", flush=True)
            self._indent(out.getvalue(), "      | ", limit=200)
        return ok

    @staticmethod
    def _indent(text, prefix, limit=None):
        lines = text.rstrip("\n").splitlines()
        if limit is not None and len(lines) > limit:
            lines = lines[:limit] + [f"... ({len(lines) - limit} more lines)"]
        for line in lines:
            print(prefix + line)
        sys.stdout.flush()

    @staticmethod
    def note(text):
        print(f"----  {text}", flush=True)

    @staticmethod
    def info(text):
        print(f"      {text}", flush=True)

    @staticmethod
    def skip(text):
        print(f"skip  {text}", flush=True)

    def finish(self):
        """Prints the summary; returns the exit code (0 if nothing failed)."""
        print()
        print(f"{self.name} took {round(time.monotonic() - self.start)}s")
        for name in self.failed_names:
            print(f"failed: {name}")
        print(f"{self.name}: {self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed else 0


def run(cmd, *, quiet=False, env=None, stdin=None, timeout=600, cwd=None, echo=True):
    """Runs CMD (a list) and returns its output (stdout and stderr together). Raises Failed, with the
    output, if it exits non-zero, or, with QUIET, if it prints anything at all (for linters that report
    findings as warnings with exit code 0). With ECHO (the default) the output is printed too: inside a
    check that is its log, shown on failure or with --verbose."""
    where = shlex.join(str(c) for c in cmd)
    try:
        p = subprocess.run([str(c) for c in cmd], stdin=stdin if stdin is not None else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                           env=None if env is None else {**os.environ, **env}, timeout=timeout, cwd=cwd)
    except FileNotFoundError:
        raise Failed(f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired as e:
        raise Failed(f"{where}: no exit within {timeout}s\n{e.output or ''}") from None
    if p.returncode != 0:
        raise Failed(f"{where}: exit code {p.returncode}\n{p.stdout}")
    if quiet and p.stdout.strip():
        raise Failed(f"{where}: exit code 0 but printed findings\n{p.stdout}")
    if echo and p.stdout:
        print(p.stdout, end="" if p.stdout.endswith("\n") else "\n")
    return p.stdout


def run_status(cmd, *, env=None, timeout=600):
    """(exit code, output) of CMD, for commands whose failure is the expected outcome."""
    try:
        p = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace",
                           env=None if env is None else {**os.environ, **env}, timeout=timeout)
    except FileNotFoundError:
        raise Failed(f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired as e:
        raise Failed(f"{shlex.join(str(c) for c in cmd)}: no exit within {timeout}s\n{e.output or ''}") from None
    return p.returncode, p.stdout


def tool(name):
    """Path of NAME on PATH or among the scripts of this Python (where pip puts console scripts)."""
    found = shutil.which(name) or shutil.which(name, path=sysconfig.get_path("scripts"))
    if not found:
        raise Failed(f"{name} is not installed (deploy-checks.sh / image-checks.sh install it)")
    return found


class Background:
    """Processes started for a suite (the demo exporter, Prometheus); all stopped by close()."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, log_path):
        log = open(log_path, "w", encoding="utf-8")
        proc = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(proc)
        return proc

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def tail(path, n=30):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "\n".join(f.read().splitlines()[-n:])
    except OSError as e:
        return f"({e})"
