//! A bandwidth limit for outgoing snapshots: the placement driver's
//! `max_snapshot_bytes_per_sec`, which the node agent learns from heartbeat answers.
//!
//! [`Throttled`] reads a byte stream no faster than a node-wide token bucket
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

/// Where a [`Throttled`] reader's bytes come from after its first buffer.
type ChunkSource = tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>;

/// Reads a byte stream no faster than its [`Limiter`] allows: a buffer given whole, or chunks
/// arriving on a channel (a snapshot read from the store by a blocking task), so a snapshot is
/// never held whole in memory while it is sent.
pub(super) struct Throttled {
    current: Vec<u8>,
    offset: usize,
    source: Option<ChunkSource>,
    limiter: Arc<Limiter>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Throttled {
    /// `data` paced by `limiter`.
    #[cfg(test)]
    pub(super) fn new(data: &[u8], limiter: Arc<Limiter>) -> Self {
        Self {
            current: data.to_vec(),
            offset: 0,
            source: None,
            limiter,
            sleep: None,
        }
    }

    /// `first`, then every chunk `source` yields until it closes, paced by `limiter`. An error
    /// from the source fails the read.
    pub(super) fn streaming(first: Vec<u8>, source: ChunkSource, limiter: Arc<Limiter>) -> Self {
        Self {
            current: first,
            offset: 0,
            source: Some(source),
            limiter,
            sleep: None,
        }
    }
}

impl AsyncRead for Throttled {
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
            let left = self.current.len().saturating_sub(self.offset);
            if left == 0 {
                let Some(source) = self.source.as_mut() else {
                    return Poll::Ready(Ok(()));
                };
                match source.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => {
                        self.source = None;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Some(Err(error))) => {
                        self.source = None;
                        return Poll::Ready(Err(error));
                    }
                    Poll::Ready(Some(Ok(chunk))) => {
                        self.current = chunk;
                        self.offset = 0;
                        continue;
                    }
                }
            }
            let want = CHUNK_BYTES.min(buf.remaining()).min(left);
            match self.limiter.take(want as u64) {
                Ok(allowed) => {
                    let count = usize::try_from(allowed).unwrap_or(want).min(want);
                    let start = self.offset;
                    if let Some(bytes) = self.current.get(start..start + count) {
                        buf.put_slice(bytes);
                    }
                    self.offset += count;
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

    #[tokio::test]
    async fn a_streaming_reader_yields_every_chunk_then_ends() {
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let mut reader = Throttled::streaming(b"head".to_vec(), receiver, Limiter::new());
        tokio::spawn(async move {
            for chunk in [b"one".to_vec(), Vec::new(), b"two".to_vec()] {
                sender.send(Ok(chunk)).await.unwrap();
            }
        });
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"headonetwo");
        // A failing source fails the read.
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let mut reader = Throttled::streaming(Vec::new(), receiver, Limiter::new());
        sender
            .send(Err(std::io::Error::other("disk")))
            .await
            .unwrap();
        assert!(reader.read_to_end(&mut Vec::new()).await.is_err());
    }
}
