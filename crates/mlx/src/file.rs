//! A safetensors file as mlx writes one (`docs/mlx-format.md` §4): the header compact JSON
//! with every object's keys sorted bytewise (so `__metadata__`, always `{"format":"mlx"}`,
//! comes first), no padding after it, and the tensors' data in the iteration order of
//! mlx's hash map ([`crate::order`]), not in the order they were given.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{MlxError, Result};
use crate::order::iteration_order;

/// One tensor of a file.
pub struct Entry<'a> {
    pub name: String,
    /// The safetensors dtype name (`U32`, `BF16`, `F16`, `F32`).
    pub dtype: &'static str,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// What the header says of one tensor: its data's length instead of the data.
pub struct Meta<'a> {
    pub name: &'a str,
    pub dtype: &'a str,
    pub shape: &'a [usize],
    pub len: usize,
}

/// The header and the order of the data of a file holding `tensors`, given in the order
/// mlx_lm hands them to mlx (its module tree's).
pub fn layout(tensors: &[Meta]) -> Result<(String, Vec<usize>)> {
    let names: Vec<&str> = tensors.iter().map(|t| t.name).collect();
    let order = iteration_order(&names)?;
    let mut offsets = vec![(0, 0); tensors.len()];
    let mut at = 0;
    for &i in &order {
        offsets[i] = (at, at + tensors[i].len);
        at += tensors[i].len;
    }
    let mut sorted: Vec<usize> = (0..tensors.len()).collect();
    sorted.sort_by(|&a, &b| tensors[a].name.as_bytes().cmp(tensors[b].name.as_bytes()));
    let mut header = String::from(r#"{"__metadata__":{"format":"mlx"}"#);
    for i in sorted {
        let t = &tensors[i];
        let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
        let (start, end) = offsets[i];
        header.push_str(&format!(
            r#",{}:{{"data_offsets":[{start},{end}],"dtype":"{}","shape":[{}]}}"#,
            crate::pyjson::quoted(t.name, false),
            t.dtype,
            shape.join(",")
        ));
    }
    header.push('}');
    Ok((header, order))
}

/// Writes the file: the header's length (u64, little-endian), the header, the data.
pub fn write(entries: &[Entry], out: &mut impl Write) -> Result<()> {
    let metas: Vec<Meta> = entries
        .iter()
        .map(|e| Meta { name: &e.name, dtype: e.dtype, shape: &e.shape, len: e.data.len() })
        .collect();
    let data = |i: usize| Ok(Cow::Borrowed(entries[i].data));
    write_to(out, &metas, data, &MlxError::Io, &|_| {})
}

/// Writes a file holding `tensors` to `out`: the header's length, the header, then each
/// tensor's bytes, made by `data(i)` (`i` indexes `tensors`) in mlx's data order;
/// `written(bytes)` after each. `io` names a failed write.
pub fn write_to<'d>(
    out: &mut impl Write,
    tensors: &[Meta],
    mut data: impl FnMut(usize) -> Result<Cow<'d, [u8]>>,
    io: &dyn Fn(std::io::Error) -> MlxError,
    written: &dyn Fn(usize),
) -> Result<()> {
    let (header, order) = layout(tensors)?;
    out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    out.write_all(header.as_bytes()).map_err(io)?;
    for i in order {
        let bytes = data(i)?;
        out.write_all(&bytes).map_err(io)?;
        written(bytes.len());
    }
    out.flush().map_err(io)
}

/// [`write_to`] a new file at `path`.
pub fn write_file<'d>(
    path: &Path,
    tensors: &[Meta],
    data: impl FnMut(usize) -> Result<Cow<'d, [u8]>>,
    written: &dyn Fn(usize),
) -> Result<()> {
    let io = |source| MlxError::Write { path: path.to_owned(), source };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    write_to(&mut out, tensors, data, &io, written)
}

/// `model.safetensors.index.json` (written even for one file): the data's total bytes,
/// the model's parameter count (a quantized layer counts its unpacked weights), and each
/// tensor's file, names sorted.
pub fn index(total_size: usize, total_parameters: usize, files: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = files.iter().collect();
    sorted.sort();
    let map: Map<String, Value> =
        sorted.into_iter().map(|(name, file)| (name.clone(), Value::from(file.as_str()))).collect();
    let index = json!({
        "metadata": {"total_size": total_size, "total_parameters": total_parameters},
        "weight_map": map,
    });
    crate::pyjson::dumps(&index)
}

/// mlx_lm's shard limit: bytes of tensor data per file.
pub const SHARD_BYTES: usize = 5 << 30;

/// Tensors of `sizes` bytes split into files as mlx_lm splits them: in order, a new file
/// when the next tensor would take this one past [`SHARD_BYTES`].
pub fn shard(sizes: &[usize]) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for (i, &bytes) in sizes.iter().enumerate() {
        match shards.last_mut() {
            Some(shard) if size + bytes <= SHARD_BYTES => shard.push(i),
            _ => {
                shards.push(vec![i]);
                size = 0;
            }
        }
        size += bytes;
    }
    shards
}

/// `model.safetensors`, or `model-0000i-of-0000n.safetensors` for several.
pub fn shard_names(n: usize) -> Vec<String> {
    if n == 1 {
        return vec!["model.safetensors".to_owned()];
    }
    (1..=n).map(|i| format!("model-{i:05}-of-{n:05}.safetensors")).collect()
}

/// Each tensor's file (`name(i)` for tensor `i`), for the index.
pub fn weight_map(shards: &[Vec<usize>], name: impl Fn(usize) -> String) -> Vec<(String, String)> {
    shards
        .iter()
        .zip(shard_names(shards.len()))
        .flat_map(|(shard, file)| {
            shard.iter().map(|&i| (name(i), file.clone())).collect::<Vec<_>>()
        })
        .collect()
}
