//! A self-merge layout as `amalgam search` explores it: slices of the base model's layers
//! that start at layer 0, end at the last layer, overlap or touch (no layer is dropped),
//! move forward (starts and ends increase), and add up to the target layer count; every
//! slice after the first has a `scale` for its o_proj and down_proj. Seed-style starting
//! points, random mutations, the engine's layer map and the mergekit YAML.

use std::fmt::Write as _;

use amalgam_llama::sampling::Rng;
use amalgam_llama::{LayerMap, LayerRef};

/// One slice: layers `start..end`, its o_proj/down_proj scaled by `scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub start: usize,
    pub end: usize,
    pub scale: f32,
}

/// A layout of a `base`-layer model.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub slices: Vec<Slice>,
}

impl Layout {
    /// Layers in all.
    pub fn layers(&self) -> usize {
        self.slices.iter().map(|s| s.end - s.start).sum()
    }

    /// Whether the layout keeps the rules for a `base`-layer model taken to `target`.
    pub fn is_valid(&self, base: usize, target: usize) -> bool {
        let (Some(first), Some(last)) = (self.slices.first(), self.slices.last()) else {
            return false;
        };
        let ordered = self
            .slices
            .windows(2)
            .all(|w| w[1].start > w[0].start && w[1].end > w[0].end && w[1].start <= w[0].end);
        first.start == 0
            && last.end == base
            && ordered
            && self.slices.iter().all(|s| s.start < s.end)
            && self.layers() == target
    }

    /// `k` slices as the seed recipe lays them out: lengths as equal as the target
    /// allows, starts spread evenly from 0; slices after the first scaled by `scale`.
    pub fn seed_style(base: usize, target: usize, k: usize, scale: f32) -> Option<Layout> {
        let k = k.max(1);
        let lengths: Vec<usize> =
            (0..k).map(|i| target / k + usize::from(i < target % k)).collect();
        let last = *lengths.last()?;
        let span = base.checked_sub(last)?;
        let slices = lengths
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let start = if k == 1 { 0 } else { (i * span + (k - 1) / 2) / (k - 1) };
                Slice { start, end: start + len, scale: if i == 0 { 1.0 } else { scale } }
            })
            .collect();
        let layout = Layout { slices };
        layout.is_valid(base, target).then_some(layout)
    }

    /// A random change that keeps the rules: a slice boundary moved (another slice
    /// giving or taking the layer), or a scale stepped; `None` when the draw breaks a rule.
    pub fn mutate(
        &self,
        rng: &mut Rng,
        base: usize,
        target: usize,
        min_scale: f32,
    ) -> Option<Layout> {
        let mut next = self.clone();
        let n = next.slices.len();
        let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n as u64) as usize;
        match rng.next_u64() % 3 {
            0 if n > 1 => {
                let i = 1 + pick(rng, n - 1);
                let step = if rng.next_u64().is_multiple_of(2) { 0.1 } else { -0.1 };
                let s = &mut next.slices[i].scale;
                *s = ((*s + step) * 10.0).round().clamp(min_scale * 10.0, 10.0) / 10.0;
            }
            kind => {
                // Move one boundary by ±1..3; a boundary of another slice compensates.
                let d = 1 + pick(rng, 3);
                let grow = rng.next_u64().is_multiple_of(2);
                let (i, j) = (pick(rng, n), pick(rng, n));
                let edge = |s: &mut Slice, start: bool, grow: bool| {
                    match (start, grow) {
                        (true, true) => s.start = s.start.checked_sub(d)?,
                        (true, false) => s.start += d,
                        (false, true) => s.end += d,
                        (false, false) => s.end = s.end.checked_sub(d)?,
                    }
                    Some(())
                };
                edge(&mut next.slices[i], kind == 1, grow)?;
                edge(&mut next.slices[j], rng.next_u64().is_multiple_of(2), !grow)?;
            }
        }
        (next != *self && next.is_valid(base, target)).then_some(next)
    }

    /// The engine's layer map over source 0, with each slice's scale on o_proj and
    /// down_proj.
    pub fn layer_map(&self) -> LayerMap {
        let mut map = LayerMap::identity(0);
        for s in &self.slices {
            let scales = if s.scale == 1.0 {
                Vec::new()
            } else {
                vec![
                    ("self_attn.o_proj.weight".to_owned(), s.scale),
                    ("mlp.down_proj.weight".to_owned(), s.scale),
                ]
            };
            map.layers.extend((s.start..s.end).map(|layer| LayerRef {
                source: 0,
                layer,
                scales: scales.clone(),
            }));
        }
        map
    }

    /// A short description: `[0,10] [5,15]×0.5 …`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .slices
            .iter()
            .map(|s| {
                let scale = if s.scale == 1.0 { String::new() } else { format!("×{}", s.scale) };
                format!("[{},{}]{scale}", s.start, s.end)
            })
            .collect();
        parts.join(" ")
    }

    /// The layout as a mergekit passthrough config over `model`, after `comment` lines.
    pub fn yaml(&self, model: &str, comment: &str) -> String {
        let model = serde_json::to_string(model).unwrap_or_default();
        let mut out = String::new();
        for line in comment.lines() {
            let _ = writeln!(out, "# {line}");
        }
        out.push_str("slices:\n");
        for s in &self.slices {
            let _ = writeln!(
                out,
                "- sources: [{{model: {model}, layer_range: [{}, {}]}}]",
                s.start, s.end
            );
            if s.scale != 1.0 {
                let _ = writeln!(
                    out,
                    "  parameters:\n    scale:\n      - filter: o_proj\n        value: {}\n      - filter: down_proj\n        value: {}\n      - value: 1.0",
                    s.scale, s.scale
                );
            }
        }
        out.push_str("merge_method: passthrough\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_style_layout_is_the_recipes() {
        let l = Layout::seed_style(30, 50, 5, 0.5).unwrap();
        assert_eq!(l.summary(), "[0,10] [5,15]×0.5 [10,20]×0.5 [15,25]×0.5 [20,30]×0.5");
        let seed = Layout::seed_style(80, 140, 7, 1.0).unwrap();
        assert_eq!(seed.summary(), "[0,20] [10,30] [20,40] [30,50] [40,60] [50,70] [60,80]");
        assert_eq!(seed.layer_map().layers.len(), 140);
    }

    #[test]
    fn mutations_keep_the_rules() {
        let mut rng = Rng::new(7);
        let mut l = Layout::seed_style(30, 50, 4, 0.8).unwrap();
        let mut changed = 0;
        for _ in 0..2000 {
            if let Some(next) = l.mutate(&mut rng, 30, 50, 0.5) {
                assert!(next.is_valid(30, 50), "{}", next.summary());
                assert!(next.slices.iter().all(|s| (0.5..=1.0).contains(&s.scale)));
                l = next;
                changed += 1;
            }
        }
        assert!(changed > 200, "{changed}");
    }

    #[test]
    fn the_yaml_names_the_model_and_the_scales() {
        let l = Layout::seed_style(30, 50, 5, 0.5).unwrap();
        let yaml = l.yaml("base.gguf", "best of 3");
        assert!(yaml.starts_with(
            "# best of 3\nslices:\n- sources: [{model: \"base.gguf\", layer_range: [0, 10]}]\n"
        ));
        assert_eq!(yaml.matches("value: 0.5").count(), 8);
    }
}
