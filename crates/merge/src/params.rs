//! Parameter settings as mergekit defines them — scalars, gradients over depth and
//! `filter` conditionals — and their evaluation for one tensor at one depth `t`.

use std::fmt;

/// A scalar as written in YAML.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// One `{value, filter}` entry of a conditional setting.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditional {
    pub value: Setting,
    /// Matches when absent, `*`, or a plain substring of the tensor name.
    pub filter: Option<String>,
}

/// A parameter setting: `0.5`, `[0, 0.5, 1]`, or `[{filter: mlp, value: ...}, ...]`.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    Scalar(Scalar),
    /// A list of scalars, interpolated over depth.
    Gradient(Vec<Scalar>),
    /// Conditionals, checked in order; the first match wins.
    Conditionals(Vec<Conditional>),
}

/// The type a parameter's values are validated to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Float,
    Bool,
    Int,
}

/// A validated parameter value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Float(f64),
    Bool(bool),
    Int(i64),
}

impl Value {
    /// The value as a float (booleans and integers convert as Python would).
    pub fn as_f64(&self) -> f64 {
        match *self {
            Value::Float(v) => v,
            Value::Int(v) => v as f64,
            Value::Bool(v) => f64::from(u8::from(v)),
        }
    }

    /// The value as a boolean (non-zero numbers are true).
    pub fn as_bool(&self) -> bool {
        match *self {
            Value::Bool(v) => v,
            Value::Int(v) => v != 0,
            Value::Float(v) => v != 0.0,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(v) => write!(f, "{v}"),
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Float(v) => write!(f, "{v}"),
            Scalar::Str(v) => write!(f, "{v:?}"),
        }
    }
}

/// Validates a scalar to `kind` with pydantic's lax rules, which mergekit applies: numeric
/// strings such as `"1e-5"` become floats, `"yes"`/`"off"` become booleans.
pub fn validate(scalar: &Scalar, kind: Kind) -> Result<Value, String> {
    let bad = || format!("{scalar} is not a valid {}", kind_name(kind));
    match (kind, scalar) {
        (Kind::Float, Scalar::Float(v)) => Ok(Value::Float(*v)),
        (Kind::Float, Scalar::Int(v)) => Ok(Value::Float(*v as f64)),
        (Kind::Float, Scalar::Bool(v)) => Ok(Value::Float(f64::from(u8::from(*v)))),
        (Kind::Float, Scalar::Str(s)) => s.trim().parse().map(Value::Float).map_err(|_| bad()),
        (Kind::Int, Scalar::Int(v)) => Ok(Value::Int(*v)),
        (Kind::Int, Scalar::Float(v)) if v.fract() == 0.0 => Ok(Value::Int(*v as i64)),
        (Kind::Int, Scalar::Bool(v)) => Ok(Value::Int(i64::from(*v))),
        (Kind::Int, Scalar::Str(s)) => s.trim().parse().map(Value::Int).map_err(|_| bad()),
        (Kind::Bool, Scalar::Bool(v)) => Ok(Value::Bool(*v)),
        (Kind::Bool, Scalar::Int(0)) => Ok(Value::Bool(false)),
        (Kind::Bool, Scalar::Int(1)) => Ok(Value::Bool(true)),
        (Kind::Bool, Scalar::Float(v)) if *v == 0.0 || *v == 1.0 => Ok(Value::Bool(*v == 1.0)),
        (Kind::Bool, Scalar::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "on" | "t" | "true" | "y" | "yes" => Ok(Value::Bool(true)),
            "0" | "off" | "f" | "false" | "n" | "no" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "number",
        Kind::Bool => "boolean",
        Kind::Int => "integer",
    }
}

impl Setting {
    /// Evaluates the setting for the tensor `tensor_name` at depth `t` in `[0, 1]`.
    /// `Ok(None)` means no conditional matched (or an empty list): the lookup falls
    /// through to the next precedence level.
    pub fn evaluate(&self, tensor_name: &str, t: f64, kind: Kind) -> Result<Option<Value>, String> {
        match self {
            Setting::Scalar(s) => validate(s, kind).map(Some),
            Setting::Gradient(values) => gradient(values, t, kind),
            Setting::Conditionals(conditions) => {
                for c in conditions {
                    let matches = match c.filter.as_deref() {
                        None | Some("*") => true,
                        Some(f) => !tensor_name.is_empty() && tensor_name.contains(f),
                    };
                    if matches {
                        return c.value.evaluate(tensor_name, t, kind);
                    }
                }
                Ok(None)
            }
        }
    }
}

/// A gradient at depth `t`: numbers interpolate linearly between neighbouring entries;
/// booleans pick the entry at `floor(t * (n - 1))`.
fn gradient(values: &[Scalar], t: f64, kind: Kind) -> Result<Option<Value>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    let validated = values.iter().map(|v| validate(v, kind)).collect::<Result<Vec<_>, _>>()?;
    let n = validated.len();
    let numeric = validated.iter().all(|v| !matches!(v, Value::Bool(_)));
    if !numeric {
        return Ok(Some(validated[(t * (n - 1) as f64) as usize].clone()));
    }
    let scaled = t * (n - 1) as f64;
    let i0 = scaled as usize;
    let i1 = (i0 + 1).min(n - 1);
    let frac = scaled - i0 as f64;
    let value = (1.0 - frac) * validated[i0].as_f64() + frac * validated[i1].as_f64();
    validate(&Scalar::Float(value), kind).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[f64]) -> Setting {
        Setting::Gradient(v.iter().map(|x| Scalar::Float(*x)).collect())
    }

    fn eval(s: &Setting, name: &str, t: f64) -> Option<f64> {
        s.evaluate(name, t, Kind::Float).unwrap().map(|v| v.as_f64())
    }

    #[test]
    fn gradient_interpolates_like_mergekit() {
        let g = floats(&[0.0, 0.5, 0.3, 0.7, 1.0]);
        assert_eq!(eval(&g, "x", 0.0), Some(0.0));
        assert_eq!(eval(&g, "x", 1.0), Some(1.0));
        // t = 0.2: s = 0.8, between 0.0 and 0.5.
        assert!((eval(&g, "x", 0.2).unwrap() - 0.4).abs() < 1e-12);
        // t = 3/5 of a 6-layer slice: s = 2.4, between 0.3 and 0.7.
        assert!((eval(&g, "x", 0.6).unwrap() - 0.46).abs() < 1e-12);
    }

    #[test]
    fn conditionals_first_match_wins_and_fall_through() {
        let s = Setting::Conditionals(vec![
            Conditional {
                value: Setting::Scalar(Scalar::Float(0.5)),
                filter: Some("o_proj".into()),
            },
            Conditional { value: floats(&[1.0, 0.0]), filter: Some("mlp".into()) },
        ]);
        assert_eq!(eval(&s, "model.layers.3.self_attn.o_proj.weight", 0.3), Some(0.5));
        assert_eq!(eval(&s, "model.layers.3.mlp.up_proj.weight", 0.25), Some(0.75));
        assert_eq!(eval(&s, "model.norm.weight", 0.0), None);
    }

    #[test]
    fn lax_validation() {
        assert_eq!(validate(&Scalar::Str("1e-5".into()), Kind::Float), Ok(Value::Float(1e-5)));
        assert_eq!(validate(&Scalar::Str("yes".into()), Kind::Bool), Ok(Value::Bool(true)));
        assert_eq!(validate(&Scalar::Int(2), Kind::Float), Ok(Value::Float(2.0)));
        assert_eq!(
            validate(&Scalar::Str("lots".into()), Kind::Float),
            Err("\"lots\" is not a valid number".to_owned())
        );
        assert_eq!(
            validate(&Scalar::Int(2), Kind::Bool),
            Err("2 is not a valid boolean".to_owned())
        );
    }

    #[test]
    fn boolean_gradients_select_without_interpolating() {
        let g = Setting::Gradient(vec![Scalar::Bool(false), Scalar::Bool(true)]);
        assert_eq!(g.evaluate("x", 0.9, Kind::Bool).unwrap(), Some(Value::Bool(false)));
        assert_eq!(g.evaluate("x", 1.0, Kind::Bool).unwrap(), Some(Value::Bool(true)));
    }
}
