//! A self-merge layout as `amalgam search` explores it: the base model's layers in order,
//! with spans of them repeated, each repeat placed right after the span's last layer and
//! its o_proj and down_proj scaled. Seed-style starting points, random mutations, the
//! slices it makes, the engine's layer map and the mergekit YAML.

use std::fmt::Write as _;

use amalgam_llama::sampling::Rng;
use amalgam_llama::{LayerMap, LayerRef};

/// One repeat: layers `start..end` run a second time right after layer `end - 1`, their
/// o_proj and down_proj scaled by `scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct Repeat {
    pub start: usize,
    pub end: usize,
    pub scale: f32,
}

impl Repeat {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// One slice of the merge: layers `start..end` of the base, scaled by `scale`.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub start: usize,
    pub end: usize,
    pub scale: f32,
}

/// A layout of a `base`-layer model: its repeats, ordered by where they go (`end`, each
/// place used once).
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub base: usize,
    pub repeats: Vec<Repeat>,
}

impl Layout {
    /// Layers in all.
    pub fn layers(&self) -> usize {
        self.base + self.repeats.iter().map(Repeat::len).sum::<usize>()
    }

    /// Whether the layout keeps the rules and has `target` layers.
    pub fn is_valid(&self, target: usize) -> bool {
        let ordered = self.repeats.windows(2).all(|w| w[0].end < w[1].end);
        ordered
            && self.repeats.iter().all(|r| r.start < r.end && r.end <= self.base)
            && self.layers() == target
    }

    /// `k` slices as the seed recipe lays them out (lengths as equal as the target allows,
    /// starts spread evenly from 0), as repeats scaled by `scale`: slice `i + 1` repeats
    /// where it overlaps slice `i`.
    pub fn seed_style(base: usize, target: usize, k: usize, scale: f32) -> Option<Layout> {
        let k = k.max(2);
        let lengths: Vec<usize> =
            (0..k).map(|i| target / k + usize::from(i < target % k)).collect();
        let span = base.checked_sub(*lengths.last()?)?;
        let starts: Vec<usize> = (0..k).map(|i| (i * span + (k - 1) / 2) / (k - 1)).collect();
        let mut repeats = Vec::new();
        for i in 1..k {
            let end = starts[i - 1] + lengths[i - 1];
            if starts[i] > end {
                return None;
            }
            if starts[i] < end {
                repeats.push(Repeat { start: starts[i], end, scale });
            }
        }
        let layout = Layout { base, repeats };
        layout.is_valid(target).then_some(layout)
    }

    /// One repeat of `start..end`.
    pub fn single(base: usize, start: usize, end: usize, scale: f32) -> Layout {
        Layout { base, repeats: vec![Repeat { start, end, scale }] }
    }

    /// A random change that keeps the layer count: a repeat moved by 1–3 layers, 1–3
    /// layers handed from one repeat to another, a repeat split in two or two joined, or a
    /// scale stepped by 0.1 within `[min_scale, 1]`; `None` when the draw breaks a rule.
    pub fn mutate(&self, rng: &mut Rng, min_scale: f32) -> Option<Layout> {
        let target = self.layers();
        let mut next = self.clone();
        let n = next.repeats.len();
        if n == 0 {
            return None;
        }
        let pick = |rng: &mut Rng, n: usize| (rng.next_u64() % n as u64) as usize;
        let d = 1 + pick(rng, 3);
        let i = pick(rng, n);
        match rng.next_u64() % 5 {
            0 => {
                let step = if rng.next_u64().is_multiple_of(2) { 0.1 } else { -0.1 };
                let s = &mut next.repeats[i].scale;
                *s = ((*s + step) * 10.0).round().clamp((min_scale * 10.0).ceil(), 10.0) / 10.0;
            }
            1 => {
                let r = &mut next.repeats[i];
                if rng.next_u64().is_multiple_of(2) {
                    (r.start, r.end) = (r.start + d, r.end + d);
                } else {
                    (r.start, r.end) = (r.start.checked_sub(d)?, r.end.checked_sub(d)?);
                }
            }
            2 => {
                // Hand d layers from repeat i to repeat j, each at its start.
                let j = pick(rng, n);
                if i == j || next.repeats[i].len() <= d {
                    return None;
                }
                next.repeats[i].start += d;
                next.repeats[j].start = next.repeats[j].start.checked_sub(d)?;
            }
            3 => {
                // Split at a layer inside: the first part repeats after its own end.
                let r = next.repeats[i].clone();
                if r.len() < 2 {
                    return None;
                }
                let cut = r.start + 1 + pick(rng, r.len() - 1);
                next.repeats[i].start = cut;
                next.repeats.insert(i, Repeat { start: r.start, end: cut, scale: r.scale });
            }
            _ => {
                // Join repeat i with the next: one span of both lengths, at the later place.
                let later = next.repeats.get(i + 1)?.clone();
                let len = next.repeats[i].len() + later.len();
                let scale = next.repeats[i].scale.min(later.scale);
                let start = later.end.checked_sub(len)?;
                next.repeats.splice(i..i + 2, [Repeat { start, end: later.end, scale }]);
            }
        }
        (next != *self && next.is_valid(target)).then_some(next)
    }

    /// The merge's slices: the base in order, each repeat inserted after its span, touching
    /// slices of the same scale joined.
    pub fn slices(&self) -> Vec<Slice> {
        let mut slices: Vec<Slice> = Vec::new();
        let mut push = |start: usize, end: usize, scale: f32| match slices.last_mut() {
            Some(last) if last.end == start && last.scale == scale => last.end = end,
            _ if start < end => slices.push(Slice { start, end, scale }),
            _ => {}
        };
        let mut at = 0;
        for r in &self.repeats {
            push(at, r.end, 1.0);
            push(r.start, r.end, r.scale);
            at = r.end;
        }
        push(at, self.base, 1.0);
        slices
    }

    /// The engine's layer map over source 0, each slice's scale on o_proj and down_proj.
    pub fn layer_map(&self) -> LayerMap {
        let mut map = LayerMap::identity(0);
        for s in self.slices() {
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

    /// A short description, the slices in order: `[0,22] [2,22]×0.5 [22,30]`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .slices()
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
        for s in self.slices() {
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
    fn the_seed_style_layout_is_the_recipes_stack() {
        let l = Layout::seed_style(30, 50, 5, 0.5).unwrap();
        assert_eq!(
            l.summary(),
            "[0,10] [5,10]×0.5 [10,15] [10,15]×0.5 [15,20] [15,20]×0.5 [20,25] [20,25]×0.5 [25,30]"
        );
        let seed = Layout::seed_style(80, 140, 7, 1.0).unwrap();
        assert_eq!(seed.summary(), "[0,20] [10,30] [20,40] [30,50] [40,60] [50,70] [60,80]");
        assert_eq!(seed.layer_map().layers.len(), 140);
    }

    #[test]
    fn a_repeat_goes_right_after_its_span() {
        let l = Layout::single(30, 2, 22, 0.5);
        assert_eq!(l.summary(), "[0,22] [2,22]×0.5 [22,30]");
        let ends = Layout::single(30, 25, 30, 1.0);
        assert_eq!(ends.summary(), "[0,30] [25,30]");
        let map: Vec<usize> = l.layer_map().layers.iter().map(|r| r.layer).collect();
        assert_eq!(map[20..24], [20, 21, 2, 3]);
        assert_eq!(map.len(), 50);
    }

    #[test]
    fn mutations_keep_the_rules_and_reach_every_kind() {
        let mut rng = Rng::new(7);
        let mut l = Layout::seed_style(30, 50, 4, 0.8).unwrap();
        let (mut changed, mut counts) = (0, std::collections::BTreeSet::new());
        for _ in 0..4000 {
            if let Some(next) = l.mutate(&mut rng, 0.5) {
                assert!(next.is_valid(50), "{}", next.summary());
                assert!(next.repeats.iter().all(|r| (0.5..=1.0).contains(&r.scale)));
                counts.insert(next.repeats.len());
                l = next;
                changed += 1;
            }
        }
        assert!(changed > 1000, "{changed}");
        assert!(counts.len() >= 4, "splits and joins change the number of repeats: {counts:?}");
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
