//! ringkv-transport (under construction).
