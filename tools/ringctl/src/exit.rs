//! Exit codes, the same on every command (docs/ringctl.md):
//! 0 ok (`ExitCode::SUCCESS`), 1 key not found (or a compare-and-swap that did not swap), 2 usage error,
//! 3 unauthenticated or permission denied, 4 unavailable or timed out, 5 any other error.

use std::process::ExitCode;

/// The key does not exist (`kv get`), or a compare-and-swap found another value.
pub const NOT_FOUND: u8 = 1;
/// The command line is wrong (clap exits with 2 too).
pub const USAGE: u8 = 2;
/// No valid credentials, or the user lacks a grant.
pub const AUTH: u8 = 3;
/// The cluster did not answer in time or has no quorum; retrying later may work.
pub const UNAVAILABLE: u8 = 4;
/// Anything else (refused by the placement driver, bad configuration, I/O).
pub const OTHER: u8 = 5;

/// The exit code of a failed command: the first ringctl-relevant error in the chain decides.
pub fn code_of(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(client) = cause.downcast_ref::<ringkv_client::Error>() {
            if client.is_auth() {
                return AUTH;
            }
            if client.is_retryable() {
                return UNAVAILABLE;
            }
            return OTHER;
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return USAGE;
        }
    }
    OTHER
}

/// A usage error found after parsing (e.g. passwords that differ, a bad role).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// `ExitCode` of a code.
pub fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_types::WireError;

    #[test]
    fn errors_map_to_their_codes() {
        let cases: Vec<(anyhow::Error, u8)> = vec![
            (
                anyhow::Error::new(ringkv_client::Error::PermissionDenied {
                    missing: "admin".into(),
                })
                .context("moving"),
                AUTH,
            ),
            (
                anyhow::Error::new(ringkv_client::Error::Unauthenticated {
                    reason: "expired".into(),
                }),
                AUTH,
            ),
            (
                anyhow::Error::new(ringkv_client::Error::Server(WireError::Timeout)),
                UNAVAILABLE,
            ),
            (
                anyhow::Error::new(ringkv_client::Error::NoShardMap {
                    reason: "nobody".into(),
                }),
                UNAVAILABLE,
            ),
            (
                anyhow::Error::new(ringkv_client::Error::Server(WireError::InvalidRequest {
                    reason: "bad".into(),
                })),
                OTHER,
            ),
            (anyhow::Error::new(Usage("passwords differ".into())), USAGE),
            (anyhow::anyhow!("cannot read file"), OTHER),
        ];
        for (error, code) in cases {
            assert_eq!(code_of(&error), code, "{error:#}");
        }
    }
}
