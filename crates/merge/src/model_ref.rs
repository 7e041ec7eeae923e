//! Model references as mergekit writes them: `path`, `path@revision`, and
//! `model+lora` (each side with its own optional `@revision`).

use std::fmt;

/// A model path with an optional revision (`org/name@main`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelPath {
    pub path: String,
    pub revision: Option<String>,
}

/// A reference to an input model, optionally with a LoRA adapter applied on top.
///
/// Two references are the same input only if they are written the same way: `x` and
/// `x@main` are distinct, as in mergekit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelRef {
    pub model: ModelPath,
    pub lora: Option<ModelPath>,
}

impl ModelPath {
    fn parse(text: &str) -> Result<ModelPath, String> {
        let mut parts = text.split('@');
        let path = parts.next().unwrap_or_default().to_owned();
        let revision = parts.next().map(str::to_owned);
        if parts.next().is_some() {
            return Err(format!("invalid model path {text:?}: more than one `@`"));
        }
        if path.is_empty() || revision.as_deref() == Some("") {
            return Err(format!("invalid model path {text:?}: empty path or revision"));
        }
        Ok(ModelPath { path, revision })
    }
}

impl ModelRef {
    /// Parses `path[@rev][+lora[@rev]]`.
    pub fn parse(text: &str) -> Result<ModelRef, String> {
        let mut parts = text.split('+');
        let model = ModelPath::parse(parts.next().unwrap_or_default())?;
        let lora = parts.next().map(ModelPath::parse).transpose()?;
        if parts.next().is_some() {
            return Err(format!("cannot parse model reference {text:?}: more than one `+`"));
        }
        Ok(ModelRef { model, lora })
    }
}

impl fmt::Display for ModelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.revision {
            Some(rev) => write!(f, "{}@{rev}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.lora {
            Some(lora) => write!(f, "{}+{lora}", self.model),
            None => write!(f, "{}", self.model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let r = ModelRef::parse("meta-llama/Meta-Llama-3-70B-Instruct").unwrap();
        assert_eq!(r.model.path, "meta-llama/Meta-Llama-3-70B-Instruct");
        assert_eq!(r.model.revision, None);
        let r = ModelRef::parse("org/m@dev+org/adapter@v2").unwrap();
        assert_eq!(r.model.revision.as_deref(), Some("dev"));
        assert_eq!(r.lora.as_ref().unwrap().path, "org/adapter");
        assert_eq!(r.to_string(), "org/m@dev+org/adapter@v2");
        assert_ne!(ModelRef::parse("x").unwrap(), ModelRef::parse("x@main").unwrap());
    }

    #[test]
    fn rejects_malformed() {
        assert!(ModelRef::parse("a@b@c").unwrap_err().contains("more than one `@`"));
        assert!(ModelRef::parse("a+b+c").unwrap_err().contains("more than one `+`"));
        let err = |text: &str| ModelRef::parse(text).err().unwrap_or_default();
        assert_eq!(err(""), "invalid model path \"\": empty path or revision");
        assert_eq!(err("a@"), "invalid model path \"a@\": empty path or revision");
        assert_eq!(err("a@b@c"), "invalid model path \"a@b@c\": more than one `@`");
        assert_eq!(err("a+b+c"), "cannot parse model reference \"a+b+c\": more than one `+`");
    }
}
