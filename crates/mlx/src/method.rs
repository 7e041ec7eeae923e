//! A layer's quantization: mlx's affine quantization at some width and group size, or one
//! of its floating-point block modes, with what the converter and the reader need of either
//! (sizes, the config's names, whether there are biases).

use crate::affine::Affine;
use crate::error::{MlxError, Result};
use crate::fp::FpMode;

/// How a layer is quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Affine(Affine),
    Fp(FpMode),
}

impl Method {
    /// The method `--q-mode`, `--q-bits` and `--q-group-size` ask for, with mlx_lm's
    /// defaults (affine: 4 bits, groups of 64; the block modes their only sizes).
    pub fn new(mode: &str, bits: Option<u32>, group_size: Option<usize>) -> Result<Method> {
        if mode == "affine" {
            return Ok(Method::Affine(Affine::new(bits.unwrap_or(4), group_size.unwrap_or(64))?));
        }
        let fp = FpMode::named(mode).ok_or_else(|| MlxError::Mode(mode.to_owned()))?;
        let sizes = (fp.bits(), fp.group_size());
        if bits.is_some_and(|b| b != sizes.0) || group_size.is_some_and(|g| g != sizes.1) {
            return Err(MlxError::FpSizes { mode: fp.name(), bits: sizes.0, group_size: sizes.1 });
        }
        Ok(Method::Fp(fp))
    }

    pub fn bits(&self) -> u32 {
        match self {
            Method::Affine(a) => a.bits(),
            Method::Fp(f) => f.bits(),
        }
    }

    pub fn group_size(&self) -> usize {
        match self {
            Method::Affine(a) => a.group_size(),
            Method::Fp(f) => f.group_size(),
        }
    }

    /// The `mode` configs record.
    pub fn mode(&self) -> &'static str {
        match self {
            Method::Affine(_) => "affine",
            Method::Fp(f) => f.name(),
        }
    }

    /// Whether rows of `cols` values split into whole groups.
    pub fn fits(&self, cols: usize) -> bool {
        cols > 0 && cols.is_multiple_of(self.group_size())
    }

    /// The u32 words of a packed row of `cols` values.
    pub fn words(&self, cols: usize) -> usize {
        cols * self.bits() as usize / 32
    }

    /// The groups of a row of `cols` values.
    pub fn groups(&self, cols: usize) -> usize {
        cols / self.group_size()
    }

    /// Whether the layer has biases beside its scales (affine only).
    pub fn biased(&self) -> bool {
        matches!(self, Method::Affine(_))
    }
}
