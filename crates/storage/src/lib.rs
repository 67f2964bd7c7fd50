//! ringkv-storage (under construction).
