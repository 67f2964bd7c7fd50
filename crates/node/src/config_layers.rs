//! The node's configuration from layers: flags > environment > TOML file > defaults.
//!
//! Every field of the TOML schema, in every table, has an environment twin and a flag:
//!
//! - environment: `RINGKV_` + the field's name in upper case; a field of a table is
//!   `RINGKV_<TABLE>__<FIELD>` (two underscores), e.g. `RINGKV_NODE_ID`, `RINGKV_LISTEN_ADDR`,
//!   `RINGKV_TLS__CERT`, `RINGKV_RAFT__TICK_MS`;
//! - flags: `--set field=value` (dotted for tables: `--set raft.tick_ms=50`), plus named flags
//!   for the usual ones (`--node-id`, `--listen-addr`, ... in `ringkvd --help`).
//!
//! Values are written as in TOML without quotes: strings as they are, integers, `true` /
//! `false`; arrays as comma-separated items (`RINGKV_JOIN=ringkv-1:7100,ringkv-2:7100`) or a
//! TOML array (`[...]`). The field list and each field's type come from the schema itself
//! ([`crate::config_schema`]), so a field added to the config gets its twin with no more code.
//! Relative paths given in the environment or flags are relative to the working directory;
//! in the file, to the file's directory. A variable starting with `RINGKV_` that names no field
//! is an error (typo protection), except the non-config variables in [`NON_CONFIG_ENV`].
//! With the environment and flags giving the required fields, the file is optional.

use crate::config::NodeConfig;
use crate::config_schema::FieldKind;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// `RINGKV_*` variables that are not config fields: read elsewhere (`RINGKV_CONFIG` names the
/// file, `RINGKV_LOG` the log filter) or by tests and tools whose environment a node inherits.
pub const NON_CONFIG_ENV: &[&str] = &[
    "RINGKV_CONFIG",
    "RINGKV_LOG",
    "RINGKV_CHAOS_ROUNDS",
    "RINGKV_LONG_TESTS",
    "RINGKV_CRASH_CHILD",
    "RINGKV_CRASH_SEED",
    "RINGKV_SIM_SOAK_SEEDS",
    "RINGKV_SIM_TRACE",
    "RINGKV_IMAGE",
    "RINGKV_BASE_IMAGE",
    "RINGKV_SKIP_CARGO",
    "RINGKV_DOCKER_TESTS",
    crate::allocator::OPT_OUT_ENV,
    crate::allocator::MARK_ENV,
    "RINGKV_INSTALL_MEMORY_CHILD",
    "RINGKV_INSTALL_MEMORY_TUNABLES",
];

/// The environment prefix of config fields.
pub const ENV_PREFIX: &str = "RINGKV_";

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The field's default.
    Default,
    /// The TOML file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "environment {name}"),
            Self::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// What the configuration is made from.
#[derive(Clone, Debug, Default)]
pub struct ConfigInputs {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// `RINGKV_*` environment variables (others are ignored).
    pub env: Vec<(String, String)>,
    /// Flags in order: (dotted field, value, the flag as written for messages).
    pub flags: Vec<(String, String, String)>,
    /// The directory relative paths from the environment and flags are resolved against.
    pub working_dir: PathBuf,
}

impl ConfigInputs {
    /// Inputs from this process: its `RINGKV_*` variables and working directory.
    pub fn from_process(file: Option<PathBuf>, flags: Vec<(String, String, String)>) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                name.starts_with(ENV_PREFIX)
                    .then(|| (name, value.to_string_lossy().into_owned()))
            })
            .collect();
        Self {
            file,
            env,
            flags,
            working_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }
}

/// A validated configuration with the source of every value set explicitly.
#[derive(Clone, Debug)]
pub struct LayeredConfig {
    /// The validated configuration.
    pub config: NodeConfig,
    /// Source of each field that was set (dotted name); absent fields have their default.
    pub sources: BTreeMap<String, Source>,
    table: toml::Table,
    schema: BTreeMap<String, FieldKind>,
}

/// The environment variable of a dotted field: `raft.tick_ms` -> `RINGKV_RAFT__TICK_MS`.
pub fn env_name(field: &str) -> String {
    format!("{ENV_PREFIX}{}", field.replace('.', "__").to_uppercase())
}

/// Every config field (dotted) that takes a value, and its environment variable.
pub fn env_reference() -> Vec<(String, String)> {
    crate::config::schema()
        .into_iter()
        .filter(|(_, kind)| *kind != FieldKind::Table)
        .map(|(field, _)| {
            let env = env_name(&field);
            (field, env)
        })
        .collect()
}

/// Loads the configuration from `inputs`, in order of precedence flags > environment > file >
/// defaults, and validates it.
///
/// # Errors
/// [`Error::ConfigRead`] / [`Error::ConfigParse`] for the file; [`Error::ConfigLayer`] for a
/// variable or flag that names no field or whose value has the wrong type, and for a field that
/// fails validation (naming where its value came from).
pub fn load(inputs: &ConfigInputs) -> Result<LayeredConfig> {
    let schema = crate::config::schema();
    let mut sources = BTreeMap::new();
    let (mut table, base) = match &inputs.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
                path: path.clone(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|error: toml::de::Error| Error::ConfigParse {
                        path: path.clone(),
                        reason: error.to_string(),
                    })?;
            record_leaves(&table, "", &Source::File(path.clone()), &mut sources);
            let base = path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (table, base)
        }
        None => (toml::Table::new(), inputs.working_dir.clone()),
    };
    let mut env: Vec<&(String, String)> = inputs.env.iter().collect();
    env.sort();
    for (name, value) in env {
        if NON_CONFIG_ENV.contains(&name.as_str()) || !name.starts_with(ENV_PREFIX) {
            continue;
        }
        let source = Source::Env(name.clone());
        let field = field_of_env(name, &schema).ok_or_else(|| Error::ConfigLayer {
            origin: source.to_string(),
            reason: format!(
                "`{name}` names no config field (fields: {}; tables use two underscores, \
                 e.g. RINGKV_RAFT__TICK_MS)",
                near_names(name, &schema)
            ),
        })?;
        overlay(&mut table, &schema, &field, value, &source, inputs)?;
        sources.insert(field, source);
    }
    for (field, value, flag) in &inputs.flags {
        let source = Source::Flag(flag.clone());
        if kind_of(field, &schema).is_none() {
            return Err(Error::ConfigLayer {
                origin: source.to_string(),
                reason: format!("`{field}` is not a config field"),
            });
        }
        overlay(&mut table, &schema, field, value, &source, inputs)?;
        sources.insert(field.clone(), source);
    }
    let text = toml::to_string(&table).map_err(|error| Error::ConfigParse {
        path: origin_path(inputs),
        reason: error.to_string(),
    })?;
    let config = NodeConfig::parse(&text, &base).map_err(|error| match error {
        Error::ConfigParse { reason, .. } => Error::ConfigParse {
            path: origin_path(inputs),
            reason: if inputs.file.is_none() {
                format!(
                    "{reason} (no config file: set the required fields node_id, cluster, \
                     listen_addr, data_dir, initial_cluster or join, and tls.* through \
                     RINGKV_* variables or flags)"
                )
            } else {
                reason
            },
        },
        Error::ConfigInvalid { field, reason } => Error::ConfigLayer {
            origin: source_of(field, &sources).to_string(),
            reason: format!("invalid config field `{field}`: {reason}"),
        },
        other => other,
    })?;
    Ok(LayeredConfig {
        config,
        sources,
        table,
        schema,
    })
}

fn origin_path(inputs: &ConfigInputs) -> PathBuf {
    match &inputs.file {
        Some(path) => path.clone(),
        None => PathBuf::from("<environment and flags>"),
    }
}

/// The source of `field` or, for a table-level error (`raft`), of the first field set in it.
fn source_of(field: &str, sources: &BTreeMap<String, Source>) -> Source {
    if let Some(source) = sources.get(field) {
        return source.clone();
    }
    let prefix = format!("{field}.");
    sources
        .iter()
        .find(|(name, _)| name.starts_with(&prefix))
        .map(|(_, source)| source.clone())
        .unwrap_or(Source::Default)
}

fn record_leaves(
    table: &toml::Table,
    prefix: &str,
    source: &Source,
    out: &mut BTreeMap<String, Source>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => record_leaves(inner, &path, source, out),
            _ => {
                out.insert(path, source.clone());
            }
        }
    }
}

/// The kind of `field`: a schema field, or a key of a free map (`labels.zone`).
fn kind_of(field: &str, schema: &BTreeMap<String, FieldKind>) -> Option<FieldKind> {
    if let Some(kind) = schema.get(field) {
        return Some(*kind);
    }
    let (parent, _) = field.rsplit_once('.')?;
    (schema.get(parent) == Some(&FieldKind::Map)).then_some(FieldKind::Any)
}

fn field_of_env(name: &str, schema: &BTreeMap<String, FieldKind>) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    let field = rest
        .split("__")
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(".");
    kind_of(&field, schema).map(|_| field)
}

/// Up to five variables that share the first word of `name`, to help with a typo.
fn near_names(name: &str, schema: &BTreeMap<String, FieldKind>) -> String {
    let rest = name.strip_prefix(ENV_PREFIX).unwrap_or(name);
    let head = rest.split('_').next().unwrap_or(rest);
    let near: Vec<String> = schema
        .iter()
        .filter(|(_, kind)| **kind != FieldKind::Table)
        .map(|(field, _)| env_name(field))
        .filter(|env| {
            env.strip_prefix(ENV_PREFIX)
                .is_some_and(|e| e.starts_with(head))
        })
        .take(5)
        .collect();
    if near.is_empty() {
        "see docs/deploy.md".to_string()
    } else {
        format!("did you mean {}?", near.join(", "))
    }
}

fn is_path_field(field: &str) -> bool {
    let last = field.rsplit('.').next().unwrap_or(field);
    matches!(last, "ca_cert" | "cert" | "key")
        || last.ends_with("_dir")
        || last.ends_with("_file")
        || last.ends_with("_path")
}

fn overlay(
    table: &mut toml::Table,
    schema: &BTreeMap<String, FieldKind>,
    field: &str,
    raw: &str,
    source: &Source,
    inputs: &ConfigInputs,
) -> Result<()> {
    let kind = kind_of(field, schema).unwrap_or(FieldKind::Any);
    let bad = |what: &str| Error::ConfigLayer {
        origin: source.to_string(),
        reason: format!("field `{field}`: `{raw}` is not {what}"),
    };
    let value = match kind {
        FieldKind::String => {
            let mut text = raw.to_string();
            if is_path_field(field) && !text.is_empty() && Path::new(&text).is_relative() {
                text = inputs.working_dir.join(&text).display().to_string();
            }
            toml::Value::String(text)
        }
        FieldKind::Integer => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        FieldKind::Float => toml::Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?),
        FieldKind::Bool => match raw.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(bad("true or false")),
        },
        FieldKind::Array => {
            let trimmed = raw.trim();
            if trimmed.starts_with('[') {
                parse_literal(trimmed).ok_or_else(|| bad("a TOML array"))?
            } else {
                toml::Value::Array(
                    trimmed
                        .split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(|item| toml::Value::String(item.to_string()))
                        .collect(),
                )
            }
        }
        FieldKind::Table | FieldKind::Map => {
            parse_literal(raw.trim()).ok_or_else(|| bad("a TOML inline table {..}"))?
        }
        FieldKind::Any => {
            parse_literal(raw.trim()).unwrap_or_else(|| toml::Value::String(raw.to_string()))
        }
    };
    set_path(table, field, value).map_err(|reason| Error::ConfigLayer {
        origin: source.to_string(),
        reason,
    })
}

fn parse_literal(text: &str) -> Option<toml::Value> {
    let table: toml::Table = format!("v = {text}").parse().ok()?;
    table.get("v").cloned()
}

fn set_path(
    table: &mut toml::Table,
    field: &str,
    value: toml::Value,
) -> std::result::Result<(), String> {
    let mut current = table;
    let mut parts = field.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_string(), value);
            return Ok(());
        }
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{part}` in `{field}` is not a table")),
        };
    }
    Ok(())
}

/// Field names that hold secrets: shown as `<redacted>` by [`LayeredConfig::render`].
fn is_secret(field: &str) -> bool {
    let lower = field.to_lowercase();
    ["password", "secret", "token", "private"]
        .iter()
        .any(|word| lower.contains(word))
}

impl LayeredConfig {
    /// The effective configuration for `ringkvd --print-config`: one line per field, its value
    /// and where it came from; fields left at their default are listed as such, and the
    /// validated values (defaults filled in, paths resolved) follow.
    pub fn render(&self) -> String {
        let mut out = String::from("# ringkvd effective configuration: field = value  # source\n");
        for (field, kind) in &self.schema {
            if matches!(kind, FieldKind::Table) {
                continue;
            }
            match lookup(&self.table, field) {
                Some(value) => {
                    let shown = if is_secret(field) {
                        "\"<redacted>\"".to_string()
                    } else {
                        value.to_string()
                    };
                    let source = self.sources.get(field).cloned().unwrap_or(Source::Default);
                    out.push_str(&format!("{field} = {shown}  # {source}\n"));
                }
                None => out.push_str(&format!("# {field}: default  ({})\n", env_name(field))),
            }
        }
        // Keys of free maps set by a layer but not in the schema.
        for (field, source) in &self.sources {
            if !self.schema.contains_key(field)
                && let Some(value) = lookup(&self.table, field)
            {
                out.push_str(&format!("{field} = {value}  # {source}\n"));
            }
        }
        out.push_str("\n# validated (defaults filled in, paths resolved):\n");
        for line in format!("{:#?}", self.config).lines() {
            out.push_str("#   ");
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

fn lookup<'a>(table: &'a toml::Table, field: &str) -> Option<&'a toml::Value> {
    let mut parts = field.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

#[cfg(test)]
#[path = "config_layers_test.rs"]
mod tests;
