//! The checkpoint reader: safetensors bytes into named f32 tensors, then the parameters of a
//! small model (plain and under the `feedback.` prefix), then a write/read round trip.
#![no_main]

use std::path::Path;

use arelax::checkpoint::TensorFile;
use arelax::model::{Activation, Loss, ModelSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    let Ok(file) = TensorFile::from_bytes(path, data) else {
        return;
    };
    let spec = ModelSpec::new(vec![4, 3, 2], Activation::Relu, Loss::Mse).expect("valid spec");
    for prefix in ["", "feedback."] {
        if let Ok(p) = file.params(path, prefix, &spec) {
            assert_eq!(p.weights.iter().map(Vec::len).collect::<Vec<_>>(), [12, 6]);
            assert_eq!(p.biases.iter().map(Vec::len).collect::<Vec<_>>(), [3, 2]);
        }
    }

    // Whatever was read must write back and read again unchanged (bit for bit, NaNs included).
    let bytes = file
        .to_bytes()
        .expect("a file that was read can be written");
    let again = TensorFile::from_bytes(path, &bytes).expect("a written file can be read");
    assert_eq!(again.metadata, file.metadata);
    assert_eq!(again.tensors.len(), file.tensors.len());
    for ((name_a, a), (name_b, b)) in file.tensors.iter().zip(&again.tensors) {
        assert_eq!(name_a, name_b);
        assert_eq!(a.shape, b.shape);
        let bits = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.data), bits(&b.data));
    }
});
