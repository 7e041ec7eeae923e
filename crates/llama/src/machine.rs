//! What the engine reads of the machine: its physical cores (the default thread count),
//! the process's peak resident memory (for the figures commands print) and the memory
//! still available (before merging a config into memory).

/// Physical cores, from the kernel's topology (each core's sibling list counted once).
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, usize::from);
    let mut cores = std::collections::HashSet::new();
    for cpu in 0..logical {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list");
        match std::fs::read_to_string(&path) {
            Ok(list) => {
                cores.insert(list.trim().to_owned());
            }
            Err(_) => return logical,
        }
    }
    cores.len().max(1)
}

/// The process's peak resident memory in MiB (`VmHWM`, Linux), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Memory the kernel says can be given to a new process without swapping, in bytes
/// (`MemAvailable`, Linux), if known.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
