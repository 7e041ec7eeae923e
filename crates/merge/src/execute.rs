//! The streaming executor: binds each planned tensor to its input bytes, lays out the
//! output shards, and merges chunk by chunk across threads, writing every chunk straight
//! to its final offset. Memory stays at a few chunk buffers per thread whatever the
//! model's size, and input pages are released as soon as they are consumed.

use std::cell::RefCell;
use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::methods::whole::buffers;
use amalgam_tensors::dtype::{encode_f32, round_slice};
use amalgam_tensors::{DType, Parts, PositionedFile, TensorSpec, safetensors_layout};
use rayon::prelude::*;

use crate::error::{MergeError, Result};
use crate::methods::{Kernel, Stats};
use crate::plan::{Plan, TensorPlan};
use crate::source::{AlignedSet, Input, Model};
use crate::vocab::Vocabulary;

/// Elements merged per work item: small enough that a few buffers per thread stay in
/// cache, large enough that per-chunk overhead vanishes.
const CHUNK: usize = 1 << 18;

/// A planned tensor bound to its inputs: the output spec, dtypes and kernel.
pub struct Bound<'a> {
    pub plan: &'a TensorPlan,
    pub inputs: Vec<Input<'a>>,
    pub spec: TensorSpec,
    /// The dtype inputs are cast to before merging.
    pub working: DType,
    pub kernel: Kernel,
}

/// Receives progress as chunks are written.
pub trait Progress: Sync {
    /// `bytes` more of output were written.
    fn advance(&self, _bytes: u64) {}
    /// A whole tensor is done.
    fn tensor_done(&self) {}
}

/// What binding needs from the config and options.
#[derive(Clone, Copy, Debug)]
pub struct BindOptions<'v> {
    /// The config's `dtype` (inputs are cast to it) and `out_dtype`.
    pub dtype: Option<DType>,
    pub out_dtype: Option<DType>,
    /// `--random-seed`, for methods that draw random numbers.
    pub seed: u64,
    /// `--unsafe-truncate-embeddings`: cut vocabulary-indexed weights of differing
    /// vocabularies to the smallest one instead of failing.
    pub truncate_vocab: bool,
    /// The merged vocabulary that vocabulary-indexed weights are aligned to, when the
    /// config has a tokenizer section.
    pub vocab: Option<&'v Vocabulary>,
}

/// Binds every planned tensor, checking that its inputs agree in shape.
pub fn bind<'a>(
    plan: &'a Plan,
    models: &'a [Model],
    options: BindOptions<'a>,
) -> Result<Vec<Bound<'a>>> {
    plan.tensors.iter().map(|t| bind_one(plan, t, models, options)).collect()
}

fn bind_one<'a>(
    plan: &Plan,
    tensor: &'a TensorPlan,
    models: &'a [Model],
    options: BindOptions<'a>,
) -> Result<Bound<'a>> {
    let BindOptions { dtype, out_dtype, seed, truncate_vocab, vocab } = options;
    let mut inputs = Vec::with_capacity(tensor.inputs.len());
    for input in &tensor.inputs {
        let found = models[input.model].tensor(&input.tensor)?.ok_or_else(|| {
            MergeError::Tensor(format!(
                "Tensor {} required but not present in model {}",
                input.tensor, plan.models[input.model]
            ))
        })?;
        inputs.push(found);
    }
    if let (Some(vocab), Some(0)) = (vocab, tensor.vocab_axis) {
        let merge_index: Vec<usize> = tensor.inputs.iter().map(|i| i.model).collect();
        inputs = AlignedSet::align(&tensor.name, inputs, &merge_index, vocab)?;
    }
    let mut shape = inputs[0].shape().to_vec();
    if inputs.iter().any(|i| i.shape() != shape) {
        let rows = inputs.iter().map(|i| i.shape().first().copied().unwrap_or(0)).min();
        let same_rows = |i: &Input| i.shape().get(1..) == shape.get(1..);
        match rows {
            // Rows are the outermost axis, so the cut tensor is a prefix of every input.
            Some(rows)
                if truncate_vocab
                    && tensor.vocab_axis == Some(0)
                    && inputs.iter().all(same_rows) =>
            {
                shape[0] = rows;
            }
            _ => return Err(size_mismatch(plan, tensor, &inputs)),
        }
    }
    let working = dtype.unwrap_or_else(|| {
        inputs.iter().map(Input::dtype).reduce(DType::promote).unwrap_or(DType::F32)
    });
    let kernel = Kernel::for_tensor(plan.method.name, tensor, &shape, working, seed)?;
    let spec = TensorSpec { name: tensor.name.clone(), dtype: out_dtype.unwrap_or(working), shape };
    Ok(Bound { plan: tensor, inputs, spec, working, kernel })
}

fn size_mismatch(plan: &Plan, tensor: &TensorPlan, inputs: &[Input]) -> MergeError {
    let shapes: Vec<String> = tensor
        .inputs
        .iter()
        .zip(inputs)
        .map(|(i, r)| format!("{} {:?}", plan.models[i.model], r.shape()))
        .collect();
    let hint = if tensor.vocab_axis.is_some() {
        " The models have different vocabulary sizes. Either align them with a tokenizer \
         section (`tokenizer_source: union`, `base` or a model), or pass \
         --unsafe-truncate-embeddings to cut every vocabulary-indexed weight to the smallest \
         vocabulary (tokens past it lose their rows)."
    } else {
        " The models are not the same size; only models of one shape can be merged."
    };
    MergeError::Tensor(format!(
        "Tensor size mismatch for {}: {}.{hint}",
        tensor.name,
        shapes.join(", ")
    ))
}

/// Assigns tensors to shards in order, as mergekit does: a shard is closed before a
/// tensor that would take it over `max_bytes` (0 = no limit); a lone oversized tensor
/// gets a shard of its own.
pub fn assign_shards(sizes: &[u64], max_bytes: u64) -> Vec<usize> {
    let mut shard = 0;
    let mut current = 0u64;
    let mut out = Vec::with_capacity(sizes.len());
    for &size in sizes {
        if current > 0 && max_bytes > 0 && current + size > max_bytes {
            shard += 1;
            current = 0;
        }
        current += size;
        out.push(shard);
    }
    out
}

/// File names of `count` shards: `model.safetensors`, or `model-0000i-of-0000N.safetensors`.
pub fn shard_names(count: usize) -> Vec<String> {
    if count == 1 {
        return vec!["model.safetensors".to_owned()];
    }
    (1..=count).map(|i| format!("model-{i:05}-of-{count:05}.safetensors")).collect()
}

/// Writes every bound tensor into the shards named by `shard_of` under `dir`, recording
/// progress in `checkpoint`; tensors it says an earlier run wrote are kept where their
/// shard is intact.
fn write(
    dir: &Path,
    bound: &[Bound],
    shard_of: &[usize],
    names: &[String],
    progress: &dyn Progress,
    checkpoint: Option<&Checkpoint>,
) -> Result<()> {
    let mut slot = vec![0usize; bound.len()];
    let mut layouts = Vec::with_capacity(names.len());
    for (s, name) in names.iter().enumerate() {
        let members: Vec<usize> = (0..bound.len()).filter(|&i| shard_of[i] == s).collect();
        let specs: Vec<TensorSpec> = members.iter().map(|&i| bound[i].spec.clone()).collect();
        for (k, &i) in members.iter().enumerate() {
            slot[i] = k;
        }
        layouts.push((dir.join(name), safetensors_layout(&specs, &[("format", "pt")])));
    }
    let earlier = |i: usize| checkpoint.is_some_and(|c| c.earlier().contains(&i));
    let shards = Parts::open(layouts, shard_of, earlier)?;
    bound.par_iter().enumerate().try_for_each(|(i, tensor)| {
        if shards.kept(i) {
            progress.advance(tensor.spec.byte_len() as u64);
        } else {
            let file = shards
                .file_of(i)
                .ok_or_else(|| MergeError::Tensor(format!("tensor {i} has no shard")))?;
            merge_tensor(tensor, file, slot[i], progress)?;
            if let Some(checkpoint) = checkpoint {
                checkpoint.finished(i, |tensors| Ok(shards.sync(tensors)?))?;
            }
        }
        progress.tensor_done();
        Ok::<_, MergeError>(())
    })?;
    Ok(shards.finish()?)
}

/// Merges one tensor in chunks, in parallel, writing each chunk in place.
fn merge_tensor(
    tensor: &Bound,
    writer: &PositionedFile,
    slot: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let numel = tensor.spec.shape.iter().product::<usize>();
    let stats = stats(tensor)?;
    if let Stats::Output(values) = stats {
        write_values(tensor, &values, writer, slot, progress)?;
        buffers::recycle(std::sync::Arc::into_inner(values));
        return Ok(());
    }
    let chunks = numel.div_ceil(CHUNK);
    let out_size = tensor.spec.dtype.size();
    (0..chunks).into_par_iter().try_for_each(|c| {
        let start = c * CHUNK;
        let n = CHUNK.min(numel - start);
        if let Some(bytes) = direct_copy(tensor, start, n) {
            writer.write_at(slot, (start * out_size) as u64, bytes)?;
        } else {
            SCRATCH.with_borrow_mut(|buffers| -> Result<()> {
                buffers.fit(tensor.inputs.len(), n, out_size);
                merge_chunk(tensor, &stats, start, n, buffers)?;
                encode_f32(
                    tensor.spec.dtype,
                    &buffers.out[..n],
                    &mut buffers.bytes[..n * out_size],
                );
                Ok(writer.write_at(
                    slot,
                    (start * out_size) as u64,
                    &buffers.bytes[..n * out_size],
                )?)
            })?;
        }
        release(tensor, start, n);
        progress.advance((n * out_size) as u64);
        Ok::<_, MergeError>(())
    })
}

thread_local! {
    /// Each worker's scratch space, reused across chunks and tensors so that merging
    /// many small tensors does not allocate (and fault in) fresh buffers each time.
    static SCRATCH: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// Scratch space of one worker.
#[derive(Default)]
struct Buffers {
    inputs: Vec<Vec<f32>>,
    out: Vec<f32>,
    bytes: Vec<u8>,
}

impl Buffers {
    /// Grows the buffers to hold `n` elements of `inputs` inputs (never shrinks).
    fn fit(&mut self, inputs: usize, n: usize, out_size: usize) {
        if self.inputs.len() < inputs {
            self.inputs.resize_with(inputs, Vec::new);
        }
        for buffer in &mut self.inputs[..inputs] {
            if buffer.len() < n {
                buffer.resize(n, 0.0);
            }
        }
        if self.out.len() < n {
            self.out.resize(n, 0.0);
        }
        if self.bytes.len() < n * out_size {
            self.bytes.resize(n * out_size, 0);
        }
    }
}

/// The input bytes themselves, when the output is an unchanged copy of them.
fn direct_copy<'a>(tensor: &'a Bound, start: usize, n: usize) -> Option<&'a [u8]> {
    let input = &tensor.inputs[0];
    let unchanged = tensor.kernel == Kernel::Passthrough { scale: None }
        && input.dtype() == tensor.working
        && tensor.working == tensor.spec.dtype;
    if unchanged { input.raw(start, n) } else { None }
}

/// Merges elements `start..start + n` into `buffers.out`, rounded to the output dtype.
fn merge_chunk(
    tensor: &Bound,
    stats: &Stats,
    start: usize,
    n: usize,
    buffers: &mut Buffers,
) -> Result<()> {
    let inputs = &mut buffers.inputs[..tensor.inputs.len()];
    for (i, buffer) in inputs.iter_mut().enumerate() {
        load(tensor, i, start, &mut buffer[..n])?;
    }
    let views: Vec<&[f32]> = inputs.iter().map(|b| &b[..n]).collect();
    tensor.kernel.apply(tensor.working, stats, &views, &mut buffers.out[..n]);
    if tensor.spec.dtype != tensor.working {
        round_slice(tensor.spec.dtype, &mut buffers.out[..n]);
    }
    Ok(())
}

/// Whole-tensor statistics of a bound tensor (computed once, before its chunks); for
/// whole-tensor methods, the merged tensor itself.
pub fn stats(tensor: &Bound) -> Result<Stats> {
    let numel = tensor.spec.shape.iter().product::<usize>();
    if let Kernel::Whole(method) = &tensor.kernel {
        return whole_output(tensor, method).map(|v| Stats::Output(std::sync::Arc::new(v)));
    }
    if !tensor.kernel.needs_stats() {
        return Ok(Stats::None);
    }
    tensor
        .kernel
        .stats(tensor.working, numel, &mut |input, start, out| load(tensor, input, start, out))
}

/// Every input of a tensor, whole, cast to the working dtype.
pub fn whole_inputs(tensor: &Bound) -> Result<Vec<Vec<f32>>> {
    let numel: usize = tensor.spec.shape.iter().product();
    let mut inputs = Vec::with_capacity(tensor.inputs.len());
    for i in 0..tensor.inputs.len() {
        let mut values = buffers::take(numel);
        load(tensor, i, 0, &mut values)?;
        release(tensor, 0, numel);
        inputs.push(values);
    }
    Ok(inputs)
}

/// Loads every input whole and merges them; the result is rounded to the working dtype
/// and then to the output dtype.
fn whole_output(tensor: &Bound, method: &crate::methods::whole::Whole) -> Result<Vec<f32>> {
    let inputs = whole_inputs(tensor)?;
    let cols = tensor.spec.shape.last().copied().unwrap_or(1);
    let mut out = method.merge(&inputs, cols, tensor.working);
    buffers::recycle(inputs);
    if !method.rounds_output() {
        round_slice(tensor.working, &mut out);
    }
    if tensor.spec.dtype != tensor.working {
        round_slice(tensor.spec.dtype, &mut out);
    }
    Ok(out)
}

/// Writes an already merged tensor in chunks.
fn write_values(
    tensor: &Bound,
    values: &[f32],
    writer: &PositionedFile,
    slot: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let size = tensor.spec.dtype.size();
    let mut bytes = vec![0u8; CHUNK * size];
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        let n = chunk.len();
        encode_f32(tensor.spec.dtype, chunk, &mut bytes[..n * size]);
        writer.write_at(slot, (c * CHUNK * size) as u64, &bytes[..n * size])?;
        progress.advance((n * size) as u64);
    }
    Ok(())
}

/// The merged values of elements `start..start + out.len()` of a tensor, rounded to its
/// output dtype, for writers that take values rather than bytes (GGUF).
pub fn merged_values(tensor: &Bound, stats: &Stats, start: usize, out: &mut [f32]) -> Result<()> {
    if let Stats::Output(values) = stats {
        out.copy_from_slice(&values[start..start + out.len()]);
        return Ok(());
    }
    let n = out.len();
    SCRATCH.with_borrow_mut(|buffers| {
        buffers.fit(tensor.inputs.len(), n, 0);
        merge_chunk(tensor, stats, start, n, buffers)?;
        out.copy_from_slice(&buffers.out[..n]);
        release(tensor, start, n);
        Ok(())
    })
}

/// Fills `out` with elements `start..` of input `i`, cast to the working dtype.
fn load(tensor: &Bound, i: usize, start: usize, out: &mut [f32]) -> Result<()> {
    let input = &tensor.inputs[i];
    input.read(start, out)?;
    if input.dtype() != tensor.working {
        round_slice(tensor.working, out);
    }
    Ok(())
}

/// Drops the consumed input pages from the resident set.
fn release(tensor: &Bound, start: usize, n: usize) {
    for input in &tensor.inputs {
        input.release(start, n);
    }
}

/// Which shard each bound tensor goes to, and the shards' file names.
pub(crate) struct Shards {
    pub(crate) sizes: Vec<u64>,
    shard_of: Vec<usize>,
    names: Vec<String>,
}

impl Shards {
    pub(crate) fn assign(bound: &[Bound], max: u64) -> Shards {
        let sizes: Vec<u64> = bound.iter().map(|b| b.spec.byte_len() as u64).collect();
        let shard_of = assign_shards(&sizes, max);
        let names = shard_names(shard_of.last().map_or(1, |s| s + 1));
        Shards { sizes, shard_of, names }
    }

    /// (file name, bytes, tensor count) per shard.
    pub(crate) fn listing(&self) -> Vec<(String, u64, usize)> {
        let size = |i: usize| self.sizes.get(i).copied().unwrap_or(0);
        (0..self.names.len())
            .map(|s| {
                let members = self.shard_of.iter().enumerate().filter(|(_, x)| **x == s);
                let (bytes, count) = members.fold((0, 0), |(b, c), (i, _)| (b + size(i), c + 1));
                (self.names[s].clone(), bytes, count)
            })
            .collect()
    }

    /// Merges every tensor into its shard in `dir` (those `checkpoint` recorded as written
    /// by an earlier run are kept), and writes the index when there are several shards.
    pub(crate) fn write(
        &self,
        dir: &Path,
        bound: &[Bound],
        total: u64,
        reporter: &dyn Progress,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<()> {
        write(dir, bound, &self.shard_of, &self.names, reporter, checkpoint)?;
        if self.names.len() > 1 {
            let weight_map: Vec<(String, String)> = bound
                .iter()
                .zip(&self.shard_of)
                .map(|(b, s)| (b.spec.name.clone(), self.names[*s].clone()))
                .collect();
            crate::output::write_index(dir, &weight_map, total)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_like_mergekit() {
        assert_eq!(assign_shards(&[4, 4, 4], 8), vec![0, 0, 1]);
        assert_eq!(assign_shards(&[10, 1, 1], 8), vec![0, 1, 1]);
        assert_eq!(assign_shards(&[1, 10, 1], 8), vec![0, 1, 2]);
        assert_eq!(assign_shards(&[5, 5], 0), vec![0, 0]);
        assert_eq!(shard_names(1), vec!["model.safetensors"]);
        assert_eq!(shard_names(2)[1], "model-00002-of-00002.safetensors");
    }
}
