// Shared by gather.wgsl and accumulate.wgsl.

// One batch; bound with a dynamic offset, one entry per batch of the epoch.
struct BatchPass {
    start: u32,   // position of the batch's first sample in `order`
    count: u32,   // valid rows (the last batch of an evaluation may be partial)
    batch: u32,   // B, rows of the engine's buffers
    pixels: u32,  // n_0
    classes: u32, // n_L
    index: u32,   // batch number within the epoch (reported on divergence)
    replicas: u32, // K engines' worth of batches, replica-major: [K, B] rows
    len: u32,     // samples in the split; replica k's order starts at k * len
}
