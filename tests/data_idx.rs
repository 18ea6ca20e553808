//! Loading of IDX data sets: the real MNIST and Fashion-MNIST files, and small damaged synthetic
//! files, each of which must give a one-line error naming the file and the problem (not a panic).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use arelax::data::{self, DataError, Dataset, DatasetKind};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

const MNIST_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");
const FASHION_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/fashion-mnist");

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// MNIST loaded once: several tests read it and none may change the shared copy.
fn mnist() -> &'static Dataset {
    static MNIST: OnceLock<Dataset> = OnceLock::new();
    MNIST.get_or_init(|| {
        data::load(Path::new(MNIST_DIR), DatasetKind::Mnist).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A fresh directory under the system temp dir, removed on drop (`tempfile` is no dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("arelax-test-{}-{seq}-{label}", std::process::id()));
        // A leftover from a crashed run with a recycled pid would otherwise leak stale files in.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn label_counts(labels: &[u8]) -> [usize; 10] {
    let mut counts = [0; 10];
    for &label in labels {
        counts[usize::from(label)] += 1;
    }
    counts
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

#[test]
fn mnist_has_the_published_sizes_and_labels() {
    let mnist = mnist();
    assert_eq!(mnist.kind, DatasetKind::Mnist);
    assert_eq!((mnist.rows, mnist.cols), (28, 28));
    assert_eq!(mnist.train.len, 60_000);
    assert_eq!(mnist.test.len, 10_000);
    assert_eq!(mnist.train.images.len(), 60_000 * 784);
    assert_eq!(mnist.test.images.len(), 10_000 * 784);
    assert_eq!(mnist.train.labels.len(), 60_000);
    assert_eq!(mnist.test.labels.len(), 10_000);
    assert_eq!(mnist.train.labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(mnist.test.labels[..5], [7, 2, 1, 0, 4]);
    assert_eq!(
        label_counts(&mnist.train.labels),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        label_counts(&mnist.test.labels),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

#[test]
fn plain_files_load_the_same_as_gzip() {
    let dir = TempDir::new("plain");
    for name in [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS] {
        let gz = fs::File::open(Path::new(MNIST_DIR).join(format!("{name}.gz"))).expect("open");
        let mut bytes = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut bytes).expect("gunzip");
        fs::write(dir.path().join(name), bytes).expect("write");
    }
    let plain = data::load(dir.path(), DatasetKind::Mnist).unwrap_or_else(|e| panic!("{e}"));
    assert!(plain.train.images == mnist().train.images);
    assert!(plain.train.labels == mnist().train.labels);
    assert!(plain.test.images == mnist().test.images);
    assert!(plain.test.labels == mnist().test.labels);
    assert_eq!(&plain, mnist());
}

#[test]
fn fashion_mnist_loads() {
    let fashion = data::load(Path::new(FASHION_DIR), DatasetKind::FashionMnist)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fashion.kind, DatasetKind::FashionMnist);
    assert_eq!((fashion.train.len, fashion.test.len), (60_000, 10_000));
    assert_eq!(fashion.train.images.len(), 60_000 * 784);
    // Fashion-MNIST is exactly balanced.
    assert_eq!(label_counts(&fashion.train.labels), [6000; 10]);
    assert_eq!(label_counts(&fashion.test.labels), [1000; 10]);
    assert!(fashion.train.images != mnist().train.images);
}

#[test]
fn split_validation_moves_the_last_samples_in_order() {
    let mut dataset = mnist().clone();
    let validation = dataset.split_validation(10_000).expect("split");
    let original = &mnist().train;
    assert_eq!((dataset.train.len, validation.len), (50_000, 10_000));
    assert!(dataset.train.images[..] == original.images[..50_000 * 784]);
    assert!(dataset.train.labels[..] == original.labels[..50_000]);
    assert!(validation.images[..] == original.images[50_000 * 784..]);
    assert!(validation.labels[..] == original.labels[50_000..]);
    assert_eq!(dataset.test, mnist().test);

    let err = dataset
        .split_validation(50_000)
        .expect_err("nothing would be left to train on");
    let message = err.to_string();
    assert!(
        matches!(err, DataError::ValidationTooLarge { .. }),
        "{message}"
    );
    assert!(
        message.contains("50000") && !message.contains('\n'),
        "{message}"
    );
    assert_eq!(
        dataset.train.len, 50_000,
        "a failed split must not change the data"
    );

    let empty = dataset.split_validation(0).expect("empty split");
    assert_eq!((empty.len, dataset.train.len), (0, 50_000));
}

#[test]
fn pixels_f32_scales_by_one_over_255() {
    let test = &mnist().test;
    // The first sample has a full-white pixel; the last checks the slice bounds.
    for i in [0, test.len - 1] {
        let pixels = test.pixels_f32(i);
        let raw = &test.images[i * 784..(i + 1) * 784];
        assert_eq!(pixels.len(), 784);
        for (&p, &r) in pixels.iter().zip(raw) {
            assert_eq!(p, f32::from(r) / 255.0);
        }
    }
    assert!(test.pixels_f32(0).contains(&1.0));
}

#[test]
fn dataset_kind_parses_and_displays() {
    for kind in [DatasetKind::Mnist, DatasetKind::FashionMnist] {
        assert_eq!(kind.to_string().parse::<DatasetKind>(), Ok(kind));
    }
    assert_eq!(DatasetKind::Mnist.to_string(), "mnist");
    assert_eq!(DatasetKind::FashionMnist.to_string(), "fashion-mnist");
    assert!("MNIST".parse::<DatasetKind>().is_err());
    assert_eq!(DatasetKind::Mnist.default_dir(), Path::new("data/mnist"));
    assert_eq!(
        DatasetKind::FashionMnist.default_dir(),
        Path::new("/usr/share/datasets/fashion-mnist")
    );
}

// ---- damaged inputs -------------------------------------------------------------------------

fn idx_images(count: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    for word in [2051, count, rows, cols] {
        bytes.extend_from_slice(&word.to_be_bytes());
    }
    let pixels = (count * rows * cols) as usize;
    bytes.extend((0..pixels).map(|i| (i % 256) as u8));
    bytes
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&2049u32.to_be_bytes());
    bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    bytes.extend_from_slice(labels);
    bytes
}

/// The four files of a well-formed 3-sample data set, by file name, for a test to damage.
fn small_set() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (TRAIN_IMAGES, idx_images(3, 28, 28)),
        (TRAIN_LABELS, idx_labels(&[5, 0, 4])),
        (TEST_IMAGES, idx_images(3, 28, 28)),
        (TEST_LABELS, idx_labels(&[7, 2, 1])),
    ]
}

fn replace(files: &mut [(&'static str, Vec<u8>)], name: &str, bytes: Vec<u8>) {
    let slot = files
        .iter_mut()
        .find(|(n, _)| *n == name)
        .expect("known file");
    slot.1 = bytes;
}

/// Writes the files gzip-compressed under `NAME.gz`, like the real data sets.
fn write_gz(dir: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, bytes) in files {
        fs::write(dir.join(format!("{name}.gz")), gzip(bytes)).expect("write");
    }
}

/// Loads `dir` and checks it fails with a one-line message naming `file` and every `needle`.
fn expect_error(dir: &Path, file: &str, needles: &[&str]) -> DataError {
    let err = data::load(dir, DatasetKind::Mnist).expect_err("damaged data must not load");
    let message = err.to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    let path = dir.join(file);
    assert!(
        message.starts_with(&format!("{}: ", path.display())),
        "should start with {}: {message}",
        path.display()
    );
    for needle in needles {
        assert!(message.contains(needle), "missing {needle:?}: {message}");
    }
    err
}

#[test]
fn missing_directory_says_how_to_get_the_data() {
    let dir = TempDir::new("nodir");
    let missing = dir.path().join("absent");
    let mnist = data::load(&missing, DatasetKind::Mnist).expect_err("no dir");
    let message = mnist.to_string();
    assert!(
        message.starts_with(&format!("{}: ", missing.display())),
        "{message}"
    );
    assert!(
        message.contains("not found") && message.contains("--data DIR"),
        "{message}"
    );

    let fashion = data::load(&missing, DatasetKind::FashionMnist).expect_err("no dir");
    let message = fashion.to_string();
    assert!(
        message.contains("apt-get install dataset-fashion-mnist") && message.contains("--data DIR"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn missing_file_names_both_candidates() {
    let dir = TempDir::new("nofile");
    let mut files = small_set();
    files.retain(|(name, _)| *name != TEST_LABELS);
    write_gz(dir.path(), &files);
    let err = expect_error(
        dir.path(),
        TEST_LABELS,
        &["not found", "t10k-labels-idx1-ubyte.gz"],
    );
    assert!(matches!(err, DataError::MissingFile { .. }), "{err:?}");
}

#[test]
fn wrong_magic_is_reported() {
    let dir = TempDir::new("magic");
    let mut files = small_set();
    // Labels where images belong: the magic number says so.
    replace(&mut files, TRAIN_IMAGES, idx_labels(&[1, 2, 3]));
    write_gz(dir.path(), &files);
    expect_error(
        dir.path(),
        &format!("{TRAIN_IMAGES}.gz"),
        &["bad magic number 2049", "expected 2051", "label file"],
    );
}

#[test]
fn uncompressed_gzip_lookalike_gets_a_hint() {
    let dir = TempDir::new("gzhint");
    let files = small_set();
    write_gz(dir.path(), &files);
    // A gzip stream saved without the .gz suffix is tried as a plain file first.
    fs::write(dir.path().join(TRAIN_LABELS), gzip(&idx_labels(&[1]))).expect("write");
    expect_error(
        dir.path(),
        TRAIN_LABELS,
        &["bad magic number", "gzip-compressed"],
    );
}

#[test]
fn plain_file_is_preferred_over_gz() {
    let dir = TempDir::new("prefer");
    let files = small_set();
    write_gz(dir.path(), &files);
    // The good .gz is ignored because a (bad) plain file of the same name exists.
    fs::write(dir.path().join(TEST_IMAGES), [0u8, 0, 8]).expect("write");
    expect_error(dir.path(), TEST_IMAGES, &["only 3 bytes"]);
}

#[test]
fn truncated_header_is_reported() {
    let dir = TempDir::new("header");
    let mut files = small_set();
    let short = idx_images(3, 28, 28)[..12].to_vec();
    replace(&mut files, TEST_IMAGES, short);
    write_gz(dir.path(), &files);
    expect_error(
        dir.path(),
        &format!("{TEST_IMAGES}.gz"),
        &["truncated header", "12 bytes"],
    );
}

#[test]
fn truncated_images_are_reported() {
    let dir = TempDir::new("truncated");
    let mut files = small_set();
    let mut images = idx_images(3, 28, 28);
    images.truncate(images.len() - 100);
    replace(&mut files, TRAIN_IMAGES, images);
    write_gz(dir.path(), &files);
    expect_error(
        dir.path(),
        &format!("{TRAIN_IMAGES}.gz"),
        &["truncated", "3 images", "2368 bytes", "found 2268 bytes"],
    );
}

#[test]
fn trailing_bytes_are_reported() {
    let dir = TempDir::new("trailing");
    let mut files = small_set();
    let mut labels = idx_labels(&[7, 2, 1]);
    labels.extend_from_slice(&[0, 0]);
    replace(&mut files, TEST_LABELS, labels);
    write_gz(dir.path(), &files);
    expect_error(
        dir.path(),
        &format!("{TEST_LABELS}.gz"),
        &["2 trailing bytes", "3 labels", "11 bytes", "found 13 bytes"],
    );
}

#[test]
fn wrong_image_size_is_reported() {
    let dir = TempDir::new("dims");
    let mut files = small_set();
    replace(&mut files, TRAIN_IMAGES, idx_images(3, 32, 32));
    write_gz(dir.path(), &files);
    expect_error(
        dir.path(),
        &format!("{TRAIN_IMAGES}.gz"),
        &["32x32", "28x28"],
    );
}

#[test]
fn label_out_of_range_is_reported() {
    let dir = TempDir::new("label");
    let mut files = small_set();
    replace(&mut files, TRAIN_LABELS, idx_labels(&[5, 10, 4]));
    write_gz(dir.path(), &files);
    expect_error(
        dir.path(),
        &format!("{TRAIN_LABELS}.gz"),
        &["label 10 at index 1", "0..=9"],
    );
}

#[test]
fn count_mismatch_names_both_files() {
    let dir = TempDir::new("count");
    let mut files = small_set();
    replace(&mut files, TEST_LABELS, idx_labels(&[7, 2, 1, 0]));
    write_gz(dir.path(), &files);
    let err = expect_error(
        dir.path(),
        &format!("{TEST_IMAGES}.gz"),
        &["3 images", "4 labels", "t10k-labels-idx1-ubyte.gz"],
    );
    assert!(matches!(err, DataError::CountMismatch { .. }), "{err:?}");
}

#[test]
fn non_standard_split_size_is_reported_not_panicked() {
    // Well-formed but small: the mnist crate would assert on it, so the loader must refuse first.
    let dir = TempDir::new("size");
    write_gz(dir.path(), &small_set());
    expect_error(
        dir.path(),
        &format!("{TRAIN_IMAGES}.gz"),
        &["holds 3 samples", "60000"],
    );
}

#[test]
fn corrupt_gzip_is_reported() {
    let dir = TempDir::new("gzip");
    let mut files = small_set();
    let name = format!("{TRAIN_LABELS}.gz");
    files.retain(|(n, _)| *n != TRAIN_LABELS);
    write_gz(dir.path(), &files);

    let good = gzip(&idx_labels(&[5, 0, 4]));
    let mut damaged = good.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    let cases = [
        ("flipped byte", damaged),
        ("cut short", good[..good.len() - 6].to_vec()),
        ("not gzip", b"\x1f\x8bthis is not a deflate stream".to_vec()),
    ];
    for (what, bytes) in cases {
        fs::write(dir.path().join(&name), bytes).expect("write");
        let err = expect_error(dir.path(), &name, &["gzip"]);
        assert!(matches!(err, DataError::Gzip { .. }), "{what}: {err:?}");
    }
}
