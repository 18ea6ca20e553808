//! Tile shapes of the shared matrix-product loop (`shaders/gemm_tile.wgsl`).
//!
//! Each shape is compiled as its own pipeline: the host prepends the shape's constants to the
//! fragment and unrolls the loops over a thread's registers itself (`//!unroll`, see
//! [`crate::gpu::shader`]), so no driver has to decide to unroll them. A small
//! explicit table picks the shape per product; `--tile` (or [`TileChoice::Fixed`]) overrides it
//! for measurement.

use std::fmt;
use std::str::FromStr;

/// One workgroup computes a `tm × tn` output tile; each thread a `rm × rn` block of it (in
/// chunks of 4 rows and 4 columns spread across the tile, so that workgroup-memory reads are
/// `vec4`s). `kt` is the depth of the K slice staged per iteration; `ks` groups of threads
/// split K between them (more threads on one tile when there are few tiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileShape {
    pub tm: u32,
    pub tn: u32,
    pub rm: u32,
    pub rn: u32,
    pub kt: u32,
    pub ks: u32,
}

impl TileShape {
    /// 16 groups of 16 threads split K: a step's serial chain of K slices is half that of 32x32
    /// and the dispatch has 4 times the workgroups. The automatic choice takes it only where
    /// 32x32 leaves most of the GPU idle (see [`FEW_GROUPS`]).
    pub const T16: Self = Self::new(16, 16, 4, 4, 4, 16);
    /// The most workgroups of the automatic choice, for small batches: 4 groups of 64 threads
    /// split K, so a step's serial chain of K slices is 4 times shorter.
    pub const T32: Self = Self::new(32, 32, 4, 4, 8, 4);
    /// 256 threads, 4×4 each.
    pub const T64: Self = Self::new(64, 64, 4, 4, 16, 1);
    /// 256 threads, 8×4 each; fits widths like 300 with little waste.
    pub const T128X64: Self = Self::new(128, 64, 8, 4, 16, 1);
    /// 256 threads, 8×8 each: the most reuse per loaded value, for large batches.
    pub const T128: Self = Self::new(128, 128, 8, 8, 8, 1);

    /// Every shape we compile, smallest first.
    pub const ALL: [Self; 5] = [Self::T16, Self::T32, Self::T64, Self::T128X64, Self::T128];
    /// The shapes the automatic choice picks from when there are enough tiles, smallest first.
    pub const AUTO: [Self; 4] = [Self::T32, Self::T64, Self::T128X64, Self::T128];

    const fn new(tm: u32, tn: u32, rm: u32, rn: u32, kt: u32, ks: u32) -> Self {
        Self {
            tm,
            tn,
            rm,
            rn,
            kt,
            ks,
        }
    }

    /// Threads per K group.
    pub fn group_threads(&self) -> u32 {
        (self.tm / self.rm) * (self.tn / self.rn)
    }

    pub fn threads(&self) -> u32 {
        self.group_threads() * self.ks
    }

    /// Workgroups needed for an `m × n` output.
    pub fn tiles(&self, m: usize, n: usize) -> u32 {
        (m.div_ceil(self.tm as usize) * n.div_ceil(self.tn as usize)) as u32
    }

    /// Workgroup memory the fragment declares, in bytes (rows are padded by 4 floats).
    pub fn workgroup_bytes(&self) -> u32 {
        (self.tm + 4 + self.tn + 4) * self.kt * self.ks * 4 + 2 * self.threads() * 4
    }

    /// The WGSL constants that parameterise `gemm_tile.wgsl`.
    pub fn wgsl_constants(&self) -> String {
        format!(
            "const TM: u32 = {}u;\nconst TN: u32 = {}u;\nconst RM: u32 = {}u;\n\
             const RN: u32 = {}u;\nconst KT: u32 = {}u;\nconst KS: u32 = {}u;\n",
            self.tm, self.tn, self.rm, self.rn, self.kt, self.ks
        )
    }

    /// The value of a tile constant that bounds a `//!unroll` block (see [`crate::gpu::shader`]):
    /// the shape's fields and the counts `gemm_tile.wgsl` derives from them.
    pub fn unroll_bound(&self, name: &str) -> Option<u32> {
        let group = self.group_threads();
        Some(match name {
            "TM" => self.tm,
            "TN" => self.tn,
            "RM" => self.rm,
            "RN" => self.rn,
            "KT" => self.kt,
            "KS" => self.ks,
            "CM" => self.rm / 4,
            "CN" => self.rn / 4,
            "LOADS_A" => self.tm * self.kt / group,
            "LOADS_B" => self.tn * self.kt / group,
            _ => return None,
        })
    }

    /// Whether the shape can be compiled: at most [`MAX_THREADS`] threads (a power of two, for
    /// the workgroup reductions) and [`MAX_BYTES`] of workgroup memory, register blocks of whole
    /// `vec4` chunks, a whole number of staged elements per thread, and room for the split-K
    /// partial tiles. Beyond WebGPU's defaults ([`TileShape::fits_defaults`]) the device must
    /// also offer the limits (checked when an engine is built).
    pub fn check(&self) -> Result<(), String> {
        let s = self;
        let fail = |why: &str| Err(format!("tile shape {s}: {why}"));
        if [s.tm, s.tn, s.rm, s.rn, s.kt, s.ks].contains(&0) {
            return fail("every size must be positive");
        }
        if !s.rm.is_multiple_of(4) || !s.rn.is_multiple_of(4) {
            return fail("a thread's block must be whole 4x4 chunks");
        }
        if !s.tm.is_multiple_of(s.rm) || !s.tn.is_multiple_of(s.rn) {
            return fail("the thread blocks must tile the output tile");
        }
        if !s.ks.is_power_of_two() || !s.threads().is_power_of_two() || s.threads() > MAX_THREADS {
            return fail(&format!(
                "threads (per K group × K groups) must be a power of two, at most {MAX_THREADS}"
            ));
        }
        if s.workgroup_bytes() > MAX_BYTES {
            return fail(&format!(
                "{} bytes of workgroup memory, over {} KiB",
                s.workgroup_bytes(),
                MAX_BYTES >> 10
            ));
        }
        let staged = s.group_threads();
        if !(s.tm * s.kt).is_multiple_of(staged) || !(s.tn * s.kt).is_multiple_of(staged) {
            return fail("each thread must stage a whole number of elements of each operand");
        }
        // Split-K partial tiles are summed pairwise through the staging memory (tile_a and
        // tile_b as one space): half of the groups park a whole tile each.
        if s.ks > 1 {
            let staging = s.ks * (s.tm + 4 + s.tn + 4) * s.kt;
            if staging < (s.ks / 2) * s.tm * s.tn {
                return fail("too little staging memory to add the split-K partial tiles");
            }
        }
        Ok(())
    }

    /// Whether the shape stays inside WebGPU's default limits (256 invocations, 16 KiB of
    /// workgroup memory), so that any adapter runs it.
    pub fn fits_defaults(&self) -> bool {
        self.threads() <= DEFAULT_THREADS && self.workgroup_bytes() <= DEFAULT_BYTES
    }

    /// The full description, `TMxTN-rRMxRN-kKT-sKS`, which `--tile` also accepts.
    pub fn spec(&self) -> String {
        format!(
            "{}x{}-r{}x{}-k{}-s{}",
            self.tm, self.tn, self.rm, self.rn, self.kt, self.ks
        )
    }

    fn parse_spec(s: &str) -> Option<Self> {
        let pair = |p: &str| -> Option<(u32, u32)> {
            let (a, b) = p.split_once('x')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        let mut parts = s.split('-');
        let (tm, tn) = pair(parts.next()?)?;
        let (rm, rn) = pair(parts.next()?.strip_prefix('r')?)?;
        let kt = parts.next()?.strip_prefix('k')?.parse().ok()?;
        let ks = parts.next()?.strip_prefix('s')?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self::new(tm, tn, rm, rn, kt, ks))
    }
}

/// WebGPU's default limits on a compute workgroup: invocations, and workgroup memory in bytes.
pub const DEFAULT_THREADS: u32 = 256;
pub const DEFAULT_BYTES: u32 = 16384;
/// The most a shape may ask for, where the adapter offers it (Vulkan's usual 1024 invocations; 48
/// KiB of workgroup memory on NVIDIA, 32 KiB on lavapipe and many others).
pub const MAX_THREADS: u32 = 1024;
pub const MAX_BYTES: u32 = 49152;

/// A shape of [`TileShape::ALL`] is named by its tile (`64x64`); any other by its full
/// [`TileShape::spec`].
impl fmt::Display for TileShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if Self::ALL.contains(self) {
            write!(f, "{}x{}", self.tm, self.tn)
        } else {
            write!(f, "{}", self.spec())
        }
    }
}

impl FromStr for TileShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_lowercase();
        if let Some(named) = Self::ALL
            .into_iter()
            .find(|t| t.to_string() == s || (t.tm == t.tn && t.tm.to_string() == s))
        {
            return Ok(named);
        }
        if let Some(shape) = Self::parse_spec(&s) {
            shape.check()?;
            return Ok(shape);
        }
        let names: Vec<String> = Self::ALL.iter().map(|t| t.to_string()).collect();
        Err(format!(
            "unknown tile shape '{s}' (one of {}, or any TMxTN-rRMxRN-kKT-sKS such as {})",
            names.join(", "),
            Self::T64.spec()
        ))
    }
}

/// How an engine picks the tile shape of each product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TileChoice {
    /// The table in [`TileChoice::pick`].
    #[default]
    Auto,
    /// The same shape for every product (benchmarks, tests).
    Fixed(TileShape),
}

/// Workgroups we want a dispatch to have before preferring larger tiles: about four per
/// multiprocessor of an H100 (132). Fewer, larger tiles reuse each loaded value more; more,
/// smaller tiles keep every multiprocessor busy and shorten each one's chain of K slices. On an
/// H100 (paper MLP, 100 relaxation steps, `results/h100-2026-11-27/bench.jsonl`) the relaxation
/// step took 21 / 37 / 47 / 108 µs with 32x32 / 64x64 / 128x64 / 128x128 tiles at batch 64,
/// 29 / 41 / 72 / 175 µs at 1024 and 105 / 67 / 94 / 324 µs at 4096; a target of 128
/// workgroups picked 32x32, 64x64 and 128x128 there, this one picks the fastest each time.
pub const TARGET_GROUPS: u32 = 512;
/// Below this many 32x32 workgroups, 16x16 tiles (split 16 ways along K) are used instead. On an
/// H100 (paper MLP, `results/h100-2026-11-27b/bench-tiles.jsonl`) 16x16 against 32x32 took
/// 13.2 against 21.1 µs per relaxation step at batch 64 (49 tiles of 32x32) and 0.055 against
/// 0.081 ms for the forward pass, but 68.7 against 28.8 µs per step at batch 1024 (768 tiles),
/// and for the weight gradients (394 tiles at any batch) 0.022 against 0.013 ms at batch 64 and
/// 0.50 against 0.36 ms at 4096.
pub const FEW_GROUPS: u32 = 128;

impl TileChoice {
    /// The choice for an adapter: on a CPU adapter (lavapipe) `Auto` means the largest tile,
    /// since there a few large workgroups beat many small ones (paper MLP, 20 relaxation steps,
    /// llvmpipe on 2 cores: 13.3 ms per step with 128x128 against 13.5 with 64x64 and 21.5 with
    /// 32x32 at batch 64; 29.3 against 49.3 and 93.3 at batch 256).
    pub fn for_adapter(self, device_type: wgpu::DeviceType) -> Self {
        match (self, device_type) {
            (Self::Auto, wgpu::DeviceType::Cpu) => Self::Fixed(TileShape::T128),
            (choice, _) => choice,
        }
    }

    /// The shape for one dispatch covering the `m × n` outputs in `products`: the largest tile
    /// that still yields [`TARGET_GROUPS`] workgroups, else 32x32, or 16x16 where even 32x32
    /// yields fewer than [`FEW_GROUPS`] (the most parallelism).
    pub fn pick(&self, products: &[(usize, usize)]) -> TileShape {
        if let Self::Fixed(s) = self {
            return *s;
        }
        let groups = |s: &TileShape| -> u32 { products.iter().map(|&(m, n)| s.tiles(m, n)).sum() };
        if groups(&TileShape::T32) < FEW_GROUPS {
            return TileShape::T16;
        }
        TileShape::AUTO
            .iter()
            .rev()
            .find(|s| groups(s) >= TARGET_GROUPS)
            .copied()
            .unwrap_or(TileShape::T32)
    }

    /// Invocations and workgroup memory (bytes) a workgroup of this choice may need: a forced
    /// shape's own, else WebGPU's defaults (every shape `Auto` picks fits them).
    pub fn workgroup_needs(&self) -> (u32, u32) {
        match self {
            Self::Fixed(s) => (s.threads(), s.workgroup_bytes()),
            Self::Auto => (DEFAULT_THREADS, DEFAULT_BYTES),
        }
    }
}

impl FromStr for TileChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(Self::Auto)
        } else {
            s.parse().map(Self::Fixed)
        }
    }
}

impl fmt::Display for TileChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Fixed(s) => write!(f, "{s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_fit_webgpu_defaults() {
        for s in TileShape::ALL {
            assert_eq!(s.check(), Ok(()));
            assert!(s.fits_defaults(), "{s}");
        }
    }

    #[test]
    fn full_specs_parse_and_are_checked() {
        for s in TileShape::ALL {
            assert_eq!(s.spec().parse::<TileShape>(), Ok(s));
        }
        let custom: TileShape = "64x64-r8x4-k16-s1".parse().unwrap();
        assert_eq!(custom, TileShape::new(64, 64, 8, 4, 16, 1));
        assert_eq!(custom.to_string(), "64x64-r8x4-k16-s1");
        assert_eq!(custom.to_string().parse::<TileShape>(), Ok(custom));
        // Beyond WebGPU's defaults, where an adapter offers it.
        let wide: TileShape = "32x32-r4x4-k8-s8".parse().unwrap();
        assert_eq!((wide.threads(), wide.fits_defaults()), (512, false));
        assert_eq!(
            TileChoice::Fixed(wide).workgroup_needs(),
            (512, wide.workgroup_bytes())
        );
        assert_eq!(TileChoice::Auto.workgroup_needs(), (256, 16384));
        for (bad, why) in [
            ("128x128-r8x8-k64-s1", "workgroup memory"),
            ("64x64-r4x4-k16-s8", "power of two"),
            ("64x64-r6x4-k16-s1", "4x4 chunks"),
            ("64x64-r4x4-k16-s3", "power of two"),
            ("64x64-r4x4-k0-s1", "positive"),
            ("64x64-r4x4-k1-s1", "whole number"),
            ("32x32-r4x4-k4-s16", "too little staging memory"),
        ] {
            let e = bad.parse::<TileShape>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for junk in ["64x64-r4x4-k16", "64x64-r4x4-k16-s1-x", "64y64", "sixty"] {
            let e = junk.parse::<TileShape>().unwrap_err();
            assert!(e.contains("unknown tile shape"), "{junk}: {e}");
        }
    }

    #[test]
    fn table_prefers_parallelism_for_small_batches() {
        let relax = |b| vec![(b, 300), (b, 300), (b, 100)];
        // 49 tiles of 32x32.
        assert_eq!(TileChoice::Auto.pick(&relax(64)), TileShape::T16);
        assert_eq!(TileChoice::Auto.pick(&relax(128)), TileShape::T16);
        // 192 tiles of 32x32.
        assert_eq!(TileChoice::Auto.pick(&relax(256)), TileShape::T32);
        assert_eq!(TileChoice::Auto.pick(&relax(1024)), TileShape::T32);
        assert_eq!(TileChoice::Auto.pick(&relax(4096)), TileShape::T64);
        // The weight gradients of the same network at batch 4096 (K = 4096, few output tiles).
        let grads = [(300, 784), (300, 300), (100, 300), (10, 100)];
        assert_eq!(TileChoice::Auto.pick(&grads), TileShape::T32);
        let fixed = TileChoice::Fixed(TileShape::T64);
        assert_eq!(fixed.pick(&relax(4096)), TileShape::T64);
    }

    #[test]
    fn cpu_adapters_take_the_largest_tile_unless_forced() {
        let cpu = wgpu::DeviceType::Cpu;
        let gpu = wgpu::DeviceType::DiscreteGpu;
        assert_eq!(
            TileChoice::Auto.for_adapter(cpu),
            TileChoice::Fixed(TileShape::T128)
        );
        assert_eq!(TileChoice::Auto.for_adapter(gpu), TileChoice::Auto);
        let forced = TileChoice::Fixed(TileShape::T32);
        assert_eq!(forced.for_adapter(cpu), forced);
    }

    #[test]
    fn names_round_trip() {
        for s in TileShape::ALL {
            assert_eq!(s.to_string().parse::<TileShape>().unwrap(), s);
        }
        assert_eq!("128".parse::<TileShape>().unwrap(), TileShape::T128);
        assert_eq!("auto".parse::<TileChoice>().unwrap(), TileChoice::Auto);
        assert!("65x3".parse::<TileShape>().is_err());
    }
}
