//! The IDX reader: header and length validation of image and label files, plain and gzipped,
//! through the same `decode_idx` that `arelax::data::load` uses.
#![no_main]

use std::path::Path;

use arelax::data::{decode_idx, idx};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let plain = Path::new("fuzz-idx3-ubyte");
    let gz = Path::new("fuzz-idx3-ubyte.gz");

    // The validators alone, on the raw bytes.
    if let Ok(n) = idx::validate_images(plain, data) {
        assert_eq!(
            data.len(),
            idx::IMAGE_HEADER_LEN + n * idx::ROWS * idx::COLS
        );
    }
    if let Ok(n) = idx::validate_labels(plain, data) {
        assert_eq!(data.len(), idx::LABEL_HEADER_LEN + n);
        assert!(
            data[idx::LABEL_HEADER_LEN..]
                .iter()
                .all(|&l| l < idx::CLASSES)
        );
    }

    // The loader's path: plain names are taken as they are, `.gz` names are decompressed first.
    for path in [plain, gz] {
        if let Ok((bytes, n)) = decode_idx(path, data.to_vec(), true) {
            assert_eq!(
                bytes.len(),
                idx::IMAGE_HEADER_LEN + n * idx::ROWS * idx::COLS
            );
        }
        if let Ok((bytes, n)) = decode_idx(path, data.to_vec(), false) {
            assert_eq!(bytes.len(), idx::LABEL_HEADER_LEN + n);
        }
    }
});
