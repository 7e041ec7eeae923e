//! mlx_lm's mixed-precision recipes (`--quant-predicate mixed_L_H`): the value projection
//! and the MLP's down projection of the first and last eighth of the layers and of every
//! third layer between get `H` bits, as does `lm_head`; everything else `L`.

use crate::error::{MlxError, Result};

/// A mixed recipe: the low and high bit widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipe {
    pub low: u32,
    pub high: u32,
}

impl Recipe {
    /// The recipe mlx_lm names `name`.
    pub fn named(name: &str) -> Result<Recipe> {
        let (low, high) = match name {
            "mixed_2_6" => (2, 6),
            "mixed_3_4" => (3, 4),
            "mixed_3_6" => (3, 6),
            "mixed_4_6" => (4, 6),
            _ => return Err(MlxError::Recipe(name.to_owned())),
        };
        Ok(Recipe { low, high })
    }

    /// The bits of the module at `path` (e.g. `model.layers.3.mlp.down_proj`) in a model
    /// of `layers` layers. The layer index is the path's first all-digit part (0 for the
    /// modules outside the layers), as mlx_lm reads it at the position it has in the
    /// layers' paths.
    pub fn bits(&self, path: &str, layers: usize) -> u32 {
        let index = path.split('.').find_map(|p| p.parse::<usize>().ok()).unwrap_or(0);
        let eighth = layers / 8;
        let more = index < eighth || index >= 7 * layers / 8 || (index - eighth) % 3 == 2;
        let value = ["v_proj", "v_a_proj", "v_b_proj"].iter().any(|v| path.contains(v));
        if ((value || path.contains("down_proj")) && more) || path.contains("lm_head") {
            self.high
        } else {
            self.low
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_layers_give_layers_0_3_6_and_7_more_bits() {
        let r = Recipe::named("mixed_4_6").unwrap();
        let high: Vec<usize> =
            (0..8).filter(|i| r.bits(&format!("model.layers.{i}.mlp.down_proj"), 8) == 6).collect();
        assert_eq!(high, [0, 3, 6, 7]);
        assert_eq!(r.bits("model.layers.3.self_attn.v_proj", 8), 6);
        assert_eq!(r.bits("model.layers.3.self_attn.q_proj", 8), 4);
        assert_eq!(r.bits("lm_head", 8), 6);
        assert_eq!(r.bits("model.embed_tokens", 8), 4);
        assert!(matches!(Recipe::named("mixed_5_7"), Err(MlxError::Recipe(_))));
    }
}
