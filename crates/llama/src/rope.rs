//! Rotary position embeddings: the inverse frequencies (with linear or Llama 3 scaling, or
//! llama.cpp's stored divisors) and the rotation of each head, in either pairing layout.

use crate::config::{Config, RopeScaling};
use crate::error::{Error, Result};
use crate::source::RopeStyle;

/// The inverse frequency of each rotated pair.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

/// cos and sin of every pair's angle at one position.
pub struct Angles {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl Rope {
    /// Frequencies for `config`; `divisors` are llama.cpp's `rope_freqs.weight`.
    pub fn new(config: &Config, divisors: Option<&[f32]>) -> Result<Rope> {
        let dim = config.head_dim;
        let base = f64::from(config.rope_theta);
        let mut inv_freq: Vec<f32> =
            (0..dim / 2).map(|i| (1.0 / base.powf((2 * i) as f64 / dim as f64)) as f32).collect();
        match config.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                // A GGUF carries the same blend as stored divisors.
                if divisors.is_none() {
                    for f in &mut inv_freq {
                        *f =
                            llama3(*f, factor, low_freq_factor, high_freq_factor, original_context);
                    }
                }
            }
        }
        if let Some(d) = divisors {
            if d.len() != inv_freq.len() {
                return Err(Error::Tensor {
                    name: "rope_freqs.weight".into(),
                    reason: format!("has {} factors for {} rotated pairs", d.len(), inv_freq.len()),
                });
            }
            inv_freq.iter_mut().zip(d).for_each(|(f, d)| *f /= d);
        }
        Ok(Rope { inv_freq })
    }

    /// The angles at position `pos`.
    pub fn angles(&self, pos: usize) -> Angles {
        let p = pos as f32;
        let (cos, sin) = self
            .inv_freq
            .iter()
            .map(|f| {
                let a = p * f;
                (a.cos(), a.sin())
            })
            .unzip();
        Angles { cos, sin }
    }
}

/// Llama 3.1's scaling of one inverse frequency.
fn llama3(inv_freq: f32, factor: f32, low: f32, high: f32, original: f32) -> f32 {
    let low_wavelen = original / low;
    let high_wavelen = original / high;
    let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
    if wavelen < high_wavelen {
        inv_freq
    } else if wavelen > low_wavelen {
        inv_freq / factor
    } else {
        let smooth = (original / wavelen - low) / (high - low);
        (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
    }
}

/// Rotates one head (`head_dim` values) by `angles`.
pub fn rotate(head: &mut [f32], angles: &Angles, style: RopeStyle) {
    let half = head.len() / 2;
    for (i, (c, s)) in angles.cos.iter().zip(&angles.sin).enumerate().take(half) {
        let (a, b) = match style {
            RopeStyle::Halves => (i, i + half),
            RopeStyle::Pairs => (2 * i, 2 * i + 1),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * c - x1 * s;
        head[b] = x0 * s + x1 * c;
    }
}
