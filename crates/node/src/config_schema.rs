//! The configuration's field list, read off the serde schema itself.
//!
//! Environment variables and `--set` flags are strings; to overlay them on the TOML table they
//! need a field name and a type. Rather than a hand-kept list (which every new field would have
//! to join), [`fields`] runs the config type's derived `Deserialize` against a probe
//! deserializer that offers every field the derive asks for, records which primitive each one
//! requests (`deserialize_u64`, `deserialize_string`, `deserialize_seq`, a nested struct...) and
//! feeds it a placeholder. A field added to any config table therefore gets its environment
//! twin and its type with no more code.

use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use std::collections::BTreeMap;

/// What a field holds, as its `Deserialize` asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldKind {
    /// A string (also paths and addresses).
    String,
    /// An integer.
    Integer,
    /// A floating-point number.
    Float,
    /// `true` or `false`.
    Bool,
    /// An array (environment: comma-separated, or a TOML array `[..]`).
    Array,
    /// A table with known fields (listed separately, dotted).
    Table,
    /// A table with free keys (a map).
    Map,
    /// Unknown (the type deserializes itself): the value is read as a TOML literal if it is
    /// one, else as a string.
    Any,
}

/// Every field of `T` and its nested tables, dotted (`raft.tick_ms`), with its kind.
pub(crate) fn fields<T: DeserializeOwned>() -> BTreeMap<String, FieldKind> {
    let mut out = BTreeMap::new();
    // A field whose placeholder a custom type rejects ends the probe of its struct early; the
    // struct's field names were all recorded first, so they stay known (as `Any`).
    let _ = T::deserialize(Probe {
        path: String::new(),
        out: &mut out,
    });
    out.remove("");
    out
}

#[derive(Debug)]
struct ProbeError(String);

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<M: std::fmt::Display>(message: M) -> Self {
        Self(message.to_string())
    }
}

struct Probe<'a> {
    path: String,
    out: &'a mut BTreeMap<String, FieldKind>,
}

impl Probe<'_> {
    fn record(&mut self, kind: FieldKind) {
        // A struct's field names are recorded as `Any` before their values are probed.
        self.out.insert(self.path.clone(), kind);
    }
}

macro_rules! probe_as {
    ($($method:ident => $kind:ident, $visit:ident($($value:expr)?);)*) => {
        $(
            fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ProbeError> {
                self.record(FieldKind::$kind);
                visitor.$visit($($value)?)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = ProbeError;

    probe_as! {
        deserialize_bool => Bool, visit_bool(false);
        deserialize_i8 => Integer, visit_i64(0);
        deserialize_i16 => Integer, visit_i64(0);
        deserialize_i32 => Integer, visit_i64(0);
        deserialize_i64 => Integer, visit_i64(0);
        deserialize_u8 => Integer, visit_u64(0);
        deserialize_u16 => Integer, visit_u64(0);
        deserialize_u32 => Integer, visit_u64(0);
        deserialize_u64 => Integer, visit_u64(0);
        deserialize_f32 => Float, visit_f64(0.0);
        deserialize_f64 => Float, visit_f64(0.0);
        deserialize_char => String, visit_char('x');
        deserialize_str => String, visit_str("");
        deserialize_string => String, visit_str("");
        deserialize_bytes => String, visit_bytes(&[]);
        deserialize_byte_buf => String, visit_bytes(&[]);
        deserialize_identifier => String, visit_str("");
    }

    fn deserialize_unit<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ProbeError> {
        self.record(FieldKind::Any);
        visitor.visit_unit()
    }

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ProbeError> {
        self.record(FieldKind::Any);
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ProbeError> {
        self.record(FieldKind::Array);
        visitor.visit_seq(
            de::value::SeqDeserializer::<std::iter::Empty<()>, ProbeError>::new(std::iter::empty()),
        )
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, ProbeError> {
        self.record(FieldKind::Map);
        visitor.visit_map(de::value::MapDeserializer::<
            std::iter::Empty<((), ())>,
            ProbeError,
        >::new(std::iter::empty()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        self.record(FieldKind::Table);
        for field in fields {
            let path = join(&self.path, field);
            self.out.entry(path).or_insert(FieldKind::Any);
        }
        visitor.visit_map(ProbeFields {
            path: self.path,
            fields: fields.iter(),
            current: None,
            out: self.out,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        // Enums in a TOML config are unit variants written as strings.
        self.record(FieldKind::String);
        let first = variants.first().copied().unwrap_or("");
        visitor.visit_enum(first.into_deserializer())
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

struct ProbeFields<'a> {
    path: String,
    fields: std::slice::Iter<'static, &'static str>,
    current: Option<&'static str>,
    out: &'a mut BTreeMap<String, FieldKind>,
}

impl<'de> de::MapAccess<'de> for ProbeFields<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        match self.fields.next() {
            Some(field) => {
                self.current = Some(field);
                seed.deserialize(field.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        let field = self.current.take().unwrap_or("");
        seed.deserialize(Probe {
            path: join(&self.path, field),
            out: self.out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::path::PathBuf;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        tick_ms: u64,
        on: bool,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        dir: PathBuf,
        list: Vec<String>,
        maybe: Option<u32>,
        labels: BTreeMap<String, String>,
        ratio: f64,
        #[serde(default)]
        inner: Inner,
    }

    impl Default for Inner {
        fn default() -> Self {
            Self {
                tick_ms: 1,
                on: true,
            }
        }
    }

    #[test]
    fn every_field_is_found_with_its_kind() {
        let fields = fields::<Outer>();
        let expected = [
            ("dir", FieldKind::String),
            ("inner", FieldKind::Table),
            ("inner.on", FieldKind::Bool),
            ("inner.tick_ms", FieldKind::Integer),
            ("labels", FieldKind::Map),
            ("list", FieldKind::Array),
            ("maybe", FieldKind::Integer),
            ("name", FieldKind::String),
            ("ratio", FieldKind::Float),
        ];
        let got: Vec<(&str, FieldKind)> = fields.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(got, expected);
    }
}
