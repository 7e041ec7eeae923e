//! llama.cpp's quantization mixtures ("file types" such as Q4_K_M): the default block type
//! of each, and the per-tensor rules of `llama_tensor_get_type` for Llama models without
//! an importance matrix — output and tied embeddings, `attn_v` and `ffn_down` by layer,
//! the 70B-with-GQA bump, and fallbacks for rows that are not a whole number of blocks.

use std::fmt;

use crate::ggml_type::GgmlType;

/// A quantization mixture, by llama.cpp's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
}

impl FileType {
    /// Every mixture amalgam writes.
    pub const ALL: [FileType; 17] = [
        FileType::F32,
        FileType::F16,
        FileType::BF16,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q8_0,
        FileType::Q2K,
        FileType::Q3KS,
        FileType::Q3KM,
        FileType::Q3KL,
        FileType::Q4KS,
        FileType::Q4KM,
        FileType::Q5KS,
        FileType::Q5KM,
        FileType::Q6K,
    ];

    /// llama.cpp's name (`Q4_K_M`).
    pub const fn name(self) -> &'static str {
        match self {
            FileType::F32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q8_0 => "Q8_0",
            FileType::Q2K => "Q2_K",
            FileType::Q3KS => "Q3_K_S",
            FileType::Q3KM => "Q3_K_M",
            FileType::Q3KL => "Q3_K_L",
            FileType::Q4KS => "Q4_K_S",
            FileType::Q4KM => "Q4_K_M",
            FileType::Q5KS => "Q5_K_S",
            FileType::Q5KM => "Q5_K_M",
            FileType::Q6K => "Q6_K",
        }
    }

    /// The mixture of a name, case-insensitively (`q4_k_m`).
    pub fn from_name(name: &str) -> Option<FileType> {
        FileType::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The `general.file_type` value (`LLAMA_FTYPE_*`).
    pub const fn id(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2K => 10,
            FileType::Q3KS => 11,
            FileType::Q3KM => 12,
            FileType::Q3KL => 13,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
            FileType::Q5KS => 16,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
            FileType::BF16 => 32,
        }
    }

    /// The block type most tensors get.
    pub const fn default_type(self) -> GgmlType {
        match self {
            FileType::F32 => GgmlType::F32,
            FileType::F16 => GgmlType::F16,
            FileType::BF16 => GgmlType::BF16,
            FileType::Q4_0 => GgmlType::Q4_0,
            FileType::Q4_1 => GgmlType::Q4_1,
            FileType::Q5_0 => GgmlType::Q5_0,
            FileType::Q5_1 => GgmlType::Q5_1,
            FileType::Q8_0 => GgmlType::Q8_0,
            FileType::Q2K => GgmlType::Q2K,
            FileType::Q3KS | FileType::Q3KM | FileType::Q3KL => GgmlType::Q3K,
            FileType::Q4KS | FileType::Q4KM => GgmlType::Q4K,
            FileType::Q5KS | FileType::Q5KM => GgmlType::Q5K,
            FileType::Q6K => GgmlType::Q6K,
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the rules need to know about the model.
#[derive(Clone, Copy, Debug)]
pub struct ModelShape {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// The model has no `output.weight`, so `token_embd` doubles as the output.
    pub tied: bool,
}

impl ModelShape {
    fn gqa(&self) -> usize {
        self.n_head / self.n_head_kv.max(1)
    }

    /// llama.cpp's `LLM_TYPE_70B` for Llama: 80 layers with grouped-query attention.
    fn is_70b(&self) -> bool {
        self.n_layer == 80 && self.n_head != self.n_head_kv
    }
}

/// The broad role of a tensor, from its GGUF name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnV,
    AttnOutput,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_v.weight") {
        Category::AttnV
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// Whether llama.cpp quantizes a tensor at all: 2-D or more, named `*weight`, not a norm.
pub fn is_quantizable(name: &str, n_dims: usize) -> bool {
    n_dims >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// The layer index of a `blk.N.` name.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's `use_more_bits`: the first and last eighth of layers, and every third
/// layer between.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type a tensor gets in a mixture. `ne0` is its row length (GGUF `ne[0]`);
/// tensors that are not quantized (norms, 1-D) stay F32.
pub fn tensor_type(
    ftype: FileType,
    model: &ModelShape,
    name: &str,
    n_dims: usize,
    ne0: u64,
) -> GgmlType {
    if !is_quantizable(name, n_dims) {
        return GgmlType::F32;
    }
    let default = ftype.default_type();
    if !default.is_quantized() {
        return default;
    }
    let chosen = mixture_rule(ftype, model, name, default, ne0);
    fallback(chosen, ne0)
}

fn mixture_rule(
    ftype: FileType,
    model: &ModelShape,
    name: &str,
    default: GgmlType,
    ne0: u64,
) -> GgmlType {
    use FileType as F;
    use GgmlType as T;
    let layer = layer_of(name).unwrap_or(0);
    let n = model.n_layer;
    match category(name) {
        Category::Output => output_rule(default, ne0),
        Category::TokenEmbd if model.tied => output_rule(default, ne0),
        Category::AttnV => {
            let mut t = match ftype {
                F::Q2K => {
                    if model.gqa() >= 4 {
                        T::Q4K
                    } else {
                        T::Q3K
                    }
                }
                F::Q3KM if layer < 2 => T::Q5K,
                F::Q3KM => T::Q4K,
                F::Q3KL => T::Q5K,
                F::Q4KM | F::Q5KM if use_more_bits(layer, n) => T::Q6K,
                F::Q4KS if layer < 4 => T::Q5K,
                _ => default,
            };
            if model.is_70b() && matches!(t, T::Q3K | T::Q4K) {
                t = T::Q5K;
            }
            t
        }
        Category::FfnDown => match ftype {
            F::Q2K => T::Q3K,
            F::Q3KM if layer < n / 16 => T::Q5K,
            F::Q3KM => T::Q4K,
            F::Q3KL => T::Q5K,
            F::Q4KM | F::Q5KM if use_more_bits(layer, n) => T::Q6K,
            F::Q4KS if layer < n / 8 => T::Q5K,
            _ => default,
        },
        Category::AttnOutput => match ftype {
            F::Q2K => T::Q3K,
            F::Q3KM => T::Q4K,
            F::Q3KL => T::Q5K,
            _ => default,
        },
        Category::TokenEmbd | Category::Other => default,
    }
}

/// The output tensor (and a tied embedding): Q8_0 if its rows do not fit the default
/// type's blocks, else Q6_K unless the mixture is Q8_0.
fn output_rule(default: GgmlType, ne0: u64) -> GgmlType {
    if !ne0.is_multiple_of(default.block_size() as u64) {
        GgmlType::Q8_0
    } else if default != GgmlType::Q8_0 {
        GgmlType::Q6K
    } else {
        default
    }
}

/// A type whose blocks fit rows of `ne0` elements: llama.cpp's fallbacks, then F16.
fn fallback(t: GgmlType, ne0: u64) -> GgmlType {
    let fits = |t: GgmlType| ne0.is_multiple_of(t.block_size() as u64);
    if fits(t) {
        return t;
    }
    let next = match t {
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        _ => GgmlType::F16,
    };
    if fits(next) { next } else { GgmlType::F16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: ModelShape = ModelShape { n_layer: 30, n_head: 9, n_head_kv: 3, tied: true };
    const LLAMA70B: ModelShape = ModelShape { n_layer: 80, n_head: 64, n_head_kv: 8, tied: false };

    #[test]
    fn more_bits_layers_match_llama_cpp() {
        let layers: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(layers, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
        let layers: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
        assert_eq!(layers, vec![0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    }

    #[test]
    fn smollm2_q4_k_m_is_mostly_q5_0() {
        let t = |name: &str, ne0| tensor_type(FileType::Q4KM, &SMOLLM2, name, 2, ne0);
        assert_eq!(t("token_embd.weight", 576), GgmlType::Q8_0);
        assert_eq!(t("blk.3.attn_q.weight", 576), GgmlType::Q5_0);
        assert_eq!(t("blk.2.attn_v.weight", 576), GgmlType::Q8_0);
        assert_eq!(t("blk.3.attn_v.weight", 576), GgmlType::Q5_0);
        assert_eq!(t("blk.5.ffn_down.weight", 1536), GgmlType::Q6K);
        assert_eq!(t("blk.6.ffn_down.weight", 1536), GgmlType::Q4K);
        assert_eq!(
            tensor_type(FileType::Q4KM, &SMOLLM2, "blk.0.attn_norm.weight", 1, 576),
            GgmlType::F32
        );
    }

    #[test]
    fn llama_70b_bumps_attn_v() {
        let t = |f, name: &str| tensor_type(f, &LLAMA70B, name, 2, 8192);
        assert_eq!(t(FileType::Q4KM, "blk.10.attn_v.weight"), GgmlType::Q5K);
        assert_eq!(t(FileType::Q4KM, "blk.12.attn_v.weight"), GgmlType::Q6K);
        assert_eq!(t(FileType::Q4KM, "blk.10.ffn_down.weight"), GgmlType::Q4K);
        assert_eq!(t(FileType::Q4KM, "output.weight"), GgmlType::Q6K);
        assert_eq!(t(FileType::Q4KM, "token_embd.weight"), GgmlType::Q4K);
        assert_eq!(t(FileType::Q4_0, "output.weight"), GgmlType::Q6K);
        assert_eq!(t(FileType::Q8_0, "output.weight"), GgmlType::Q8_0);
    }

    #[test]
    fn names_parse_case_insensitively() {
        assert_eq!(FileType::from_name("q4_k_m"), Some(FileType::Q4KM));
        assert_eq!(FileType::from_name("Q9_K"), None);
        assert_eq!(FileType::Q4KM.id(), 15);
    }
}
