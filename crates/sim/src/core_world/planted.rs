//! The node-core bugs `ringkv-sim --node-core --plant-bug NAME` can plant (the switches of
//! [`PlantedNodeBugs`]), each with the checker that catches it; `tests/node_core.rs` proves
//! it and `docs/testing.md` lists how many seeds each needs.

use ringkv_node::core::planted::PlantedNodeBugs;

/// A planted node-core bug, by its command-line name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeBug {
    /// [`PlantedNodeBugs::answer_before_apply`].
    AnswerBeforeApply,
    /// [`PlantedNodeBugs::apply_before_durable`].
    ApplyBeforeDurable,
    /// [`PlantedNodeBugs::install_keeps_stale_data`].
    InstallKeepsStaleData,
    /// [`PlantedNodeBugs::expire_without_recheck`].
    ExpireWithoutRecheck,
    /// [`PlantedNodeBugs::split_forgets_sessions`].
    SplitForgetsSessions,
}

impl NodeBug {
    /// Every planted node-core bug.
    pub const ALL: [NodeBug; 5] = [
        NodeBug::AnswerBeforeApply,
        NodeBug::ApplyBeforeDurable,
        NodeBug::InstallKeepsStaleData,
        NodeBug::ExpireWithoutRecheck,
        NodeBug::SplitForgetsSessions,
    ];

    /// The name `ringkv-sim --node-core --plant-bug` takes.
    pub fn name(self) -> &'static str {
        match self {
            NodeBug::AnswerBeforeApply => "answer-before-apply",
            NodeBug::ApplyBeforeDurable => "apply-before-durable",
            NodeBug::InstallKeepsStaleData => "install-keeps-stale-data",
            NodeBug::ExpireWithoutRecheck => "expire-without-recheck",
            NodeBug::SplitForgetsSessions => "split-forgets-sessions",
        }
    }

    /// The bug called `name` (see [`NodeBug::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|bug| bug.name() == name)
    }

    /// The checker (`Violation::check`) that catches this bug.
    pub fn checker(self) -> &'static str {
        match self {
            NodeBug::AnswerBeforeApply => "linearizability",
            NodeBug::ApplyBeforeDurable => super::durable_apply::CHECK,
            NodeBug::InstallKeepsStaleData => super::replica_states::CHECK,
            NodeBug::ExpireWithoutRecheck => super::ttl::LOG_TIME_CHECK,
            NodeBug::SplitForgetsSessions => super::exactly_once::CHECK,
        }
    }

    /// The switches that plant this bug.
    pub fn switches(self) -> PlantedNodeBugs {
        let mut switches = PlantedNodeBugs::default();
        match self {
            NodeBug::AnswerBeforeApply => switches.answer_before_apply = true,
            NodeBug::ApplyBeforeDurable => switches.apply_before_durable = true,
            NodeBug::InstallKeepsStaleData => switches.install_keeps_stale_data = true,
            NodeBug::ExpireWithoutRecheck => switches.expire_without_recheck = true,
            NodeBug::SplitForgetsSessions => switches.split_forgets_sessions = true,
        }
        switches
    }
}
