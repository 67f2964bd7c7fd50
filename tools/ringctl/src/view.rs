//! What the admin commands print, as pure functions of the placement driver's state: tables for
//! people, JSON values for scripts, and the balance measure `rebalance` polls for.

use ringkv_types::pd::{Operator, PdState, SchedulerKind, Settings};
use ringkv_types::ring::Arc;
use ringkv_types::{NodeId, ReplicaRole, ShardDescriptor};
use serde_json::{Value, json};

pub use ringkv_client::views::{
    kind_text, nodes_json, operator_json, shards_json, state_text, step_text, used_bytes,
};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Whether tables print as `-w simple`: no header, one line per row, cells joined by ", ".
static SIMPLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every [`Table`] print in the simple format (`-w simple`), or aligned (the default).
pub fn set_simple(simple: bool) {
    SIMPLE.store(simple, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `-w simple` is in force: commands leave out their prose lines (headers, notes).
pub fn is_simple() -> bool {
    SIMPLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// A text table: columns as wide as their widest cell, two spaces apart.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, one line per row, with a trailing newline; in the simple format (see
    /// [`set_simple`]) without the header, cells joined by ", ".
    pub fn render(&self) -> String {
        if is_simple() {
            return self.render_simple();
        }
        self.render_aligned()
    }

    /// Rows only, cells joined by ", ", a trailing newline.
    pub fn render_simple(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            out.push_str(&row.join(", "));
            out.push('\n');
        }
        out
    }

    /// Aligned columns under a header.
    pub fn render_aligned(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, width) in widths.iter().enumerate() {
                let cell = row.get(index).map_or("", String::as_str);
                let _ = write!(line, "{cell:<width$}  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {name}")
    }
}

/// An arc as `start..end` in hex (`end` for the top of the ring).
pub fn arc_text(arc: &Arc) -> String {
    match arc.end {
        Some(end) => format!("{:016x}..{end:016x}", arc.start),
        None => format!("{:016x}..end", arc.start),
    }
}

/// The command-line name of a scheduler.
pub fn scheduler_name(kind: SchedulerKind) -> &'static str {
    match kind {
        SchedulerKind::Repair => "repair",
        SchedulerKind::Drain => "drain",
        SchedulerKind::Split => "split",
        SchedulerKind::BalanceReplicas => "balance-replicas",
        SchedulerKind::BalanceLeaders => "balance-leaders",
    }
}

/// The scheduler named `name` (`balance_replicas` and `balance-replicas` both work).
pub fn parse_scheduler(name: &str) -> Option<SchedulerKind> {
    let name = name.trim().to_ascii_lowercase().replace('_', "-");
    SchedulerKind::ALL
        .into_iter()
        .find(|kind| scheduler_name(*kind) == name)
}

/// An operator in one line: `op7 admin: add learner on n4 (step 1/3)`.
pub fn operator_text(operator: &Operator) -> String {
    let current = operator
        .current_step()
        .map_or_else(|| "finishing".to_string(), |step| step_text(&step));
    format!(
        "{} {}: {current} (step {}/{})",
        operator.id,
        kind_text(operator.kind),
        (operator.current + 1).min(operator.steps.len()),
        operator.steps.len()
    )
}

/// The operators in flight, in a progress line's tail (`: op7 drain: add learner on n4 (step
/// 1/3) on shard 5`), when there are at most three of them (a wait that stalls then shows what
/// it waits for); empty otherwise.
pub fn few_operators_text(state: &PdState) -> String {
    if state.operators.is_empty() || state.operators.len() > 3 {
        return String::new();
    }
    let listed: Vec<String> = state
        .operators
        .values()
        .map(|o| format!("{} on shard {}", operator_text(o), o.shard.get()))
        .collect();
    format!(": {}", listed.join("; "))
}

/// `ringctl nodes`.
pub fn nodes_table(state: &PdState) -> String {
    let replicas = state.replica_counts();
    let leaders = state.leader_counts();
    let mut table = Table::new(&[
        "ID", "ADDRESS", "STATE", "REPLICAS", "LEADERS", "CAPACITY", "USED",
    ]);
    for node in state.nodes.values() {
        table.row(vec![
            node.id.get().to_string(),
            node.addr.clone(),
            state_text(node.state).to_string(),
            replicas.get(&node.id).copied().unwrap_or(0).to_string(),
            leaders.get(&node.id).copied().unwrap_or(0).to_string(),
            human_bytes(node.capacity_bytes),
            used_bytes(node).map_or_else(|| "-".to_string(), human_bytes),
        ]);
    }
    table.render()
}

/// Replicas as `1,2,3,4(learner)`.
fn replicas_text(descriptor: &ShardDescriptor) -> String {
    descriptor
        .replicas
        .iter()
        .map(|r| match r.role {
            ReplicaRole::Voter => r.node.get().to_string(),
            ReplicaRole::Learner => format!("{}(learner)", r.node.get()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `ringctl shards`.
pub fn shards_table(state: &PdState) -> String {
    let mut table = Table::new(&[
        "SHARD", "ARC", "EPOCH", "REPLICAS", "LEADER", "SIZE", "OPERATOR",
    ]);
    for descriptor in &state.shard_map.shards {
        let status = state.shards.get(&descriptor.id);
        table.row(vec![
            descriptor.id.get().to_string(),
            arc_text(&descriptor.arc),
            format!("{}.{}", descriptor.epoch.conf_ver, descriptor.epoch.version),
            replicas_text(descriptor),
            state
                .leader(descriptor.id)
                .map_or_else(|| "-".to_string(), |l| l.get().to_string()),
            status.map_or_else(|| "-".to_string(), |s| human_bytes(s.stats.size_bytes)),
            state
                .operator(descriptor.id)
                .map_or_else(|| "-".to_string(), operator_text),
        ]);
    }
    table.render()
}

/// Replica and leader counts over `Up` nodes (the ones balancing fills).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    /// Replicas per `Up` node.
    pub replicas: BTreeMap<NodeId, u64>,
    /// Leaderships per `Up` node.
    pub leaders: BTreeMap<NodeId, u64>,
    /// Operators in flight.
    pub operators: usize,
}

fn spread(counts: &BTreeMap<NodeId, u64>) -> u64 {
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    max - min
}

impl Balance {
    /// The counts of `state`.
    pub fn of(state: &PdState) -> Self {
        let up = |counts: BTreeMap<NodeId, u64>| {
            counts
                .into_iter()
                .filter(|(node, _)| state.is_placement_target(*node))
                .collect()
        };
        Self {
            replicas: up(state.replica_counts()),
            leaders: up(state.leader_counts()),
            operators: state.operators.len(),
        }
    }

    /// Max minus min replicas per `Up` node.
    pub fn replica_spread(&self) -> u64 {
        spread(&self.replicas)
    }

    /// Max minus min leaderships per `Up` node.
    pub fn leader_spread(&self) -> u64 {
        spread(&self.leaders)
    }

    /// Replica counts differ by at most one, leaders too, and nothing is in flight.
    pub fn is_balanced(&self) -> bool {
        self.replica_spread() <= 1 && self.leader_spread() <= 1 && self.operators == 0
    }

    /// `replicas n1=6 n2=5 | leaders n1=3 n2=2 | 2 operators in flight`.
    pub fn line(&self) -> String {
        let counts = |counts: &BTreeMap<NodeId, u64>| {
            counts
                .iter()
                .map(|(node, count)| format!("{node}={count}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "replicas {} | leaders {} | {} operator(s) in flight",
            counts(&self.replicas),
            counts(&self.leaders),
            self.operators
        )
    }

    /// The counts as JSON.
    pub fn json(&self) -> Value {
        let counts = |counts: &BTreeMap<NodeId, u64>| -> BTreeMap<String, u64> {
            counts
                .iter()
                .map(|(node, count)| (node.get().to_string(), *count))
                .collect()
        };
        json!({
            "replicas": counts(&self.replicas),
            "leaders": counts(&self.leaders),
            "operators_in_flight": self.operators,
            "replica_spread": self.replica_spread(),
            "leader_spread": self.leader_spread(),
            "balanced": self.is_balanced(),
        })
    }
}

/// A list of operators (a `rebalance --dry-run` plan).
pub fn operators_table(operators: &[Operator]) -> String {
    let mut table = Table::new(&["OPERATOR", "SHARD", "KIND", "STEPS"]);
    for operator in operators {
        table.row(vec![
            operator.id.to_string(),
            operator.shard.get().to_string(),
            kind_text(operator.kind).to_string(),
            operator
                .steps
                .iter()
                .map(step_text)
                .collect::<Vec<_>>()
                .join(", then "),
        ]);
    }
    table.render()
}

/// Operators as JSON.
pub fn operators_json(operators: &[Operator]) -> Value {
    Value::Array(operators.iter().map(operator_json).collect())
}

/// `ringctl scheduler list`: every scheduler's switch, then the settings.
pub fn schedulers_table(settings: &Settings) -> String {
    let mut table = Table::new(&["SCHEDULER", "ENABLED"]);
    for kind in SchedulerKind::ALL {
        table.row(vec![
            scheduler_name(kind).to_string(),
            if settings.enabled(kind) { "yes" } else { "no" }.to_string(),
        ]);
    }
    let mut out = table.render();
    out.push('\n');
    let mut limits = Table::new(&["SETTING", "VALUE"]);
    if let Ok(Value::Object(fields)) = serde_json::to_value(settings) {
        for (name, value) in fields {
            if !value.is_boolean() {
                limits.row(vec![name, value.to_string()]);
            }
        }
    }
    out.push_str(&limits.render());
    out
}

/// `ringctl scheduler list --json`.
pub fn schedulers_json(settings: &Settings) -> Value {
    let schedulers: BTreeMap<&str, bool> = SchedulerKind::ALL
        .into_iter()
        .map(|kind| (scheduler_name(kind), settings.enabled(kind)))
        .collect();
    json!({ "schedulers": schedulers, "settings": settings })
}

/// `settings` with the field `key` set to `value` (parsed as the field's type).
///
/// # Errors
/// A message naming the unknown key or the unparsable value.
pub fn set_setting(settings: &Settings, key: &str, value: &str) -> Result<Settings, String> {
    let Ok(Value::Object(mut fields)) = serde_json::to_value(settings) else {
        return Err("cannot read the settings".into());
    };
    let key = key.trim().replace('-', "_");
    let known: Vec<String> = fields.keys().cloned().collect();
    let Some(slot) = fields.get_mut(&key) else {
        return Err(format!(
            "unknown setting {key:?}; settings are: {}",
            known.join(", ")
        ));
    };
    *slot = if slot.is_boolean() {
        match value.trim() {
            "true" | "on" | "yes" => Value::Bool(true),
            "false" | "off" | "no" => Value::Bool(false),
            other => return Err(format!("{key} takes true or false, not {other:?}")),
        }
    } else {
        let number: u64 = value
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|_| format!("{key} takes a non-negative integer, not {value:?}"))?;
        Value::from(number)
    };
    serde_json::from_value(Value::Object(fields)).map_err(|e| format!("{key}: {e}"))
}

#[cfg(test)]
#[path = "view_test.rs"]
mod tests;
