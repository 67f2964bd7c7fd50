//! Identity and access: who a request comes from ([`Principal`]) and whether it may do what it
//! asks ([`authorize`]): the one choke point every native request passes before it reaches the
//! event loop (the HTTP API calls the same function).
//!
//! - [`principal`]: the resolved caller: a node, or a user with its roles.
//! - [`authorize()`]: pure; a table-driven test (`authorize_test.rs`) covers principal x request.
//!
//! The rules (docs/security.md has the threat model):
//! - Nodes may do everything except speak for another node: node-agent PD commands
//!   (`RegisterNodeAs`, `NodeHeartbeat`, `ShardReport`) are accepted only from the certificate
//!   of the node they name, and never from users (admins included).
//! - `admin` users may do every admin, placement, scheduler, user, key and fault command, and
//!   reach every key.
//! - Other users may read the routing information clients need (shard map, nodes, node status),
//!   log in, and reach the keys of their own namespace (read-write) and of the namespaces they
//!   were granted (`read:NS`, `readwrite:NS`).

mod authenticator;
mod authorize;
pub mod keys;
pub mod password;
pub mod principal;
pub mod token;

pub use authenticator::{Authenticator, now_secs};
pub use authorize::{authorize, describe, is_audited};
pub use principal::{Grant, Principal, ROOT_CERT_NAME, ROOT_USER};

#[cfg(test)]
mod authorize_test;
