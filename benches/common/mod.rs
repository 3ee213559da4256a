//! Shared fixtures of the benchmarks: the simulator data sets (a scrape-sized world of 3 queues x
//! 200 owners x 5 states, a big realistic queue), the exporter's TOML configuration pointing at a
//! simulator (full walks at every poll, `poll.mode = "full"`, unless a phase changes it), and a
//! minimal keep-alive HTTP/1.1 GET client over loopback.
//!
//! It owns no measurement and prints nothing; each bench decides what to time. It must not be
//! used by `cargo test` (benches are not built there).
#![allow(dead_code)]

/// Reading the exposition: the same code the integration tests use.
#[path = "../../tests/common/exposition.rs"]
pub mod exposition;

use std::time::Duration;

use dli_exporter::dli::states::KNOWN_STATES;
use dli_exporter::sim::{DEMO_ACCESS_KEY, DEMO_PROJECT_ID, DEMO_SECRET_KEY, SimJob, Simulator};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub const PID: &str = DEMO_PROJECT_ID;
/// A fixed "now" (2026-11-01T00:00:00Z in ms) so generated data is the same on every run.
pub const NOW_MS: i64 = 1_793_491_200_000;
/// Queue names of the scrape world.
pub fn scrape_queues(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("queue{i}")).collect()
}

/// One job per owner per known state: `owners * 5` jobs, so `owners * 5`
/// `dli_batch_jobs_by_owner` series per queue once polled.
pub fn owner_state_jobs(queue: &str, owners: usize) -> Vec<SimJob> {
    let mut out = Vec::with_capacity(owners * KNOWN_STATES.len());
    for o in 0..owners {
        for (s, state) in KNOWN_STATES.iter().enumerate() {
            let i = o * KNOWN_STATES.len() + s;
            out.push(SimJob::new(
                format!("{queue}-{i:06}"),
                state,
                Some(&format!("owner_{o:03}")),
                NOW_MS - i as i64 * 1000,
            ));
        }
    }
    out
}

/// Fills `sim` with the scrape world: `queues` queues of `owners x 5` jobs each.
pub fn fill_scrape_world(sim: &Simulator, queues: usize, owners: usize) -> Vec<String> {
    let names = scrape_queues(queues);
    for q in &names {
        sim.set_jobs(PID, q, owner_state_jobs(q, owners));
    }
    names
}

/// Poll settings of a benchmark run.
#[derive(Debug, Clone)]
pub struct PollSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub request_timeout: Duration,
    pub page_size: u32,
    pub concurrency: u32,
}

impl PollSettings {
    /// Polls every `interval`, each allowed all of it but half a second (requests at most 5 s).
    pub fn every(interval: Duration, page_size: u32, concurrency: u32) -> Self {
        let timeout = interval.saturating_sub(Duration::from_millis(500));
        PollSettings {
            interval,
            timeout,
            request_timeout: timeout.min(Duration::from_secs(5)),
            page_size,
            concurrency,
        }
    }
}

/// The exporter's configuration (TOML, the user-facing contract) for polling `queues` of the
/// simulator at `sim_url` with the demo credentials, listening on `listen`.
pub fn exporter_toml(
    sim_url: &str,
    queues: &[String],
    listen: &str,
    poll: &PollSettings,
) -> String {
    let queues = queues
        .iter()
        .map(|q| format!("{q:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let secs = |d: Duration| format!("\"{}ms\"", d.as_millis());
    format!(
        "[web]\nlisten_address = \"{listen}\"\ntelemetry_path = \"/metrics\"\n\n\
         [poll]\ninterval = {}\ntimeout = {}\nrequest_timeout = {}\npage_size = {}\n\
         max_pages = 5000\nconcurrency = {}\nretries = 1\nstale_after = \"10m\"\nmode = \"full\"\n\n\
         [metrics]\nowner_breakdown = true\nmax_owners_per_queue = 200\n\n\
         [auth]\nkind = \"aksk\"\naccess_key = \"{DEMO_ACCESS_KEY}\"\nsecret_key = \"{DEMO_SECRET_KEY}\"\n\n\
         [[projects]]\nproject_id = \"{PID}\"\nregion = \"cn-north-4\"\nendpoint = \"{sim_url}\"\n\
         queues = [{queues}]\n",
        secs(poll.interval),
        secs(poll.timeout),
        secs(poll.request_timeout),
        poll.page_size,
        poll.concurrency,
    )
}

/// A keep-alive HTTP/1.1 connection that sends GETs and reads `Content-Length` bodies.
pub struct HttpConn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    request: Vec<u8>,
    head: String,
    pub body: Vec<u8>,
}

/// What one GET answered.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub body_len: usize,
    pub gzip: bool,
}

impl HttpConn {
    pub async fn connect(
        addr: std::net::SocketAddr,
        path: &str,
        gzip: bool,
    ) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let accept = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        Ok(HttpConn {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: w,
            request: format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}\r\n").into_bytes(),
            head: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends the GET and reads the whole answer into `self.body`.
    pub async fn get(&mut self) -> std::io::Result<Answer> {
        self.writer.write_all(&self.request).await?;
        let mut status = 0u16;
        let mut len = 0usize;
        let mut gzip = false;
        let mut first = true;
        loop {
            self.head.clear();
            if self.reader.read_line(&mut self.head).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            let line = self.head.trim_end();
            if first {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                first = false;
                continue;
            }
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    len = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("content-encoding") {
                    gzip = value.trim().eq_ignore_ascii_case("gzip");
                }
            }
        }
        self.body.resize(len, 0);
        self.reader.read_exact(&mut self.body).await?;
        Ok(Answer {
            status,
            body_len: len,
            gzip,
        })
    }
}

/// One GET on a fresh connection; the body as text.
pub async fn get_text(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut c = HttpConn::connect(addr, path, false).await?;
    let a = c.get().await?;
    Ok((a.status, String::from_utf8_lossy(&c.body).into_owned()))
}
