//! Fuzz target: `dicom_header` reader. Must never panic (a reachable panic on input is a bug).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    retort::ingest::dicom::fuzz_dicom(data);
});
