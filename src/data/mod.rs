//! MNIST-format data sets (MNIST, Fashion-MNIST) read from the four standard IDX files,
//! each either plain or gzip-compressed.
//!
//! The bytes are parsed by the `mnist` crate, but only after [`idx`] has validated them: that
//! crate panics on a bad header, cannot read `.gz`, and silently accepts truncated or over-long
//! image files. So each file is decompressed and checked here, the checked bytes are written to a
//! private temporary directory, and the crate reads exactly those copies, with inputs it can no
//! longer reject.

pub mod idx;

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::read::MultiGzDecoder;
use mnist::MnistBuilder;

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Split sizes the `mnist` crate insists on: it asserts these exact counts in the file headers.
const TRAIN_LEN: u32 = 60_000;
const TEST_LEN: u32 = 10_000;

/// Which MNIST-format data set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
}

impl DatasetKind {
    /// Where the data set is looked for when no `--data DIR` is given.
    pub fn default_dir(self) -> PathBuf {
        match self {
            DatasetKind::Mnist => PathBuf::from("data/mnist"),
            // Where Debian's `dataset-fashion-mnist` package installs it.
            DatasetKind::FashionMnist => PathBuf::from("/usr/share/datasets/fashion-mnist"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
        }
    }

    /// What to tell the user when the data directory is missing.
    fn install_hint(self) -> &'static str {
        match self {
            DatasetKind::Mnist => {
                "pass --data DIR pointing to the four MNIST IDX files (plain or .gz)"
            }
            DatasetKind::FashionMnist => {
                "install it with `apt-get install dataset-fashion-mnist` or pass --data DIR"
            }
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mnist" => Ok(DatasetKind::Mnist),
            "fashion-mnist" => Ok(DatasetKind::FashionMnist),
            other => Err(format!(
                "unknown data set `{other}` (expected `mnist` or `fashion-mnist`)"
            )),
        }
    }
}

/// One split: `len` images of `rows * cols` raw pixels (0..=255), row-major, with their labels.
#[derive(Clone, PartialEq, Eq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub len: usize,
}

impl Split {
    /// Pixels of sample `i` scaled by 1/255 into 0.0..=1.0.
    ///
    /// # Panics
    /// If `i >= self.len`: that is a caller bug, not a data problem.
    pub fn pixels_f32(&self, i: usize) -> Vec<f32> {
        assert!(
            i < self.len,
            "sample {i} out of range for a split of {}",
            self.len
        );
        let size = self.images.len() / self.len;
        self.images[i * size..(i + 1) * size]
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect()
    }
}

/// Inputs [n, pixels] scaled to [0, 1] and one-hot targets [n, 10] for the samples `idx`.
pub fn one_hot_batch(split: &Split, idx: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let mut input = Vec::new();
    let mut target = vec![0.0; idx.len() * 10];
    for (row, &i) in idx.iter().enumerate() {
        input.extend(split.pixels_f32(i));
        target[row * 10 + split.labels[i] as usize] = 1.0;
    }
    (input, target)
}

/// Summarised, because printing tens of megabytes of pixels helps nobody.
impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Split")
            .field("len", &self.len)
            .field("image_bytes", &self.images.len())
            .field("labels", &self.labels.len())
            .finish()
    }
}

/// A loaded data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub kind: DatasetKind,
    pub train: Split,
    pub test: Split,
    pub rows: usize,
    pub cols: usize,
}

impl Dataset {
    /// Moves the last `n` training samples into a held-out validation split (returned), keeping
    /// the order of both parts. At least one training sample must remain.
    pub fn split_validation(&mut self, n: usize) -> Result<Split, DataError> {
        let available = self.train.len;
        if n >= available {
            return Err(DataError::ValidationTooLarge {
                kind: self.kind,
                requested: n,
                available,
            });
        }
        let keep = available - n;
        let images = self.train.images.split_off(keep * self.rows * self.cols);
        let labels = self.train.labels.split_off(keep);
        self.train.len = keep;
        Ok(Split {
            images,
            labels,
            len: n,
        })
    }
}

/// Everything that can go wrong while loading. Each message is one line, `<path>: <problem>`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {problem}; {hint}")]
    MissingDir {
        path: PathBuf,
        problem: &'static str,
        hint: &'static str,
    },
    #[error("{path}: not found (nor {gz})")]
    MissingFile { path: PathBuf, gz: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: gzip decompression failed: {source}")]
    Gzip { path: PathBuf, source: io::Error },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("{images}: holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        images: PathBuf,
        labels: PathBuf,
        image_count: usize,
        label_count: usize,
    },
    #[error("{path}: cannot prepare the private copy for the mnist crate: {source}")]
    Cache { path: PathBuf, source: io::Error },
    #[error("{path}: the mnist crate failed on the validated copy: {problem}")]
    Crate { path: PathBuf, problem: String },
    /// No file involved, so the "path" is the split itself.
    #[error(
        "{kind} training split: cannot hold out {requested} of its {available} samples for \
         validation; at least one must remain for training"
    )]
    ValidationTooLarge {
        kind: DatasetKind,
        requested: usize,
        available: usize,
    },
}

/// Loads the training and test splits of `kind` from `dir`.
pub fn load(dir: &Path, kind: DatasetKind) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        let problem = if dir.exists() {
            "not a directory"
        } else {
            "data directory not found"
        };
        return Err(DataError::MissingDir {
            path: dir.to_path_buf(),
            problem,
            hint: kind.install_hint(),
        });
    }
    // Per-file problems first (they are the most specific), then how the files fit together.
    let train_images = read_images(dir, TRAIN_IMAGES)?;
    let train_labels = read_labels(dir, TRAIN_LABELS)?;
    let test_images = read_images(dir, TEST_IMAGES)?;
    let test_labels = read_labels(dir, TEST_LABELS)?;
    let train = pair_up(train_images, train_labels)?;
    let test = pair_up(test_images, test_labels)?;
    check_standard_len(&train, TRAIN_LEN, "training")?;
    check_standard_len(&test, TEST_LEN, "test")?;
    let (train, test) = parse_with_mnist_crate(&train, &test)?;
    Ok(Dataset {
        kind,
        train,
        test,
        rows: idx::ROWS,
        cols: idx::COLS,
    })
}

/// A file's decompressed bytes, kept with the path it came from for error messages.
struct IdxFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// A validated image/label pair with the same number of samples.
struct CheckedSplit {
    images: IdxFile,
    labels: IdxFile,
    len: usize,
}

fn read_images(dir: &Path, name: &str) -> Result<(IdxFile, usize), DataError> {
    read_checked(dir, name, true)
}

fn read_labels(dir: &Path, name: &str) -> Result<(IdxFile, usize), DataError> {
    read_checked(dir, name, false)
}

fn read_checked(dir: &Path, name: &str, images: bool) -> Result<(IdxFile, usize), DataError> {
    let (path, raw) = read_file(dir, name)?;
    let (bytes, count) = decode_idx(&path, raw, images)?;
    Ok((IdxFile { path, bytes }, count))
}

/// Decodes one IDX file's bytes as read from `path`: decompressed (every gzip member) when the
/// name ends in `.gz`, then validated as an image file (`images`) or a label file. Returns the
/// decompressed bytes and the number of images or labels.
pub fn decode_idx(path: &Path, raw: Vec<u8>, images: bool) -> Result<(Vec<u8>, usize), DataError> {
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut bytes = Vec::new();
        // Multi-member aware, so a concatenated gzip is read whole rather than cut after member
        // one. Reading from memory, every failure is the stream's fault.
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut bytes)
            .map_err(|source| DataError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        bytes
    } else {
        raw
    };
    let count = if images {
        idx::validate_images(path, &bytes)?
    } else {
        idx::validate_labels(path, &bytes)?
    };
    Ok((bytes, count))
}

fn pair_up(
    (images, image_count): (IdxFile, usize),
    (labels, label_count): (IdxFile, usize),
) -> Result<CheckedSplit, DataError> {
    if image_count != label_count {
        return Err(DataError::CountMismatch {
            images: images.path,
            labels: labels.path,
            image_count,
            label_count,
        });
    }
    Ok(CheckedSplit {
        images,
        labels,
        len: image_count,
    })
}

fn check_standard_len(split: &CheckedSplit, required: u32, name: &str) -> Result<(), DataError> {
    if split.len == required as usize {
        return Ok(());
    }
    Err(DataError::Invalid {
        path: split.images.path.clone(),
        problem: format!(
            "holds {} samples, but the mnist crate reads only the standard {required}-sample \
             {name} split",
            split.len
        ),
    })
}

/// Reads `dir/name`, or else `dir/name.gz` (still compressed), with the path it came from.
fn read_file(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), DataError> {
    let plain = dir.join(name);
    let path = if plain.is_file() {
        plain
    } else {
        let gz = dir.join(format!("{name}.gz"));
        if !gz.is_file() {
            return Err(DataError::MissingFile { path: plain, gz });
        }
        gz
    };
    match fs::read(&path) {
        Ok(raw) => Ok((path, raw)),
        Err(source) => Err(DataError::Io { path, source }),
    }
}

/// Hands the validated bytes to the `mnist` crate and returns its parse as (train, test).
fn parse_with_mnist_crate(
    train: &CheckedSplit,
    test: &CheckedSplit,
) -> Result<(Split, Split), DataError> {
    // The crate only reads plain files from a base directory, under names we choose.
    let cache = CacheDir::create()?;
    for (name, file) in [
        (TRAIN_IMAGES, &train.images),
        (TRAIN_LABELS, &train.labels),
        (TEST_IMAGES, &test.images),
        (TEST_LABELS, &test.labels),
    ] {
        let path = cache.0.join(name);
        fs::write(&path, &file.bytes).map_err(|source| DataError::Cache { path, source })?;
    }
    let base = cache.0.to_str().ok_or_else(|| DataError::Cache {
        path: cache.0.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path is not valid UTF-8"),
    })?;

    // Validation makes a panic impossible short of a bug or someone deleting the copies midway;
    // should one happen anyway, report it as an error rather than abort the caller.
    let parsed = std::panic::catch_unwind(|| {
        MnistBuilder::new()
            .base_path(base)
            .training_images_filename(TRAIN_IMAGES)
            .training_labels_filename(TRAIN_LABELS)
            .test_images_filename(TEST_IMAGES)
            .test_labels_filename(TEST_LABELS)
            .label_format_digit()
            .training_set_length(TRAIN_LEN)
            .validation_set_length(0)
            .test_set_length(TEST_LEN)
            .finalize()
    })
    .map_err(|payload| DataError::Crate {
        path: cache.0.clone(),
        problem: panic_message(payload.as_ref()),
    })?;

    // Cheap cross-check of the crate against our own header parse: both must see the same payload.
    let pairs = [
        (&parsed.trn_img, &train.images, idx::IMAGE_HEADER_LEN),
        (&parsed.trn_lbl, &train.labels, idx::LABEL_HEADER_LEN),
        (&parsed.tst_img, &test.images, idx::IMAGE_HEADER_LEN),
        (&parsed.tst_lbl, &test.labels, idx::LABEL_HEADER_LEN),
    ];
    for (from_crate, file, header_len) in pairs {
        if from_crate[..] != file.bytes[header_len..] {
            return Err(DataError::Crate {
                path: file.path.clone(),
                problem: "its output differs from the validated file".to_string(),
            });
        }
    }

    let split = |images: Vec<u8>, labels: Vec<u8>| {
        let len = labels.len();
        Split {
            images,
            labels,
            len,
        }
    };
    Ok((
        split(parsed.trn_img, parsed.trn_lbl),
        split(parsed.tst_img, parsed.tst_lbl),
    ))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else {
        "panicked"
    };
    text.replace('\n', " ")
}

/// A fresh directory only this process uses, removed again on drop.
struct CacheDir(PathBuf);

impl CacheDir {
    fn create() -> Result<Self, DataError> {
        // pid + time + counter keeps concurrent loads (threads or processes) apart.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("arelax-idx-{}-{nanos}-{seq}", std::process::id()));
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        // `create`, not `create_all`: an existing directory is someone else's and is not reused.
        builder.create(&path).map_err(|source| DataError::Cache {
            path: path.clone(),
            source,
        })?;
        Ok(CacheDir(path))
    }
}

impl Drop for CacheDir {
    fn drop(&mut self) {
        // Best effort: a leftover temporary directory is not worth failing a load over.
        let _ = fs::remove_dir_all(&self.0);
    }
}
