//! ringkv-raft (under construction).
