//! A fast liveness probe for a node's QUIC endpoint, without a handshake.
//!
//! A QUIC connection to a node that died or froze learns nothing for a long time: quinn ignores
//! ICMP errors, so a handshake to a dead port waits for its timeout, and a call on an
//! established connection to a frozen process waits for the idle timeout. The probe gives the
//! caller fast evidence instead: it sends one datagram holding a long-header packet with a
//! reserved, unsupported QUIC version (`0x?a?a?a?a`, RFC 9000 section 15), padded to the
//! 1200 bytes a server needs before it answers (RFC 9000 section 5.2.2). A live quinn endpoint
//! answers at once, from its endpoint driver and without any TLS work, with a Version
//! Negotiation packet echoing our connection ids. So:
//!
//! - an answer means the process runs and its endpoint driver is polled
//!   ([`Probe::Alive`]);
//! - an ICMP port-unreachable (the process is gone, the port is closed) surfaces on our
//!   connected socket as `ECONNREFUSED` ([`Probe::Refused`]), usually within a round trip;
//! - silence until the timeout ([`Probe::Silent`]) means a frozen (SIGSTOP) or overloaded
//!   process, a dead host or a partition.
//!
//! The probe costs one 1200-byte datagram and one ~30-byte answer, and uses its own ephemeral
//! UDP socket, so it never disturbs the caller's QUIC endpoint.

use crate::error::{Error, Result};
use ring::rand::{SecureRandom, SystemRandom};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// A reserved version (RFC 9000 section 15: versions `0x?a?a?a?a` are never supported), so
/// every QUIC server answers with Version Negotiation.
const PROBE_VERSION: u32 = 0x5a6a_7a8a;
/// A server ignores packets with an unsupported version shorter than this (RFC 9000 section
/// 14.1; quinn's `MIN_INITIAL_SIZE`).
const PROBE_DATAGRAM_BYTES: usize = 1200;
/// Length of the connection ids we send (any value up to 20 works for an unknown version).
const CID_BYTES: usize = 8;
/// Most unrelated datagrams read while waiting for the answer (a bound on a hostile sender).
const STRAY_DATAGRAMS_MAX: usize = 64;

/// What a probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A QUIC endpoint answered, after `rtt`.
    Alive {
        /// Time from sending to the answer.
        rtt: Duration,
    },
    /// The host answered that nothing listens on the port (ICMP port unreachable).
    Refused,
    /// Nothing came back within the timeout.
    Silent,
}

impl Probe {
    /// Whether the endpoint answered.
    pub fn is_alive(self) -> bool {
        matches!(self, Probe::Alive { .. })
    }
}

/// Probes the QUIC endpoint at `addr` (`ip:port`, or `host:port` resolved now) and waits at
/// most `timeout` for its answer. See the module docs for what each outcome means.
///
/// # Errors
/// [`Error::Resolve`] for a name that does not resolve, [`Error::Bind`] when no local UDP
/// socket can be bound. Send errors and refusals are [`Probe::Refused`], not errors.
pub async fn probe(addr: &str, timeout: Duration) -> Result<Probe> {
    let deadline = Instant::now() + timeout;
    let addr = tokio::time::timeout_at(deadline, crate::resolve::resolve(addr))
        .await
        .map_err(|_| Error::Timeout {
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })??;
    probe_addr(addr, deadline).await
}

/// [`probe`] of a resolved address, until `deadline`.
///
/// # Errors
/// [`Error::Bind`] when no local UDP socket can be bound.
pub async fn probe_addr(addr: SocketAddr, deadline: Instant) -> Result<Probe> {
    let local = match addr {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let bind_error = |source| Error::Bind {
        addr: local,
        source,
    };
    let socket = UdpSocket::bind(local).await.map_err(bind_error)?;
    // Connected, so the kernel reports an ICMP port-unreachable as ECONNREFUSED on this socket.
    if socket.connect(addr).await.is_err() {
        return Ok(Probe::Refused);
    }
    let mut source_cid = [0u8; CID_BYTES];
    let mut destination_cid = [0u8; CID_BYTES];
    let random = SystemRandom::new();
    // A failed random fill leaves zeros: the probe still works, its answer is just easier to
    // forge, which only an on-path attacker could exploit to fake liveness.
    let _ = random.fill(&mut source_cid);
    let _ = random.fill(&mut destination_cid);
    let datagram = probe_datagram(&destination_cid, &source_cid);
    let sent = Instant::now();
    if socket.send(&datagram).await.is_err() {
        return Ok(Probe::Refused);
    }
    let mut buffer = [0u8; 1500];
    for _ in 0..STRAY_DATAGRAMS_MAX {
        match tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await {
            Err(_) => return Ok(Probe::Silent),
            Ok(Err(_)) => return Ok(Probe::Refused),
            Ok(Ok(len)) => {
                let answer = buffer.get(..len).unwrap_or_default();
                if is_version_negotiation_for(answer, &source_cid) {
                    return Ok(Probe::Alive {
                        rtt: sent.elapsed(),
                    });
                }
            }
        }
    }
    Ok(Probe::Silent)
}

/// The probe packet: a long header (form and fixed bits set) with [`PROBE_VERSION`], our
/// connection ids, padded with zeros to [`PROBE_DATAGRAM_BYTES`].
fn probe_datagram(destination_cid: &[u8; CID_BYTES], source_cid: &[u8; CID_BYTES]) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(PROBE_DATAGRAM_BYTES);
    datagram.push(0xc0);
    datagram.extend_from_slice(&PROBE_VERSION.to_be_bytes());
    datagram.push(CID_BYTES as u8);
    datagram.extend_from_slice(destination_cid);
    datagram.push(CID_BYTES as u8);
    datagram.extend_from_slice(source_cid);
    datagram.resize(PROBE_DATAGRAM_BYTES, 0);
    datagram
}

/// Whether `packet` is a Version Negotiation packet (long header, version 0) addressed to
/// `source_cid` (the server echoes our source id as its destination id).
fn is_version_negotiation_for(packet: &[u8], source_cid: &[u8; CID_BYTES]) -> bool {
    let Some((&first, rest)) = packet.split_first() else {
        return false;
    };
    if first & 0x80 == 0 {
        return false;
    }
    let Some((version, rest)) = rest.split_first_chunk::<4>() else {
        return false;
    };
    if u32::from_be_bytes(*version) != 0 {
        return false;
    }
    let Some((&cid_len, rest)) = rest.split_first() else {
        return false;
    };
    rest.get(..usize::from(cid_len)) == Some(&source_cid[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_is_a_padded_long_header_with_a_reserved_version() {
        let datagram = probe_datagram(&[1; CID_BYTES], &[2; CID_BYTES]);
        assert_eq!(datagram.len(), PROBE_DATAGRAM_BYTES);
        assert_eq!(datagram.first(), Some(&0xc0));
        assert_eq!(datagram.get(1..5), Some(&PROBE_VERSION.to_be_bytes()[..]));
        // Reserved versions have 0xa in the low nibble of every byte.
        assert!(PROBE_VERSION.to_be_bytes().iter().all(|b| b & 0x0f == 0x0a));
    }

    #[test]
    fn only_a_version_negotiation_for_our_id_counts() {
        let ours = [7u8; CID_BYTES];
        let answer = |first: u8, version: u32, cid: &[u8]| {
            let mut packet = vec![first];
            packet.extend_from_slice(&version.to_be_bytes());
            packet.push(u8::try_from(cid.len()).unwrap_or(0));
            packet.extend_from_slice(cid);
            packet.push(CID_BYTES as u8);
            packet.extend_from_slice(&[1; CID_BYTES]);
            packet.extend_from_slice(&1u32.to_be_bytes());
            packet
        };
        assert!(is_version_negotiation_for(&answer(0xc5, 0, &ours), &ours));
        assert!(!is_version_negotiation_for(&answer(0xc5, 1, &ours), &ours));
        assert!(!is_version_negotiation_for(&answer(0x45, 0, &ours), &ours));
        assert!(!is_version_negotiation_for(
            &answer(0xc5, 0, &[8; CID_BYTES]),
            &ours
        ));
        assert!(!is_version_negotiation_for(
            &answer(0xc5, 0, &ours[..4]),
            &ours
        ));
        assert!(!is_version_negotiation_for(&[], &ours));
        assert!(!is_version_negotiation_for(&[0xc0, 0, 0], &ours));
    }
}
