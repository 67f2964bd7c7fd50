//! Parsers of the ids and positions admin commands take (`3` or `s3`, `4` or `n4`, `0x8000...`),
//! as clap value parsers: an error is a sentence for the user.

use ringkv_types::{NodeId, ShardId};

/// Parses a shard id: `3` or `s3`. Shard 0 is the placement driver and is refused.
pub fn parse_shard(text: &str) -> std::result::Result<ShardId, String> {
    let digits = text.trim().trim_start_matches(['s', 'S']);
    let id: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a shard id (e.g. 3 or s3)"))?;
    if id == 0 {
        return Err("shard 0 is the placement driver's own group, not a data shard".into());
    }
    Ok(ShardId(id))
}

/// Parses a shard id for the inspector: `3`, `s3`, or `0` / `pd` for the placement driver's
/// group.
pub fn parse_shard_or_pd(text: &str) -> std::result::Result<ShardId, String> {
    if text.trim().eq_ignore_ascii_case("pd") {
        return Ok(ShardId::PD);
    }
    let digits = text.trim().trim_start_matches(['s', 'S']);
    digits
        .parse()
        .map(ShardId)
        .map_err(|_| format!("{text:?} is not a shard id (e.g. 3, s3, or pd)"))
}

/// Parses a node id: `4` or `n4`.
pub fn parse_node(text: &str) -> std::result::Result<NodeId, String> {
    let digits = text.trim().trim_start_matches(['n', 'N']);
    let id: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a node id (e.g. 4 or n4)"))?;
    if id == 0 {
        return Err("node ids start at 1".into());
    }
    Ok(NodeId(id))
}

/// Parses a ring position: decimal, or hex with `0x`.
pub fn parse_position(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a ring position (0 to 2^64-1, decimal or 0x hex)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_positions_parse() {
        assert_eq!(parse_shard("3"), Ok(ShardId(3)));
        assert_eq!(parse_shard("s12"), Ok(ShardId(12)));
        assert!(parse_shard("0").is_err());
        assert!(parse_shard("x").is_err());
        assert_eq!(parse_node("n4"), Ok(NodeId(4)));
        assert!(parse_node("0").is_err());
        assert!(parse_node("-1").is_err());
        assert_eq!(parse_position("0x8000_0000_0000_0000"), Ok(1 << 63));
        assert_eq!(parse_position("42"), Ok(42));
        assert!(parse_position("0x1_0000_0000_0000_0000").is_err());
        assert!(parse_position("").is_err());
    }
}
