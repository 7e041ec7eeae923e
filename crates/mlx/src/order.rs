//! The order in which mlx writes a safetensors file's tensor data: the iteration order of
//! the libstdc++ `std::unordered_map<std::string, array>` its Python binding fills, one
//! `emplace` per tensor in the dict's order (`docs/mlx-format.md` §4). Emulated exactly:
//! libstdc++'s string hash (`_Hash_bytes`, a 64-bit MurmurHash2), its prime rehash policy
//! (load factor 1, doubling, the primes of `__prime_list`), and its singly linked node list
//! with per-bucket "before" links, new nodes going to the front of their bucket.

use crate::error::{MlxError, Result};

const MUL: u64 = 0xc6a4_a793_5bd1_e995;
const SEED: u64 = 0xc70f_6907;

/// `v ^ (v >> 47)`.
fn shift_mix(v: u64) -> u64 {
    v ^ (v >> 47)
}

/// libstdc++'s `std::hash<std::string>` of `bytes` on 64-bit targets.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = SEED ^ (bytes.len() as u64).wrapping_mul(MUL);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let d = shift_mix(u64::from_le_bytes(word).wrapping_mul(MUL)).wrapping_mul(MUL);
        h = (h ^ d).wrapping_mul(MUL);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(MUL);
    }
    shift_mix(shift_mix(h).wrapping_mul(MUL))
}

/// Bucket counts for small requests (`__fast_bkt`).
const FAST: [usize; 14] = [2, 2, 2, 3, 5, 5, 7, 7, 11, 11, 11, 11, 13, 13];

/// The start of libstdc++'s `__prime_list` (enough for a million tensors in a file).
const PRIMES: [usize; 150] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    103, 109, 113, 127, 137, 139, 149, 157, 167, 179, 193, 199, 211, 227, 241, 257, 277, 293, 313,
    337, 359, 383, 409, 439, 467, 503, 541, 577, 619, 661, 709, 761, 823, 887, 953, 1031, 1109,
    1193, 1289, 1381, 1493, 1613, 1741, 1879, 2029, 2179, 2357, 2549, 2753, 2971, 3209, 3469, 3739,
    4027, 4349, 4703, 5087, 5503, 5953, 6427, 6949, 7517, 8123, 8783, 9497, 10273, 11113, 12011,
    12983, 14033, 15173, 16411, 17749, 19183, 20753, 22447, 24281, 26267, 28411, 30727, 33223,
    35933, 38873, 42043, 45481, 49201, 53201, 57557, 62233, 67307, 72817, 78779, 85229, 92203,
    99733, 107897, 116731, 126271, 136607, 147793, 159871, 172933, 187091, 202409, 218971, 236897,
    256279, 277261, 299951, 324503, 351061, 379787, 410857, 444487, 480881, 520241, 562841, 608903,
    658753, 712697, 771049, 834181, 902483, 976369, 1056323,
];

/// A node's successor, or a bucket's "before" node: the list head or a node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    Head,
    Node(usize),
}

/// The hash table's shape and node list.
struct Table {
    hashes: Vec<u64>,
    next: Vec<Option<usize>>,
    head: Option<usize>,
    buckets: Vec<Option<Link>>,
    next_resize: usize,
}

impl Table {
    fn bucket(&self, node: usize) -> usize {
        (self.hashes[node] % self.buckets.len() as u64) as usize
    }

    /// `_M_next_bkt`: the bucket count for at least `n`, setting the next resize.
    fn next_bucket_count(&mut self, n: usize) -> Result<usize> {
        if let Some(&fast) = FAST.get(n) {
            if n == 0 {
                return Ok(1);
            }
            self.next_resize = fast;
            return Ok(fast);
        }
        let i = PRIMES[6..].partition_point(|&p| p < n) + 6;
        let prime = *PRIMES.get(i).ok_or(MlxError::TooManyTensors(n))?;
        self.next_resize = prime;
        Ok(prime)
    }

    /// `_M_need_rehash` before inserting one element into `count`: the new bucket count.
    fn grow(&mut self, count: usize) -> Result<Option<usize>> {
        if count < self.next_resize {
            return Ok(None);
        }
        let min = (count + 1).max(if self.next_resize == 0 { 11 } else { 0 });
        if min >= self.buckets.len() {
            let n = (min + 1).max(2 * self.buckets.len());
            return self.next_bucket_count(n).map(Some);
        }
        self.next_resize = self.buckets.len();
        Ok(None)
    }

    /// `_M_rehash_aux` for unique keys: the list rebuilt bucket by bucket.
    fn rehash(&mut self, n: usize) {
        self.buckets = vec![None; n];
        let mut p = self.head.take();
        let mut first_bucket = 0;
        while let Some(node) = p {
            p = self.next[node];
            let b = self.bucket(node);
            match self.buckets[b] {
                None => {
                    self.next[node] = self.head;
                    self.head = Some(node);
                    self.buckets[b] = Some(Link::Head);
                    if self.next[node].is_some() {
                        self.buckets[first_bucket] = Some(Link::Node(node));
                    }
                    first_bucket = b;
                }
                Some(before) => self.insert_after(before, node),
            }
        }
    }

    fn insert_after(&mut self, before: Link, node: usize) {
        match before {
            Link::Head => {
                self.next[node] = self.head;
                self.head = Some(node);
            }
            Link::Node(prev) => {
                self.next[node] = self.next[prev];
                self.next[prev] = Some(node);
            }
        }
    }

    /// `_M_insert_bucket_begin`.
    fn insert(&mut self, node: usize) {
        let b = self.bucket(node);
        if let Some(before) = self.buckets[b] {
            return self.insert_after(before, node);
        }
        self.next[node] = self.head;
        self.head = Some(node);
        if let Some(following) = self.next[node] {
            let fb = self.bucket(following);
            self.buckets[fb] = Some(Link::Node(node));
        }
        self.buckets[b] = Some(Link::Head);
    }
}

/// The indices of `names` (distinct, in insertion order) in the map's iteration order.
pub fn iteration_order(names: &[&str]) -> Result<Vec<usize>> {
    let mut t = Table {
        hashes: names.iter().map(|n| hash_bytes(n.as_bytes())).collect(),
        next: vec![None; names.len()],
        head: None,
        buckets: vec![None; 1],
        next_resize: 0,
    };
    for node in 0..names.len() {
        if let Some(n) = t.grow(node)? {
            t.rehash(n);
        }
        t.insert(node);
    }
    let mut order = Vec::with_capacity(names.len());
    let mut p = t.head;
    while let Some(node) = p {
        order.push(node);
        p = t.next[node];
    }
    Ok(order)
}
