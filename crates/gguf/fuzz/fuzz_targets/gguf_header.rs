//! Fuzzes the GGUF header parser: any byte string must give a header or an error, never a
//! panic, and an accepted header's tensor ranges must lie inside the input.
//!
//! Run: `cd crates/gguf/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run gguf_header`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(header) = amalgam_gguf::read::parse(data) {
        for t in &header.tensors {
            assert!(header.data_start + t.offset + t.size <= data.len() as u64);
        }
    }
});
