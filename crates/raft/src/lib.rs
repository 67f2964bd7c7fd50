//! ringkv's Raft core (under construction): the storage read interface is defined; the state
//! machine lands next.

pub mod error;
pub mod storage;

pub use error::{Error, Result, StorageError};
pub use storage::{InitialState, Storage};
