//! Each worker's spent whole-tensor buffers, reused for the next tensor: a fresh
//! allocation of a tensor's size is a fresh mapping whose every page faults in zeroed,
//! which took a fifth of a 2.2 GB nuslerp merge.

use std::cell::RefCell;

thread_local! {
    static SPENT: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Spent buffers a worker keeps: a tensor's inputs (two to four, as a rule), its output
/// and a method's working vectors.
const KEPT: usize = 6;

/// A buffer of `len` values whose contents are left over from earlier use: the caller
/// writes every one. The largest spent buffer, if the worker has any.
pub fn take(len: usize) -> Vec<f32> {
    let spent = SPENT.with_borrow_mut(|kept| {
        let largest = (0..kept.len()).max_by_key(|&i| kept[i].capacity())?;
        Some(kept.swap_remove(largest))
    });
    let mut buffer = spent.unwrap_or_default();
    buffer.resize(len, 0.0);
    buffer
}

/// Keeps spent buffers for [`take`], up to [`KEPT`].
pub fn recycle(buffers: impl IntoIterator<Item = Vec<f32>>) {
    SPENT.with_borrow_mut(|kept| {
        for buffer in buffers {
            if kept.len() < KEPT {
                kept.push(buffer);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_buffer_is_reused_at_the_asked_length() {
        let mut first = take(1000);
        first.fill(1.0);
        let address = first.as_ptr();
        recycle([first, vec![2.0; 10]]);
        let again = take(500);
        assert_eq!(again.as_ptr(), address, "the largest spent buffer");
        assert_eq!(again.len(), 500);
        let small = take(20);
        assert_eq!(small.len(), 20);
        assert_eq!(&small[10..], &[0.0; 10], "grown with zeros");
    }
}
