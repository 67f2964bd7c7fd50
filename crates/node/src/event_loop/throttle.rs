//! A bandwidth limit for outgoing snapshots: the placement driver's
//! `max_snapshot_bytes_per_sec`, which the node agent learns from heartbeat answers.
//!
//! [`Throttled`] reads from a byte slice no faster than a token bucket allows: `rate` bytes per
//! second, with a burst of a tenth of a second's worth (at least one chunk), so QUIC flow
//! control still sees full chunks.

use std::future::Future as _;
use std::pin::Pin;
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

    /// How many bytes may go now, `sent` bytes having gone `elapsed` after the start, or how
    /// long to wait before any may.
    pub(super) fn allowance(&self, elapsed: Duration, sent: u64) -> Result<u64, Duration> {
        if self.rate == 0 {
            return Ok(u64::MAX);
        }
        let earned = u128::from(self.rate) * elapsed.as_micros() / 1_000_000;
        let budget = earned.saturating_add(u128::from(self.burst));
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

/// Reads `data` no faster than its [`Bucket`] allows.
pub(super) struct Throttled<'a> {
    data: &'a [u8],
    bucket: Bucket,
    started: Instant,
    sent: u64,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<'a> Throttled<'a> {
    /// `data` at `rate` bytes per second (0 = unlimited).
    pub(super) fn new(data: &'a [u8], rate: u64) -> Self {
        Self {
            data,
            bucket: Bucket::new(rate),
            started: Instant::now(),
            sent: 0,
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
            match self.bucket.allowance(self.started.elapsed(), self.sent) {
                Ok(allowed) => {
                    let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
                    let count = allowed
                        .min(CHUNK_BYTES)
                        .min(buf.remaining())
                        .min(self.data.len());
                    let (head, tail) = self.data.split_at(count);
                    buf.put_slice(head);
                    self.data = tail;
                    self.sent += count as u64;
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
        for rate in [0, 10_000_000] {
            let mut read = Vec::new();
            Throttled::new(&data, rate)
                .read_to_end(&mut read)
                .await
                .unwrap();
            assert_eq!(read, data, "rate {rate}");
        }
    }
}
