//! Where a conversion's tensors come from: a Hugging Face folder read lazily, or anything
//! else that can name its tensors and hand over their values one at a time (a merge
//! computed on demand, a GGUF model dequantized).

use amalgam_tensors::ModelFolder;
use amalgam_tensors::dtype::{DType, decode_f32};

use crate::error::{MlxError, Result};

/// A model's tensors, by their Hugging Face names.
pub trait Source: Sync {
    /// Every tensor's name.
    fn names(&self) -> Vec<String>;
    /// A tensor's dtype and shape, `None` if there is no such tensor.
    fn info(&self, name: &str) -> Result<Option<(DType, Vec<usize>)>>;
    /// Fills `out` (the tensor's element count) with a tensor's values, exactly as its
    /// dtype holds them.
    fn read(&self, name: &str, out: &mut [f32]) -> Result<()>;
}

impl Source for ModelFolder {
    fn names(&self) -> Vec<String> {
        ModelFolder::names(self).into_iter().map(str::to_owned).collect()
    }

    fn info(&self, name: &str) -> Result<Option<(DType, Vec<usize>)>> {
        Ok(self.tensor(name)?.map(|t| (t.info.dtype, t.info.shape.clone())))
    }

    fn read(&self, name: &str, out: &mut [f32]) -> Result<()> {
        let t = self.tensor(name)?.ok_or_else(|| MlxError::Missing(name.to_owned()))?;
        if t.info.numel() != out.len() {
            return Err(MlxError::Source(format!(
                "tensor {name} has {} values, not {}",
                t.info.numel(),
                out.len()
            )));
        }
        decode_f32(t.info.dtype, t.bytes(), out);
        t.file.release(t.info.start, t.info.end);
        Ok(())
    }
}
