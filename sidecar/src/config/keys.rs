//! The keys of the configuration, read off the serde structs of the sections.
//!
//! A key exists because its section's struct has the field, and the field's type says how an
//! environment variable writes its value: adding a field to a section adds the key, its
//! `POLICY_SIDECAR_<SECTION>_<KEY>` override and its place in the documentation check, with
//! nothing else to keep in step. The `[auth]` section is the library's `AuthConfig`, so its
//! keys are whatever the library declares.
//!
//! The keys are found by deserializing the struct from a [`Probe`], a deserializer that holds
//! no data: asked for a struct it notes the field names serde passes along; asked for a value
//! it notes which type was asked for (a string, an integer, a list of strings, ...). A section
//! that is a list of tables (`[[rate_limit]]`) has the keys of its tables, marked
//! [`Key::repeated`]: no environment variable can say which table it would set.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// How a key's value is written in an environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// As it is (strings, setting words, paths).
    Str,
    /// A decimal integer.
    Int,
    /// `true`/`false` (or `1`/`0`, `yes`/`no`).
    Bool,
    /// Comma-separated strings.
    List,
    /// JSON text (tables, arrays of tables).
    Json,
}

/// One key of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The `[section]`.
    pub section: &'static str,
    /// The key in it.
    pub name: &'static str,
    /// How its environment override is written.
    pub kind: Kind,
    /// Whether the section is a list of tables (`[[section]]`): set in the file only.
    pub repeated: bool,
}

/// Every key of `T`, a struct whose fields are the sections, each a struct of keys; in the
/// order the structs declare them.
#[must_use]
pub fn keys<T: DeserializeOwned>() -> Vec<Key> {
    fields::<T>(&[])
        .0
        .iter()
        .flat_map(|&section| {
            let (names, repeated) = fields::<T>(&[section]);
            names.iter().map(move |&name| Key {
                section,
                name,
                kind: kind::<T>(&[section, name]),
                repeated,
            })
        })
        .collect()
}

/// The field names of the struct at `path` in `T` (empty when it is not a struct), and
/// whether it is the element of a list.
fn fields<T: DeserializeOwned>(path: &[&'static str]) -> (&'static [&'static str], bool) {
    match probe::<T>(path) {
        Found::Fields(fields, repeated) => (fields, repeated),
        Found::Nothing | Found::Kind(_) => (&[], false),
    }
}

/// How the value at `path` in `T` is written.
fn kind<T: DeserializeOwned>(path: &[&'static str]) -> Kind {
    match probe::<T>(path) {
        Found::Kind(kind) => kind,
        Found::Nothing | Found::Fields(..) => Kind::Json,
    }
}

fn probe<T: DeserializeOwned>(path: &[&'static str]) -> Found {
    let found = Cell::new(Found::Nothing);
    // Always an error: the probe stops as soon as it has found what it looks for.
    let _ = T::deserialize(Probe {
        path,
        found: &found,
    });
    found.get()
}

/// What a probe found at the end of its path.
#[derive(Debug, Clone, Copy)]
enum Found {
    Nothing,
    /// A struct's fields; `true` when it is the element of a list.
    Fields(&'static [&'static str], bool),
    Kind(Kind),
}

/// Ends a probe; never shown to anyone.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe stopped")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Self
    }
}

/// Deserializer methods that end the walk with a value of one kind.
macro_rules! leaves {
    ($($method:ident => $kind:expr),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
                self.leaf($kind)
            }
        )*
    };
}

/// A deserializer that walks `path` through nested structs and notes what it finds there.
struct Probe<'p> {
    path: &'p [&'static str],
    found: &'p Cell<Found>,
}

impl Probe<'_> {
    fn leaf<T>(self, kind: Kind) -> Result<T, Stop> {
        if self.path.is_empty() {
            self.found.set(Found::Kind(kind));
        }
        Err(Stop)
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        match self.path.split_first() {
            None => {
                self.found.set(Found::Fields(fields, false));
                Err(Stop)
            }
            Some((&field, rest)) => visitor.visit_map(OneField {
                field: Some(field),
                value: Some(Probe {
                    path: rest,
                    found: self.found,
                }),
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    /// A list: its element is probed along the same path, so that the keys of a list of
    /// tables are those of its tables.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        let element = Cell::new(Found::Nothing);
        let _ = visitor.visit_seq(OneElement(Some(Probe {
            path: self.path,
            found: &element,
        })));
        match (self.path.is_empty(), element.get()) {
            (true, Found::Kind(Kind::Str)) => self.leaf(Kind::List),
            (true, Found::Fields(fields, _)) => {
                self.found.set(Found::Fields(fields, true));
                Err(Stop)
            }
            (true, _) => self.leaf(Kind::Json),
            (false, found) => {
                self.found.set(found);
                Err(Stop)
            }
        }
    }

    leaves! {
        deserialize_str => Kind::Str,
        deserialize_string => Kind::Str,
        deserialize_char => Kind::Str,
        deserialize_bool => Kind::Bool,
        deserialize_i8 => Kind::Int,
        deserialize_i16 => Kind::Int,
        deserialize_i32 => Kind::Int,
        deserialize_i64 => Kind::Int,
        deserialize_u8 => Kind::Int,
        deserialize_u16 => Kind::Int,
        deserialize_u32 => Kind::Int,
        deserialize_u64 => Kind::Int,
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        self.leaf(Kind::Str)
    }

    /// Anything else (maps, floats, tuples, ...) is written as JSON.
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        self.leaf(Kind::Json)
    }

    serde::forward_to_deserialize_any! {
        i128 u128 f32 f64 bytes byte_buf unit unit_struct tuple tuple_struct map identifier
        ignored_any
    }
}

/// A map of one entry, `field` = the probe: how a struct visitor is led one level down.
struct OneField<'p> {
    field: Option<&'static str>,
    value: Option<Probe<'p>>,
}

impl<'de> de::MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Stop> {
        self.field
            .take()
            .map(|field| seed.deserialize(field.into_deserializer()))
            .transpose()
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        seed.deserialize(self.value.take().ok_or(Stop)?)
    }
}

/// A sequence of one element, the probe: how a list's element type is found.
struct OneElement<'p>(Option<Probe<'p>>);

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Stop> {
        self.0
            .take()
            .map(|probe| seed.deserialize(probe))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)] // only probed
    struct Inner {
        name: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)] // only probed
    enum Word {
        One,
        Two,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only probed
    struct Section {
        text: Option<String>,
        path: Option<PathBuf>,
        count: Option<u64>,
        size: usize,
        on: Option<bool>,
        word: Word,
        names: Vec<String>,
        table: Option<BTreeMap<String, Vec<String>>>,
        entries: Vec<Inner>,
        #[serde(skip)]
        skipped: u8,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only probed
    struct Document {
        #[serde(default)]
        first: Option<Section>,
        second: Inner,
        #[serde(default)]
        third: Vec<Inner>,
    }

    #[test]
    fn every_field_of_every_section_with_the_kind_its_type_asks_for() {
        let keys: Vec<(&str, &str, Kind)> = keys::<Document>()
            .into_iter()
            .map(|k| (k.section, k.name, k.kind))
            .collect();
        assert_eq!(
            keys,
            [
                ("first", "text", Kind::Str),
                ("first", "path", Kind::Str),
                ("first", "count", Kind::Int),
                ("first", "size", Kind::Int),
                ("first", "on", Kind::Bool),
                ("first", "word", Kind::Str),
                ("first", "names", Kind::List),
                ("first", "table", Kind::Json),
                ("first", "entries", Kind::Json),
                ("second", "name", Kind::Str),
                ("third", "name", Kind::Str),
            ]
        );
        let repeated: Vec<&str> = super::keys::<Document>()
            .into_iter()
            .filter(|k| k.repeated)
            .map(|k| k.section)
            .collect();
        assert_eq!(repeated, ["third"], "a list of tables is repeated");
    }
}
