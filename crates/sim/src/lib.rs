//! ringkv-sim (under construction).
