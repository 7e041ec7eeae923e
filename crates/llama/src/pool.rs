//! The worker pool the kernels run on. A token is a few hundred products of tens of
//! microseconds each, so a dispatch must cost far less than waking a sleeping thread:
//! workers spin on a generation counter while work keeps coming and park on a condition
//! variable after a couple of milliseconds without any. Each dispatch runs one closure on
//! every thread (the caller's included) and returns when all have finished.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// A job as the workers see it: the caller's closure with its lifetime erased. `run`
/// does not return before every worker is done with it.
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    job: UnsafeCell<Option<Job>>,
    generation: AtomicUsize,
    remaining: AtomicUsize,
    sleepers: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the dispatching thread while no worker reads it
// (between a generation's completion and the next increment), and read by workers only
// after they observe the new generation (acquire), so accesses never overlap.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw job pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A fixed set of threads that run dispatched closures.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes dispatches from different threads.
    dispatch: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` threads in all (the caller counts as one).
    ///
    /// # Panics
    /// If the system cannot start a thread (as `std::thread::spawn` does).
    #[allow(clippy::panic, reason = "a process that cannot start threads cannot run the engine")]
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            generation: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|id| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("amalgam-worker-{id}"))
                    .spawn(move || work(&shared, id))
                    .unwrap_or_else(|e| panic!("cannot start a worker thread: {e}"))
            })
            .collect();
        Pool { shared, workers, dispatch: Mutex::new(()) }
    }

    /// Threads in the pool, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(thread)` on every thread, `thread` in `0..threads()`, and waits for all.
    ///
    /// # Panics
    /// If `f` panicked on any thread.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        let _one_at_a_time = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let s = &self.shared;
        // SAFETY: the job's lifetime is erased; `run` waits below until `remaining` is 0,
        // after which no worker touches it again until the next dispatch replaces it.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        // SAFETY: no worker reads `job` now: the previous generation has completed.
        unsafe { *s.job.get() = Some(job) };
        s.remaining.store(self.workers.len(), Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        while s.remaining.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        if mine.is_err() || s.panicked.swap(false, Ordering::SeqCst) {
            #[allow(clippy::panic, reason = "a kernel's panic (a bug) is passed on to the caller")]
            {
                panic!("a kernel panicked on a worker thread");
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A worker: wait for a new generation, run its job, count down.
fn work(s: &Shared, id: usize) {
    let mut seen = 0;
    loop {
        seen = wait(s, seen);
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the dispatcher wrote `job` before publishing this generation and keeps
        // the closure alive until `remaining` reaches 0.
        let job = unsafe { *s.job.get() };
        if let Some(job) = job {
            // SAFETY: see above: the closure outlives this call.
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(id))).is_err() {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.remaining.fetch_sub(1, Ordering::Release);
    }
}

/// Spins, then parks, until the generation differs from `seen`; returns it.
fn wait(s: &Shared, seen: usize) -> usize {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let g = s.generation.load(Ordering::Acquire);
        if g != seen {
            return g;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(1024) || start.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let mut guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
        s.sleepers.fetch_add(1, Ordering::SeqCst);
        while s.generation.load(Ordering::SeqCst) == seen {
            guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        s.sleepers.fetch_sub(1, Ordering::SeqCst);
        return s.generation.load(Ordering::Acquire);
    }
}

static GLOBAL: OnceLock<Arc<Pool>> = OnceLock::new();

/// Sets the global pool's size; only the first call (or first use) counts. Returns the
/// size in force.
pub fn init(threads: usize) -> usize {
    GLOBAL.get_or_init(|| Arc::new(Pool::new(threads.max(1)))).threads()
}

/// The global pool (one thread per physical core unless [`init`] said otherwise).
pub fn global() -> Arc<Pool> {
    Arc::clone(GLOBAL.get_or_init(|| Arc::new(Pool::new(crate::machine::physical_cores()))))
}

impl Pool {
    /// Calls `f(i, piece)` for every `chunk`-long piece of `out` (the last may be
    /// shorter), the pieces shared among the threads; a single piece is done on the
    /// calling thread, without a dispatch.
    pub fn for_each_chunk<T: Send>(
        &self,
        out: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let (len, chunk) = (out.len(), chunk.max(1));
        let pieces = len.div_ceil(chunk);
        if pieces <= 1 {
            return f(0, out);
        }
        let ptr = SharedOut::new(out);
        let counter = Counter::new();
        self.run(&|_| {
            while let Some(i) = counter.next(pieces) {
                let start = i * chunk;
                let n = chunk.min(len - start);
                // SAFETY: piece `i` is `out[start..start + n]`, inside `out`, handed to
                // one thread only; `run` returns when every thread is done.
                let piece = unsafe { std::slice::from_raw_parts_mut(ptr.at(start), n) };
                f(i, piece);
            }
        });
    }
}

/// A counter handing out work items to the threads of one dispatch.
pub struct Counter(AtomicUsize);

impl Counter {
    pub fn new() -> Counter {
        Counter(AtomicUsize::new(0))
    }

    /// The next item below `n`, if any.
    pub fn next(&self, n: usize) -> Option<usize> {
        let i = self.0.fetch_add(1, Ordering::Relaxed);
        (i < n).then_some(i)
    }
}

impl Default for Counter {
    fn default() -> Counter {
        Counter::new()
    }
}

/// An output buffer the threads of one dispatch write into, each its own elements.
pub struct SharedOut<T>(*mut T);

impl<T> Clone for SharedOut<T> {
    fn clone(&self) -> SharedOut<T> {
        *self
    }
}

impl<T> Copy for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub fn new(out: &mut [T]) -> SharedOut<T> {
        SharedOut(out.as_mut_ptr())
    }

    /// The pointer `i` elements on (a method, so closures capture the whole wrapper).
    pub fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

// SAFETY: a `SharedOut` is only written through `at` by work items that own disjoint
// elements, within one `Pool::run`, which returns before the buffer is used again.
unsafe impl<T: Send> Send for SharedOut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedOut<T> {}
