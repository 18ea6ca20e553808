//! Checks on raw (decompressed) IDX bytes.
//!
//! The `mnist` crate `assert!`s on a bad magic number or header count and, worse, silently
//! accepts a truncated or over-long image file. Every property it relies on is therefore checked
//! here first, so a damaged file becomes a one-line error naming the file instead of a panic or
//! a misaligned data set.

use std::path::Path;

use super::DataError;

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IMAGE_MAGIC: u32 = 0x0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const LABEL_MAGIC: u32 = 0x0801;
/// Magic, count, rows, cols.
pub const IMAGE_HEADER_LEN: usize = 16;
/// Magic, count.
pub const LABEL_HEADER_LEN: usize = 8;
/// The only image size the `mnist` crate reads.
pub const ROWS: usize = 28;
pub const COLS: usize = 28;
/// Labels are digits (or Fashion-MNIST classes) 0..=9.
pub const CLASSES: u8 = 10;

/// Validates an image file and returns its image count.
pub fn validate_images(path: &Path, bytes: &[u8]) -> Result<usize, DataError> {
    check_magic(path, bytes, IMAGE_MAGIC)?;
    check_header_len(path, bytes, IMAGE_HEADER_LEN, "image")?;
    let count = read_u32(bytes, 4);
    let rows = read_u32(bytes, 8);
    let cols = read_u32(bytes, 12);
    if (rows, cols) != (ROWS as u64, COLS as u64) {
        return Err(invalid(
            path,
            format!("images are {rows}x{cols} pixels, but only {ROWS}x{COLS} is supported"),
        ));
    }
    check_total_len(
        path,
        bytes.len(),
        IMAGE_HEADER_LEN,
        count,
        ROWS * COLS,
        "images",
    )?;
    // Lossless: the length check proved `count` items fit in a slice held in memory.
    Ok(count as usize)
}

/// Validates a label file and returns its label count.
pub fn validate_labels(path: &Path, bytes: &[u8]) -> Result<usize, DataError> {
    check_magic(path, bytes, LABEL_MAGIC)?;
    check_header_len(path, bytes, LABEL_HEADER_LEN, "label")?;
    let count = read_u32(bytes, 4);
    check_total_len(path, bytes.len(), LABEL_HEADER_LEN, count, 1, "labels")?;
    let labels = &bytes[LABEL_HEADER_LEN..];
    if let Some((index, label)) = labels.iter().enumerate().find(|(_, l)| **l >= CLASSES) {
        return Err(invalid(
            path,
            format!(
                "label {label} at index {index} is out of range 0..={}",
                CLASSES - 1
            ),
        ));
    }
    Ok(labels.len())
}

fn check_magic(path: &Path, bytes: &[u8], expected: u32) -> Result<(), DataError> {
    if bytes.len() < 4 {
        return Err(invalid(
            path,
            format!(
                "only {} bytes, too short for an IDX magic number",
                bytes.len()
            ),
        ));
    }
    let magic = read_u32(bytes, 0);
    if magic == u64::from(expected) {
        return Ok(());
    }
    // Name the two likely mix-ups: a compressed file without `.gz`, or images and labels swapped.
    let hint = if bytes.starts_with(&[0x1f, 0x8b]) {
        " (the file looks gzip-compressed: add a .gz suffix)"
    } else if magic == u64::from(IMAGE_MAGIC) {
        " (this is an IDX image file)"
    } else if magic == u64::from(LABEL_MAGIC) {
        " (this is an IDX label file)"
    } else {
        ""
    };
    Err(invalid(
        path,
        format!("bad magic number {magic} (0x{magic:08x}), expected {expected}{hint}"),
    ))
}

fn check_header_len(
    path: &Path,
    bytes: &[u8],
    header_len: usize,
    what: &str,
) -> Result<(), DataError> {
    if bytes.len() < header_len {
        return Err(invalid(
            path,
            format!(
                "truncated header: {} bytes, an IDX {what} header needs {header_len}",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

/// The payload must be exactly `count` items: short files and trailing bytes are both errors.
fn check_total_len(
    path: &Path,
    actual: usize,
    header_len: usize,
    count: u64,
    item_len: usize,
    unit: &str,
) -> Result<(), DataError> {
    // u64 cannot overflow here: count < 2^32 and item_len is at most 784.
    let expected = header_len as u64 + count * item_len as u64;
    let actual = actual as u64;
    if actual < expected {
        return Err(invalid(
            path,
            format!(
                "truncated: header promises {count} {unit} ({expected} bytes), found {actual} bytes"
            ),
        ));
    }
    if actual > expected {
        return Err(invalid(
            path,
            format!(
                "{} trailing bytes: header promises {count} {unit} ({expected} bytes), found {actual} bytes",
                actual - expected
            ),
        ));
    }
    Ok(())
}

/// Big-endian u32 at `offset`, widened so arithmetic on it cannot overflow.
/// Callers have already checked that the header is long enough.
fn read_u32(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u64::from(u32::from_be_bytes(word))
}

fn invalid(path: &Path, problem: String) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        problem,
    }
}
