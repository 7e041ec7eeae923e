//! Reading a YAML tree with key paths: typed lookups whose errors name the key, and
//! unknown keys reported with the nearest known one.

use yaml_serde::{Mapping, Value as Yaml};

use super::Diagnostics;
use crate::error::{MergeError, Result};
use crate::suggest::nearest;

pub(super) fn mapping<'a>(value: &'a Yaml, location: &str) -> Result<&'a Mapping> {
    value.as_mapping().ok_or_else(|| {
        MergeError::config(location, format!("expected a mapping, found {}", kind(value)))
    })
}

pub(super) fn sequence<'a>(value: &'a Yaml, location: &str) -> Result<&'a Vec<Yaml>> {
    value.as_sequence().ok_or_else(|| {
        MergeError::config(location, format!("expected a list, found {}", kind(value)))
    })
}

pub(super) fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

/// Reports keys of `map` not in `known`, with the nearest known name.
pub(super) fn check_keys(
    map: &Mapping,
    known: &[&str],
    location: &str,
    d: &mut Diagnostics,
) -> Result<()> {
    for key in map.keys() {
        let Some(key) = key.as_str() else {
            return Err(MergeError::config(location, format!("key {key:?} is not a string")));
        };
        if !known.contains(&key) {
            let hint =
                nearest(key, known).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
            d.warn(location, format!("unknown key `{key}` is ignored{hint}"))?;
        }
    }
    Ok(())
}

pub(super) fn required_str<'a>(map: &'a Mapping, key: &str, location: &str) -> Result<&'a str> {
    match map.get(key) {
        Some(Yaml::String(s)) => Ok(s),
        Some(other) => {
            Err(MergeError::config(location, format!("expected a string, found {}", kind(other))))
        }
        None => Err(MergeError::config(location, format!("`{key}` is required"))),
    }
}
