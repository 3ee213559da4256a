//! The real binary as a child process with a cleared environment (no proxies, no stray
//! `DLI_EXPORTER__*` or `HUAWEICLOUD_SDK_*`), outputs captured in files, killed and reaped on drop
//! so a failing test never leaves an exporter running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dli_exporter");

pub struct ChildGuard {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// A temporary working directory owned by the child ([`spawn_in_tempdir`]): its config and
    /// output files live as long as it does.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl ChildGuard {
    /// Takes charge of a child started elsewhere, whose outputs go to `{name}.stdout` and
    /// `{name}.stderr` in `dir`.
    pub fn adopt(child: Child, dir: &Path, name: &str) -> ChildGuard {
        ChildGuard {
            child,
            stdout: dir.join(format!("{name}.stdout")),
            stderr: dir.join(format!("{name}.stderr")),
            _dir: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn outputs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics (with the outputs) if the child has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("exporter exited early with {status}\n{}", self.outputs());
        }
    }

    /// Sends `signal` (a name such as `TERM` or `HUP`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the exit, polling so the test's runtime keeps serving simulators.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {within:?}\n{}",
                self.outputs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Scrapes `url` until `pred` holds for a 200 answer's body (at most `within`), asserting
    /// before each try that the child still runs; a timeout shows the last body and the
    /// child's outputs.
    pub async fn scrape_until(
        &mut self,
        url: &str,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let client = super::http();
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            self.assert_running();
            if let Ok(r) = client.get(url).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                last = r.text().await.unwrap_or_default();
                if pred(&last) {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last scrape of {url}:\n{last}\n{}",
                self.outputs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then wait for the exit.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(within).await
    }
}

/// A loopback address (`127.0.0.1:port`) whose port was free a moment ago, for a child's
/// `--web.listen-address`.
pub fn free_listen_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

/// Starts the binary in `dir` (its working directory; outputs go to `{name}.stdout/.stderr`
/// there) with a cleared environment plus `env`.
pub fn spawn(dir: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let stdout = dir.join(format!("{name}.stdout"));
    let stderr = dir.join(format!("{name}.stderr"));
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start dli_exporter");
    ChildGuard {
        child,
        stdout,
        stderr,
        _dir: None,
    }
}

/// Starts the binary in a fresh temporary directory (its working directory, kept as long as the
/// guard), with `files` written there first.
pub fn spawn_in_tempdir(args: &[&str], files: &[(&str, &str)], env: &[(&str, &str)]) -> ChildGuard {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write file");
    }
    let mut child = spawn(dir.path(), "child", args, env);
    child._dir = Some(dir);
    child
}

/// Runs the binary to completion (at most `within`).
pub async fn run(
    dir: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    within: Duration,
) -> (ExitStatus, ChildGuard) {
    let mut child = spawn(dir, name, args, env);
    let status = child.wait_exit(within).await;
    (status, child)
}
