//! The `/metrics` render cache: the last rendered exposition (plain text, and gzip made at most
//! once per rendering) keyed by a change generation, so scrapes between two changes cost a
//! pointer load and a refcount bump instead of a gather + encode + compress.
//!
//! Staleness rule: a cached rendering is served while (a) the generation it was rendered at is
//! still current and (b) it is younger than its expiry: at most [`MAX_AGE`], and never past the
//! moment a queue's job series go stale. The generation is bumped on every change that must be
//! visible at once: a snapshot replaced or a poll recorded (successful or not), the set of queues
//! changed, lifecycle counters updated, a reload, a collector option changed. Values that move
//! on their own between those events (`process_*`, the `dli_api_*` request counters and
//! histograms, which tick during a walk) are therefore at most [`MAX_AGE`] old; a scrape after
//! a poll completes always shows that poll's results, counters included, because the poll's
//! outcome bumps the generation after its last request was counted.
//!
//! It owns the cache and the gzip encoding. It must not know what is rendered (the caller passes
//! a render function) and never renders twice at once: concurrent scrapes of a stale entry wait
//! for one rendering.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;

/// Longest time a rendering is served when no change was signalled.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// One rendering.
struct Rendered {
    generation: u64,
    expires: Instant,
    plain: Bytes,
    /// Compressed on the first gzip scrape of this rendering; `None` if compression failed.
    gzip: OnceLock<Option<Bytes>>,
}

/// What a scrape is sent.
#[derive(Debug, Clone)]
pub struct Exposition {
    pub body: Bytes,
    /// `body` is gzip-encoded.
    pub gzip: bool,
}

/// The cache. One per `/metrics` registry.
#[derive(Default)]
pub struct RenderCache {
    current: ArcSwapOption<Rendered>,
    /// Held while rendering, so a burst of scrapes after a change renders once.
    rendering: Mutex<()>,
}

impl RenderCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The exposition for generation `generation`: cached when still valid, else rendered by
    /// `render`, which returns the text and the latest instant it may be served until (`None`:
    /// [`MAX_AGE`] from now).
    pub fn get(
        &self,
        generation: u64,
        gzip: bool,
        render: impl FnOnce() -> (Vec<u8>, Option<Instant>),
    ) -> Exposition {
        let entry = match self.valid(generation) {
            Some(e) => e,
            None => {
                let _guard = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
                // Someone else may have rendered while this scrape waited.
                match self.valid(generation) {
                    Some(e) => e,
                    None => {
                        let now = Instant::now();
                        let (text, until) = render();
                        let max = now + MAX_AGE;
                        let entry = Arc::new(Rendered {
                            generation,
                            expires: until.map_or(max, |u| u.min(max)),
                            plain: Bytes::from(text),
                            gzip: OnceLock::new(),
                        });
                        self.current.store(Some(entry.clone()));
                        entry
                    }
                }
            }
        };
        if gzip && let Some(body) = entry.gzip.get_or_init(|| compress(&entry.plain)) {
            return Exposition {
                body: body.clone(),
                gzip: true,
            };
        }
        Exposition {
            body: entry.plain.clone(),
            gzip: false,
        }
    }

    fn valid(&self, generation: u64) -> Option<Arc<Rendered>> {
        let guard = self.current.load_full()?;
        (guard.generation == generation && Instant::now() < guard.expires).then_some(guard)
    }
}

fn compress(body: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    match enc.write_all(body).and_then(|()| enc.finish()) {
        Ok(v) => Some(Bytes::from(v)),
        Err(e) => {
            tracing::warn!(error = %e, "gzip failed; sending uncompressed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn renders_once_per_generation_and_gzips_once() {
        let cache = RenderCache::new();
        let calls = Cell::new(0);
        let render = || {
            calls.set(calls.get() + 1);
            (format!("m {}\n", calls.get()).into_bytes(), None)
        };
        let a = cache.get(1, false, render);
        let b = cache.get(1, true, render);
        let c = cache.get(1, true, render);
        assert_eq!(calls.get(), 1);
        assert_eq!(&a.body[..], b"m 1\n");
        assert!(b.gzip && c.gzip);
        assert_eq!(b.body, c.body, "gzip made once and shared");
        let mut text = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&b.body[..])
            .read_to_string(&mut text)
            .expect("gunzip");
        assert_eq!(text, "m 1\n");
        let d = cache.get(2, false, render);
        assert_eq!(calls.get(), 2);
        assert_eq!(&d.body[..], b"m 2\n");
    }

    #[test]
    fn an_expired_rendering_is_rendered_again() {
        let cache = RenderCache::new();
        let calls = Cell::new(0);
        let render = || {
            calls.set(calls.get() + 1);
            (Vec::new(), Some(Instant::now()))
        };
        cache.get(1, false, render);
        cache.get(1, false, render);
        assert_eq!(calls.get(), 2, "expiry in the past: no reuse");
    }
}
