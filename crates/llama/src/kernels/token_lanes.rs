//! Q8_K activations with the tokens in lanes: per group of [`LANE_TOKENS`] tokens and
//! super-block, each 4-byte run of the 256 activations as one 64-byte vector of the
//! group's tokens, with the block scales and activation sums laid out the same way. A
//! kernel that broadcasts four bytes of a weight row multiplies them with sixteen tokens
//! at once (`vpdpbusd`), so weight rows need no rearranging.

use amalgam_gguf::blocks::{BlockQ8K, as_blocks};
use amalgam_gguf::ggml_type::QK_K;

/// Tokens per vector.
pub const LANE_TOKENS: usize = 16;

/// One super-block of [`LANE_TOKENS`] tokens (tokens past the batch repeat its last).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct LaneBlock {
    /// `qs[k][4t + j]`: token `t`'s activation `4k + j`.
    pub qs: [[i8; 4 * LANE_TOKENS]; QK_K / 4],
    /// The tokens' block scales.
    pub d: [f32; LANE_TOKENS],
    /// `neg_bsums[g][t]`: minus token `t`'s sum of activations `16g..16g + 16`.
    pub neg_bsums: [[i32; LANE_TOKENS]; QK_K / 16],
    /// `pairs16[p][t]`: token `t`'s sums of activations over groups `2p` and `2p + 1` of
    /// 16 elements, as the low and high i16 of one i32.
    pub pairs16: [[i32; LANE_TOKENS]; QK_K / 32],
    /// `pairs32[p][t]`: the same over groups `2p` and `2p + 1` of 32 elements.
    pub pairs32: [[i32; LANE_TOKENS]; QK_K / 64],
}

impl LaneBlock {
    const ZERO: LaneBlock = LaneBlock {
        qs: [[0; 4 * LANE_TOKENS]; QK_K / 4],
        d: [0.0; LANE_TOKENS],
        neg_bsums: [[0; LANE_TOKENS]; QK_K / 16],
        pairs16: [[0; LANE_TOKENS]; QK_K / 32],
        pairs32: [[0; LANE_TOKENS]; QK_K / 64],
    };

    /// Fills lane `t` from one token's block.
    fn set(&mut self, t: usize, y: &BlockQ8K) {
        for (k, run) in y.qs.chunks_exact(4).enumerate() {
            self.qs[k][4 * t..4 * t + 4].copy_from_slice(run);
        }
        self.d[t] = f32::from_le_bytes(y.d);
        let bsums: [i32; QK_K / 16] = y.bsums.map(|b| i32::from(i16::from_le_bytes(b)));
        for (g, &s) in bsums.iter().enumerate() {
            self.neg_bsums[g][t] = -s;
        }
        for p in 0..QK_K / 32 {
            self.pairs16[p][t] = pair(bsums[2 * p], bsums[2 * p + 1]);
        }
        for p in 0..QK_K / 64 {
            let (a, b) = (&bsums[4 * p..4 * p + 2], &bsums[4 * p + 2..4 * p + 4]);
            self.pairs32[p][t] = pair(a[0] + a[1], b[0] + b[1]);
        }
    }
}

/// `low` and `high` as the two i16 halves of an i32 (both fit: a sum of at most 32
/// activations of magnitude at most 128).
fn pair(low: i32, high: i32) -> i32 {
    (low & 0xFFFF) | (high << 16)
}

/// A batch's Q8_K activations, tokens in lanes: group `v` of [`LANE_TOKENS`] tokens,
/// super-block `i` at `blocks[v · per_row + i]`.
pub struct TokenLanes {
    blocks: Vec<LaneBlock>,
    per_row: usize,
}

impl TokenLanes {
    /// The layout of `tokens` rows of Q8_K blocks, each `row(t)`'s bytes.
    pub fn new<'a>(tokens: usize, row: impl Fn(usize) -> &'a [u8]) -> TokenLanes {
        let rows: Vec<&[BlockQ8K]> =
            (0..tokens).map(|t| as_blocks(row(t)).unwrap_or_default()).collect();
        let per_row = rows.first().map_or(0, |r| r.len());
        let groups = tokens.div_ceil(LANE_TOKENS);
        let mut blocks = vec![LaneBlock::ZERO; groups * per_row];
        for (v, group) in blocks.chunks_exact_mut(per_row.max(1)).enumerate() {
            for t in 0..LANE_TOKENS {
                let token = (v * LANE_TOKENS + t).min(tokens - 1);
                let Some(row) = rows.get(token) else { continue };
                for (block, y) in group.iter_mut().zip(row.iter()) {
                    block.set(t, y);
                }
            }
        }
        TokenLanes { blocks, per_row }
    }

    /// The number of [`LANE_TOKENS`]-token groups.
    pub fn groups(&self) -> usize {
        self.blocks.len().checked_div(self.per_row).unwrap_or(0)
    }

    /// Super-blocks per token.
    pub fn per_row(&self) -> usize {
        self.per_row
    }

    /// Group `v`'s super-blocks.
    pub fn group(&self, v: usize) -> &[LaneBlock] {
        self.blocks.get(v * self.per_row..(v + 1) * self.per_row).unwrap_or_default()
    }
}
