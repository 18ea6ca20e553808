//! Inputs the fuzzers under `fuzz/` found, each fed to the same API as its fuzz target. None of
//! these needs a GPU. To add one: copy the bytes from `fuzz/artifacts/<target>/`, fix the library,
//! and assert here the clean result the target now gets.

use std::path::Path;

use arelax::checkpoint::TensorFile;

/// `fuzz/artifacts/checkpoint/crash-354d8ed4ca849c8b7ee46ea470e44c7ec87ce447`: a valid file with
/// no tensors and an empty `__metadata__` map. It read fine, but writing it back produced
/// `{},"__metadata__":{}}`, a header safetensors itself rejects, so a file without tensors or
/// metadata could be saved but never loaded again.
#[test]
fn checkpoint_without_tensors_round_trips() {
    let mut bytes = 24u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"__metadata__\":{}}     ");
    let path = Path::new("crash-354d8ed4.safetensors");
    let file = TensorFile::from_bytes(path, &bytes).expect("a valid empty safetensors file");
    assert!(file.tensors.is_empty() && file.metadata.is_empty());
    let written = file.to_bytes().expect("writes");
    let again = TensorFile::from_bytes(path, &written)
        .unwrap_or_else(|e| panic!("the written file does not read back: {e}"));
    assert!(again.tensors.is_empty() && again.metadata.is_empty());

    // The same through `save`/`load`, from a file built in memory.
    let dir = std::env::temp_dir().join(format!("arelax-fuzz-regr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let saved = dir.join("empty.safetensors");
    TensorFile::default().save(&saved).expect("save");
    let loaded = TensorFile::load(&saved);
    let _ = std::fs::remove_dir_all(&dir);
    let loaded = loaded.unwrap_or_else(|e| panic!("an empty file does not load: {e}"));
    assert!(loaded.tensors.is_empty() && loaded.metadata.is_empty());
}
