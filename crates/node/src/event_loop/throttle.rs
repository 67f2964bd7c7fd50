//! A bandwidth limit for outgoing snapshots: the placement driver's
//! `max_snapshot_bytes_per_sec`, which the node agent learns from heartbeat answers.
//!
//! [`Throttled`] reads from a byte slice no faster than a node-wide token bucket
//! ([`Limiter`], shared by every snapshot the node sends) allows: `rate` bytes per second, with
//! a burst of a tenth of a second's worth (at least one chunk), so QUIC flow control still sees
//! full chunks. Idle time earns no more than the burst.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes handed out per read at most.
const CHUNK_BYTES: usize = 64 << 10;

/// The token bucket's arithmetic, apart from I/O so it is unit-tested.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    /// Bytes that may go at once.
    burst: u64,
}

impl Bucket {
    pub(super) fn new(rate: u64) -> Self {
        Self {
            rate,
            burst: (rate / 10).max(CHUNK_BYTES as u64),
        }
    }

    /// Bytes earned `elapsed` after the start.
    fn earned(&self, elapsed: Duration) -> u128 {
        u128::from(self.rate) * elapsed.as_micros() / 1_000_000
    }

    /// How many bytes may go now, `sent` bytes having gone `elapsed` after the start, or how
    /// long to wait before any may.
    pub(super) fn allowance(&self, elapsed: Duration, sent: u64) -> Result<u64, Duration> {
        if self.rate == 0 {
            return Ok(u64::MAX);
        }
        let budget = self.earned(elapsed).saturating_add(u128::from(self.burst));
        let sent = u128::from(sent);
        if budget > sent {
            return Ok(u64::try_from(budget - sent).unwrap_or(u64::MAX));
        }
        // Time at which `sent - burst + 1` bytes are earned.
        let needed = sent + 1 - u128::from(self.burst);
        let at_micros = needed * 1_000_000 / u128::from(self.rate);
        let at = Duration::from_micros(u64::try_from(at_micros).unwrap_or(u64::MAX));
        Err(at.saturating_sub(elapsed).max(Duration::from_millis(1)))
    }
}

/// The node-wide snapshot bandwidth: one bucket shared by every snapshot sender.
#[derive(Debug)]
pub(super) struct Limiter {
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    bucket: Bucket,
    started: Instant,
    sent: u64,
}

impl Limiter {
    /// Unlimited until [`Limiter::set_rate`].
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(LimiterState {
                bucket: Bucket::new(0),
                started: Instant::now(),
                sent: 0,
            }),
        })
    }

    /// Sets the rate (bytes per second, 0 = unlimited); the bucket starts full.
    pub(super) fn set_rate(&self, rate: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.bucket.rate != rate {
            *state = LimiterState {
                bucket: Bucket::new(rate),
                started: Instant::now(),
                sent: 0,
            };
        }
    }

    /// Takes up to `want` bytes of allowance, or says how long to wait.
    fn take(&self, want: u64) -> Result<u64, Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut elapsed = now.duration_since(state.started);
        if state.bucket.rate > 0 && state.bucket.earned(elapsed) >= u128::from(state.sent) {
            // Caught up (idle): restart the count so idle time earns at most the burst.
            state.started = now;
            state.sent = 0;
            elapsed = Duration::ZERO;
        }
        let allowed = state.bucket.allowance(elapsed, state.sent)?;
        let taken = allowed.min(want);
        state.sent = state.sent.saturating_add(taken);
        Ok(taken)
    }
}

/// Reads `data` no faster than its [`Limiter`] allows.
pub(super) struct Throttled<'a> {
    data: &'a [u8],
    limiter: Arc<Limiter>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a> Throttled<'a> {
    /// `data` paced by `limiter`.
    pub(super) fn new(data: &'a [u8], limiter: Arc<Limiter>) -> Self {
        Self {
            data,
            limiter,
            sleep: None,
        }
    }
}

impl AsyncRead for Throttled<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(sleep) = self.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            if self.data.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let want = CHUNK_BYTES.min(buf.remaining()).min(self.data.len());
            match self.limiter.take(want as u64) {
                Ok(allowed) => {
                    let count = usize::try_from(allowed).unwrap_or(want).min(want);
                    let (head, tail) = self.data.split_at(count);
                    buf.put_slice(head);
                    self.data = tail;
                    return Poll::Ready(Ok(()));
                }
                Err(wait) => self.sleep = Some(Box::pin(tokio::time::sleep(wait))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let bucket = Bucket::new(1_000_000);
        assert_eq!(bucket.allowance(Duration::ZERO, 0), Ok(100_000));
        assert_eq!(
            bucket.allowance(Duration::from_millis(100), 100_000),
            Ok(100_000)
        );
        // Burst spent, nothing earned yet: wait until one more byte is earned.
        let wait = bucket.allowance(Duration::ZERO, 100_000).unwrap_err();
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        let wait = bucket.allowance(Duration::ZERO, 600_000).unwrap_err();
        assert!(
            wait > Duration::from_millis(499) && wait <= Duration::from_millis(501),
            "{wait:?}"
        );
        assert_eq!(
            Bucket::new(0).allowance(Duration::ZERO, 1 << 40),
            Ok(u64::MAX)
        );
    }

    #[tokio::test]
    async fn throttled_reads_return_every_byte_in_order() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let limiter = Limiter::new();
        for rate in [0, 4_000_000] {
            limiter.set_rate(rate);
            // Two senders share the node's bandwidth.
            let (mut first, mut second) = (Vec::new(), Vec::new());
            let mut reader_a = Throttled::new(&data, limiter.clone());
            let mut reader_b = Throttled::new(&data, limiter.clone());
            let (a, b) = tokio::join!(
                reader_a.read_to_end(&mut first),
                reader_b.read_to_end(&mut second),
            );
            a.unwrap();
            b.unwrap();
            assert_eq!(first, data, "rate {rate}");
            assert_eq!(second, data, "rate {rate}");
        }
    }
}
