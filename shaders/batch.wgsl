// Shared by gather.wgsl and accumulate.wgsl.

// One batch; bound with a dynamic offset, one entry per batch of the epoch.
struct BatchPass {
    start: u32,   // position of the batch's first sample in `order`
    count: u32,   // valid rows (the last batch of an evaluation may be partial)
    batch: u32,   // B, rows of the engine's buffers
    pixels: u32,  // n_0
    classes: u32, // n_L
    index: u32,   // batch number within the epoch (reported on divergence)
    pad0: u32,
    pad1: u32,
}
