//! The resident relaxation kernel's shape (`shaders/relax_resident.wgsl`): rows and threads per
//! workgroup, and how the products' work is split among the threads, as WGSL constants.
//!
//! A workgroup owns `rows` samples and runs many relaxation steps on them. Every step reads all
//! of the relaxed layers' weights once, so its speed is how many of those loads are in flight at
//! once: the columns of the products are cut into K slices so that every thread has about the
//! same number of loads, and none walks a long K alone. The plan is pure arithmetic on the
//! widths; the CPU twin of the kernel is `reference::relax_step`.

use crate::{Error, Result};

/// Most columns a thread owns (their state is kept in its registers).
pub const MAX_OWN: u32 = 8;
/// Most work items a thread runs per step.
pub const MAX_ITEMS: u32 = 16;
/// Most weights a thread keeps in registers with `c` (each its own register).
pub const MAX_CACHE: u32 = 64;
/// Most workgroups per row block.
pub const MAX_PARTS: u32 = 16;
/// Most rows per workgroup.
pub const MAX_ROWS: u32 = 64;
/// Most weight loads in flight per thread (each is a register).
pub const MAX_LOADS: u32 = 64;
/// Most columns per work item (`wN`): each item's state and sums are N times a column's.
pub const MAX_WIDE: u32 = 4;
/// The loads in flight per thread chosen (when not forced): a power of two, about enough for this
/// many on the whole workgroup (64 KiB of weights), within 8 to 32 k's per thread (each of a
/// unit's columns).
const AUTO_WORKGROUP_LOADS: u32 = 16384;
/// A work item's fixed cost, in weight loads, when balancing (decode, sum, store).
const ITEM_OVERHEAD: u64 = 8;
/// Rows per workgroup chosen (when not forced) as the largest power of two up to this that
/// still gives [`TARGET_GROUPS`] workgroups.
const AUTO_MAX_ROWS: u32 = 16;
const TARGET_GROUPS: usize = 128;
/// Parts only up to this many rows in all (batch × replicas), and then rows per workgroup for
/// this many row blocks (see [`auto_parts`]).
const AUTO_PARTS_MAX_ROWS: usize = 256;
const AUTO_PARTS_BLOCKS: usize = 32;
/// Zigzag (when not forced) at up to this many rows per workgroup. On the H100 (2026-11-27c) it
/// cut a step by 6 to 10% at 1 and 2 rows, where streaming W bounds the step, and cost 3% at 8.
const AUTO_ZIGZAG_MAX_ROWS: u32 = 2;
/// 768 threads (when not forced) from this many rows per workgroup (see [`auto_threads`]).
const AUTO_768_MIN_ROWS: u32 = 8;

/// Rows and threads per workgroup, weight loads in flight per thread, workgroups per row block,
/// columns per work item, whether each thread keeps its weights in registers, and whether odd
/// steps walk K downwards (`zigzag`, see the kernel's ZIGZAG); None: chosen by
/// [`ResidentPlan::new`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResidentShape {
    pub rows: Option<u32>,
    pub threads: Option<u32>,
    pub loads: Option<u32>,
    /// Workgroups per row block (see [`ResidentPlan`]).
    pub parts: Option<u32>,
    /// Adjacent columns per work item (a unit, `wN`): every input value a thread reads from
    /// workgroup memory then feeds N products instead of one. 1 unless forced: not yet measured
    /// on a GPU.
    pub wide: Option<u32>,
    /// Extra items packed onto the least-loaded warps (`b`) rather than dealt round robin (see
    /// [`ResidentPlan::packed`]). Off unless forced: not yet measured on a GPU.
    pub packed: Option<bool>,
    pub zigzag: Option<bool>,
    /// Each thread keeps its weights in registers for every step instead of loading them
    /// (`c`; possible where every thread has one K slice of at most [`MAX_CACHE`] weights).
    pub cache: Option<bool>,
}

impl std::fmt::Display for ResidentShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (tag, v) in [
            ("r", self.rows),
            ("t", self.threads),
            ("u", self.loads),
            ("p", self.parts),
            ("w", self.wide),
        ] {
            if let Some(v) = v {
                parts.push(format!("{tag}{v}"));
            }
        }
        for (tag, v) in [("b", self.packed), ("c", self.cache), ("z", self.zigzag)] {
            match v {
                Some(true) => parts.push(tag.into()),
                Some(false) => parts.push(format!("{tag}0")),
                None => {}
            }
        }
        if parts.is_empty() {
            return f.write_str("auto");
        }
        f.write_str(&parts.join("-"))
    }
}

impl std::str::FromStr for ResidentShape {
    type Err = String;
    /// `auto`, or any of `rR`, `tT`, `uU`, `pP`, `wN`, `b` or `b0`, `c` or `c0` and `z` or `z0`
    /// joined by `-`, in that order (rows R, threads T, U loads in flight per thread, P
    /// workgroups per row block, N columns per work item, extra items packed or dealt round
    /// robin, weights in registers on or off, zigzag on or off): `r4`, `r4-t256`, `r8-u16-z`,
    /// `r2-p4-c`, `r16-t384-w2-b`, `r1-z0`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let mut shape = Self::default();
        if s == "auto" {
            return Ok(shape);
        }
        let bad = || {
            format!(
                "'{s}' is not a resident shape (auto, or e.g. r4, t256, r4-t256, r2-p4-c-z, \
                 r16-t384-w2)"
            )
        };
        // Each part's place in the order r, t, u, p, w, b, c, z; a part may not repeat or come
        // back.
        let mut next = 0;
        for part in s.split('-') {
            let (place, flag, digits) = match part.split_at_checked(1) {
                Some(("r", d)) => (0, None, d),
                Some(("t", d)) => (1, None, d),
                Some(("u", d)) => (2, None, d),
                Some(("p", d)) => (3, None, d),
                Some(("w", d)) => (4, None, d),
                Some(("b", "")) => (5, Some(true), ""),
                Some(("b", "0")) => (5, Some(false), ""),
                Some(("c", "")) => (6, Some(true), ""),
                Some(("c", "0")) => (6, Some(false), ""),
                Some(("z", "")) => (7, Some(true), ""),
                Some(("z", "0")) => (7, Some(false), ""),
                _ => return Err(bad()),
            };
            if place < next {
                return Err(bad());
            }
            next = place + 1;
            if flag.is_some() {
                *[&mut shape.packed, &mut shape.cache, &mut shape.zigzag][place - 5] = flag;
                continue;
            }
            let v: u32 = digits.parse().map_err(|_| bad())?;
            *[
                &mut shape.rows,
                &mut shape.threads,
                &mut shape.loads,
                &mut shape.parts,
                &mut shape.wide,
            ][place] = Some(v);
        }
        if let Some(r) = shape.rows {
            check_rows(r).map_err(|e| format!("'{s}': {e}"))?;
        }
        if let Some(p) = shape.parts
            && !(1..=MAX_PARTS).contains(&p)
        {
            return Err(format!(
                "'{s}': the resident kernel's parts per row block are 1 to {MAX_PARTS}, not {p}"
            ));
        }
        if let Some(w) = shape.wide
            && !(1..=MAX_WIDE).contains(&w)
        {
            return Err(format!(
                "'{s}': the resident kernel's columns per work item are 1 to {MAX_WIDE}, not {w}"
            ));
        }
        if shape.threads == Some(0) {
            return Err(bad());
        }
        if let Some(u) = shape.loads
            && !(1..=MAX_LOADS).contains(&u)
        {
            return Err(format!(
                "'{s}': the resident kernel's loads in flight per thread are 1 to {MAX_LOADS}, \
                 not {u}"
            ));
        }
        Ok(shape)
    }
}

/// Rows per workgroup the kernel can hold: 1, 2 or a multiple of 4 (as f32, vec2 or vec4s).
fn check_rows(r: u32) -> std::result::Result<(), String> {
    if r == 0 || r > MAX_ROWS || (r > 2 && !r.is_multiple_of(4)) {
        return Err(format!(
            "the resident kernel's rows per workgroup must be 1, 2 or a multiple of 4 up to \
             {MAX_ROWS}, not {r}"
        ));
    }
    Ok(())
}

/// Mirror of `PlanLayer` in the shader: one relaxed layer's share of the work.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PlanLayer {
    /// Its first unit (of [`ResidentPlan::wide`] columns) among the part's.
    pub unit_base: u32,
    pub extra_base: u32,
    pub slices: u32,
    pub slice_len: u32,
    pub post_base: u32,
    /// The part's units and columns of the layer (all of them without parts).
    pub units: u32,
    pub width: u32,
    pub pad: u32,
}

/// Mirror of `Role` in the shader: what one part of a row block relaxes (see [`ResidentPlan`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Role {
    /// Its first relaxed layer (0: the lowest) and how many.
    pub layer0: u32,
    pub count: u32,
    /// Its units (see [`ResidentPlan::wide`]) and extra items.
    pub n_units: u32,
    pub n_extra: u32,
    /// Its first entry of [`ResidentPlan::layers`].
    pub plan_base: u32,
    /// Its first column of its first layer (a multiple of [`ResidentPlan::wide`]).
    pub col0: u32,
    /// 1 for the upper part, which posts the lowest layer's input every step.
    pub publish: u32,
    /// 1 for a lower part, whose input is those posts.
    pub consume: u32,
}

/// The split of one relaxation step's products among a workgroup's threads.
///
/// With parts (P > 1), P workgroups share a row block: the upper part relaxes every relaxed
/// layer but the lowest and posts that layer's input every step; the P − 1 lower parts each
/// relax an even share of the lowest layer's columns from those posts. Each then streams only
/// its share of W every step. One [`Role`] per part, each with its own entries of `layers`;
/// `n_extra`, `own`, `items`, `post_len` and `busiest_loads` are the largest of any part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResidentPlan {
    pub rows: u32,
    pub threads: u32,
    /// Workgroups per row block.
    pub parts: u32,
    pub roles: Vec<Role>,
    /// Each part's entries, one per relaxed layer it relaxes (layers 1 … L−1 of the model).
    pub layers: Vec<PlanLayer>,
    /// Columns of all relaxed layers.
    pub n_cols: u32,
    /// Adjacent columns per unit: a unit's first K slice is its owner thread's first item, and
    /// the owner keeps the unit's state.
    pub wide: u32,
    /// Extra items: K slices after a unit's first.
    pub n_extra: u32,
    /// Units and items per thread at most.
    pub own: u32,
    pub items: u32,
    /// Sum of the relaxed layers' K (the rows of `post`).
    pub post_len: u32,
    /// Weight loads of the busiest thread per step (what the split minimised; packed: of the
    /// busiest warp, a slot counting as its longest item).
    pub busiest_loads: u64,
    /// Extra items packed onto warps by the host (`b`) rather than dealt round robin: units stay
    /// with their owners (unit g in slot g / T of thread g mod T), and the extra items go, up to
    /// 32 adjacent ones at a time (a warp's loads stay adjacent), each onto the warp whose loads
    /// they add least to, the longest first. Round robin puts the extras after the units, so for
    /// the paper's MLP they land on the owners of the widest product's columns again. Where
    /// round robin loads the busiest warp no more, the table is round robin's.
    pub packed: bool,
    /// With `packed`: per part, per thread, its items by slot (u32::MAX: none).
    pub assign: Vec<Vec<Vec<u32>>>,
    /// Weights each row block reads per step: the relaxed layers' W, once (shared among its
    /// parts).
    pub weights: u64,
    /// Weight loads in flight per thread (U in the kernel): k's, each one load per column of
    /// the unit.
    pub loads: u32,
    /// Odd steps walk K downwards.
    pub zigzag: bool,
    /// Weights kept in registers per thread (0: loaded every step). On the H100 (2026-11-27c,
    /// call 8) that took a step from 3.4 to 2.5 µs at batch 64 (2 rows, 4 parts) and from 6.0
    /// to 5.6 µs at 256 (8 rows, 4 parts).
    pub cache: u32,
    /// Whether this batch gets `cache` when it is not forced (for [`ResidentPlan::shape`]).
    pub auto_cache: bool,
    /// K of the lowest relaxed layer (the lower parts' input).
    pub lowest_k: u32,
    /// The parts this batch gets when they are not forced (for [`ResidentPlan::shape`]).
    pub auto_parts: u32,
}

/// The relaxed layers' (columns, K): layer l maps r_{l+1} (K = n_{l+1}) to r_l (n_l columns).
fn relaxed(widths: &[usize]) -> Vec<(u32, u32)> {
    (1..widths.len() - 1)
        .map(|l| (widths[l] as u32, widths[l + 1] as u32))
        .collect()
}

/// Weights of `layers` (columns, K).
fn weights(layers: &[(u32, u32)]) -> u64 {
    layers
        .iter()
        .map(|&(n, k)| u64::from(n) * u64::from(k))
        .sum()
}

/// Bytes of workgroup memory for `post` (`post_len` inputs) and `partial` (`extra` extra items
/// of `wide` columns, at least 1) at `rows` rows.
fn workgroup_bytes(rows: u32, post_len: u32, extra: u32, wide: u32) -> u64 {
    4 * u64::from(rows) * u64::from(post_len + extra.max(1) * wide)
}

/// A flag of a settled shape's name: said where it is on, or off where on is the default, so
/// that the name, parsed again, gives the same plan.
fn said(on: bool, default: bool) -> Option<bool> {
    (on || default).then_some(on)
}

/// Threads per workgroup (when not forced): the most the device allows up to 1024, but 768 at 8
/// rows or more, where each thread holds 3 × rows values of state: an SM's registers then give a
/// thread about 85 rather than 64. On the H100 (2026-11-27c) 768 threads made a step 3 to 5%
/// faster at 8 and 16 rows, and 30% slower at 1 row.
fn auto_threads(rows: u32, room: u32) -> u32 {
    if rows >= AUTO_768_MIN_ROWS && room >= 768 {
        768
    } else {
        1 << room.min(1024).ilog2()
    }
}

/// Parts per row block (when not forced), for at most [`AUTO_PARTS_MAX_ROWS`] rows in all and
/// two relaxed layers or more: the upper part and enough lower parts that each streams about as
/// much of W as the upper one (4 for the paper's MLP: 31 000 weights above the lowest relaxed
/// layer, 90 000 in it). On the H100 (2026-11-27c) 4 parts took a step from 6.3 to 3.5 µs at
/// batch 64 (2 rows) and from 8.0 to 6.0 µs at 256 (8 rows), and were slower at 1024.
fn auto_parts(layers: &[(u32, u32)], rows: usize) -> u32 {
    if layers.len() < 2 || rows > AUTO_PARTS_MAX_ROWS {
        return 1;
    }
    let (lowest, rest) = (weights(&layers[..1]), weights(&layers[1..]).max(1));
    let lower = (lowest as f64 / rest as f64).round() as u32;
    if lower < 1 {
        return 1;
    }
    lower.min(MAX_PARTS - 1).min(layers[0].0) + 1
}

/// Rows stored per value of `post` (f32, vec2 or vec4).
fn row_vec(rows: u32) -> u32 {
    rows.min(4)
}

impl ResidentPlan {
    /// Plans the kernel for a model of `widths` at `batch` × `replicas` rows, on a device that
    /// allows `room` = (invocations, bytes of workgroup memory) per workgroup.
    pub fn new(
        widths: &[usize],
        batch: usize,
        replicas: usize,
        shape: ResidentShape,
        room: (u32, u32),
    ) -> Result<Self> {
        let layers = relaxed(widths);
        if layers.is_empty() {
            return Err(Error::Config(
                "the resident relaxation kernel needs a hidden layer".into(),
            ));
        }
        let post_len: u32 = layers.iter().map(|l| l.1).sum();
        let n_cols: u32 = layers.iter().map(|l| l.0).sum();
        let forced_threads = match shape.threads {
            Some(t) if t == 0 || t > room.0 => {
                return Err(Error::Config(format!(
                    "the resident kernel's {t} threads per workgroup: the device allows 1 to {} \
                     (it is opened with more where the adapter offers them)",
                    room.0
                )));
            }
            t => t,
        };
        let wide = shape.wide.unwrap_or(1);
        let auto_parts = auto_parts(&layers, batch * replicas);
        let parts = shape.parts.unwrap_or(auto_parts);
        // Each workgroup holds the inputs of the layers it relaxes: with parts, those of the
        // lowest relaxed layer (a lower part) or of the others (the upper part), not both.
        let post_len = if parts > 1 {
            let upper: u32 = layers[1..].iter().map(|l| l.1).sum();
            layers[0].1.max(upper)
        } else {
            post_len
        };
        let bytes_for = |rows: u32| workgroup_bytes(rows, post_len, 0, wide);
        let rows = match shape.rows {
            Some(r) => {
                check_rows(r).map_err(Error::Config)?;
                r
            }
            None => {
                // Enough row blocks: 128 workgroups, or with parts 32 blocks of P workgroups.
                let target = if parts > 1 {
                    AUTO_PARTS_BLOCKS
                } else {
                    TARGET_GROUPS
                };
                let blocks = |r: u32| replicas * batch.div_ceil(r as usize);
                (0..=AUTO_MAX_ROWS.ilog2())
                    .rev()
                    .map(|p| 1 << p)
                    .find(|&r| blocks(r) >= target && bytes_for(r) <= u64::from(room.1))
                    .unwrap_or(1)
            }
        };
        if bytes_for(rows) > u64::from(room.1) {
            return Err(Error::Config(format!(
                "the resident kernel with {rows} rows per workgroup needs {} bytes of workgroup \
                 memory for the relaxed layers' inputs ({post_len} values per row); the device \
                 allows {}: use fewer rows or the tiled kernel",
                bytes_for(rows),
                room.1
            )));
        }
        let threads = forced_threads.unwrap_or_else(|| auto_threads(rows, room.0));
        let frame = Frame {
            rows,
            threads,
            wide,
            packed: shape.packed.unwrap_or(false),
        };
        let mut plan = if parts == 1 {
            let mut plan = Self::balance(&layers, frame, room.1, post_len)?;
            plan.roles = vec![Role {
                count: layers.len() as u32,
                n_units: plan.roles[0].n_units,
                n_extra: plan.n_extra,
                ..Role::default()
            }];
            plan
        } else {
            Self::in_parts(&layers, parts, frame, room.1, post_len)?
        };
        // The whole model's, whatever the parts.
        plan.n_cols = n_cols;
        plan.weights = weights(&layers);
        plan.lowest_k = layers[0].1;
        plan.auto_parts = auto_parts;
        plan.zigzag = shape.zigzag.unwrap_or(rows <= AUTO_ZIGZAG_MAX_ROWS);
        let longest = plan.layers.iter().map(|l| l.slice_len).max().unwrap_or(0);
        let can_cache = plan.items <= 1 && longest <= MAX_CACHE && wide == 1;
        // By default with parts, where it was measured (see the `cache` field).
        plan.auto_cache = can_cache && plan.parts > 1;
        if shape.cache == Some(true) && !can_cache {
            return Err(Error::Config(format!(
                "the resident kernel keeps weights in registers (c) only where every thread has \
                 one K slice of at most {MAX_CACHE} weights of one column; this shape gives {} \
                 items per thread, slices of up to {longest} and {wide} columns per item",
                plan.items
            )));
        }
        if shape.cache.unwrap_or(plan.auto_cache) {
            plan.cache = longest;
        }
        plan.loads = shape.loads.unwrap_or_else(|| {
            // Rounded down: at 768 threads 16 beat 32 by 5% on the H100 (2026-11-27c). A unit
            // of N columns loads N weights per k: U k's hold U N registers.
            1 << (AUTO_WORKGROUP_LOADS / (threads * wide))
                .clamp(8, 32)
                .ilog2()
        });
        Ok(plan)
    }

    /// The split of `layers` (columns, K) among one workgroup's threads, in units of `wide`
    /// columns, that loads the busiest thread least, beside `post_len` inputs per row in
    /// workgroup memory (those of `layers`, or with parts the most any part holds: the kernel
    /// declares one size for all).
    fn balance(
        layers: &[(u32, u32)],
        frame: Frame,
        room_bytes: u32,
        post_len: u32,
    ) -> Result<Self> {
        let Frame {
            rows,
            threads,
            wide,
            ..
        } = frame;
        let n_units: u32 = layers.iter().map(|l| l.0.div_ceil(wide)).sum();
        let own = n_units.div_ceil(threads);
        if own > MAX_OWN {
            return Err(Error::Config(format!(
                "the resident kernel keeps at most {MAX_OWN} units per thread: the relaxed layers \
                 have {n_units} units of {wide} columns for {threads} threads per workgroup (use \
                 more threads, wider units or the tiled kernel)"
            )));
        }
        let mut best: Option<ResidentPlan> = None;
        for slice_len in candidate_slices(layers) {
            let plan = Self::split(layers, slice_len, frame, post_len);
            if plan.items > MAX_ITEMS
                || workgroup_bytes(rows, post_len, plan.n_extra, wide) > u64::from(room_bytes)
            {
                continue;
            }
            let better = best
                .as_ref()
                .is_none_or(|b| (plan.busiest_loads, plan.n_extra) < (b.busiest_loads, b.n_extra));
            if better {
                best = Some(plan);
            }
        }
        // Unsplit columns always fit: the caller checked their memory, and `own` their items.
        Ok(best.expect("one slice per column is always a candidate"))
    }

    /// The plan with `parts` workgroups per row block (see [`ResidentPlan`]).
    fn in_parts(
        layers: &[(u32, u32)],
        parts: u32,
        frame: Frame,
        room_bytes: u32,
        post_len: u32,
    ) -> Result<Self> {
        let wide = frame.wide;
        let upper = u32::from(layers.len() > 1);
        let lower = parts - upper;
        let (n0, k0) = layers[0];
        let units0 = n0.div_ceil(wide);
        if lower == 0 || lower > units0 {
            return Err(Error::Config(format!(
                "the resident kernel's {parts} parts per row block: the lowest relaxed layer's \
                 {units0} units of {wide} columns are shared among {lower} of them (at least 1, \
                 at most {units0})"
            )));
        }
        let mut pieces = Vec::new();
        if upper == 1 {
            let plan = Self::balance(&layers[1..], frame, room_bytes, post_len)?;
            let role = Role {
                layer0: 1,
                count: layers.len() as u32 - 1,
                publish: 1,
                ..Role::default()
            };
            pieces.push((role, plan));
        }
        for p in 0..lower {
            // An even share of whole units.
            let (u0, u1) = (p * units0 / lower, (p + 1) * units0 / lower);
            let (c0, c1) = (u0 * wide, (u1 * wide).min(n0));
            let plan = Self::balance(&[(c1 - c0, k0)], frame, room_bytes, post_len)?;
            let role = Role {
                count: 1,
                col0: c0,
                consume: upper,
                ..Role::default()
            };
            pieces.push((role, plan));
        }
        let mut whole = pieces[0].1.clone();
        whole.layers.clear();
        whole.roles.clear();
        whole.assign.clear();
        for (mut role, plan) in pieces {
            role.n_units = plan.roles[0].n_units;
            whole.assign.extend(plan.assign.iter().cloned());
            role.n_extra = plan.n_extra;
            role.plan_base = whole.layers.len() as u32;
            whole.layers.extend(&plan.layers);
            whole.roles.push(role);
            whole.n_extra = whole.n_extra.max(plan.n_extra);
            whole.own = whole.own.max(plan.own);
            whole.items = whole.items.max(plan.items);
            whole.post_len = whole.post_len.max(plan.post_len);
            whole.busiest_loads = whole.busiest_loads.max(plan.busiest_loads);
        }
        whole.parts = parts;
        Ok(whole)
    }

    /// The plan that cuts every unit into K slices of about `slice_len` (balanced per layer).
    fn split(layers: &[(u32, u32)], slice_len: u32, frame: Frame, post_len: u32) -> Self {
        let Frame {
            rows,
            threads,
            wide,
            packed,
        } = frame;
        let mut plan = Vec::with_capacity(layers.len());
        let (mut unit_base, mut extra_base, mut post_base) = (0, 0, 0);
        for &(n, k) in layers {
            let slices = k.div_ceil(slice_len.min(k).max(1));
            let len = k.div_ceil(slices).max(1);
            let slices = k.div_ceil(len).max(1);
            let units = n.div_ceil(wide);
            plan.push(PlanLayer {
                unit_base,
                extra_base,
                slices,
                slice_len: len,
                post_base,
                units,
                width: n,
                pad: 0,
            });
            unit_base += units;
            extra_base += (slices - 1) * units;
            post_base += k;
        }
        let (n_units, n_extra) = (unit_base, extra_base);
        // Each item's loads: a unit loads `wide` weights per k.
        let cost = |len: u32| u64::from(len * wide) + ITEM_OVERHEAD;
        // Each item's loads, and which (layer, K slice) it is of (runs of packed items stay in
        // one).
        let mut item_loads = Vec::with_capacity((n_units + n_extra) as usize);
        let mut item_group = Vec::with_capacity(item_loads.capacity());
        for (i, (p, &(_, k))) in plan.iter().zip(layers).enumerate() {
            item_loads.extend((0..p.units).map(|_| cost(p.slice_len.min(k))));
            item_group.extend((0..p.units).map(|_| (i, 0)));
        }
        for (i, (p, &(_, k))) in plan.iter().zip(layers).enumerate() {
            for s in 1..p.slices {
                let len = p.slice_len.min(k - s * p.slice_len);
                item_loads.extend((0..p.units).map(|_| cost(len)));
                item_group.extend((0..p.units).map(|_| (i, s)));
            }
        }
        let (assign, busiest, items) = if packed {
            match pack(&item_loads, &item_group, n_units, threads) {
                Some((lists, busiest)) => {
                    let items = lists.iter().map(|l| l.len() as u32).max().unwrap_or(0);
                    (lists, busiest, items)
                }
                // A thread would run more than MAX_ITEMS: `balance` rules this split out.
                None => (Vec::new(), u64::MAX, MAX_ITEMS + 1),
            }
        } else {
            // Item g runs on thread g mod threads.
            let mut load = vec![0u64; threads as usize];
            for (g, l) in item_loads.iter().enumerate() {
                load[g % threads as usize] += l;
            }
            let items = (n_units + n_extra).div_ceil(threads);
            (Vec::new(), load.into_iter().max().unwrap_or(0), items)
        };
        Self {
            rows,
            threads,
            parts: 1,
            roles: vec![Role {
                n_units,
                n_extra,
                ..Role::default()
            }],
            layers: plan,
            n_cols: layers.iter().map(|l| l.0).sum(),
            wide,
            n_extra,
            own: n_units.div_ceil(threads),
            items,
            post_len,
            busiest_loads: busiest,
            packed,
            assign: vec![assign],
            weights: weights(layers),
            loads: 8,
            zigzag: false,
            cache: 0,
            auto_cache: false,
            lowest_k: 0,
            auto_parts: 1,
        }
    }

    /// The paper's MLP at batch 64 with 4 rows and WebGPU's default limits: what the kernel is
    /// validated with where no model is at hand.
    pub fn example() -> Self {
        let shape = ResidentShape {
            rows: Some(4),
            threads: Some(256),
            loads: None,
            parts: None,
            wide: None,
            packed: None,
            zigzag: None,
            cache: None,
        };
        Self::new(&[784, 300, 300, 100, 10], 64, 1, shape, (256, 16384))
            .expect("the example fits WebGPU's defaults")
    }

    /// Row blocks for `batch` × `replicas` rows.
    pub fn blocks(&self, batch: usize, replicas: usize) -> usize {
        replicas * batch.div_ceil(self.rows as usize)
    }

    /// Workgroups for `batch` × `replicas` rows: every block's parts.
    pub fn groups(&self, batch: usize, replicas: usize) -> usize {
        self.blocks(batch, replicas) * self.parts as usize
    }

    /// The kernel's `roles` buffer: every part's [`Role`], then with `packed` each part's items
    /// per slot per thread, `[part][slot][thread]` (u32::MAX: none; one word when not packed).
    pub fn roles_words(&self) -> Vec<u32> {
        let mut words: Vec<u32> = bytemuck::cast_slice(&self.roles).to_vec();
        if !self.packed {
            words.push(0);
            return words;
        }
        for lists in &self.assign {
            for q in 0..self.items as usize {
                words.extend(lists.iter().map(|l| l.get(q).copied().unwrap_or(u32::MAX)));
            }
        }
        words
    }

    /// Bytes of workgroup memory the kernel declares.
    pub fn workgroup_bytes(&self) -> u32 {
        workgroup_bytes(self.rows, self.post_len, self.n_extra, self.wide) as u32
    }

    /// "r4-t1024": the shape this plan settled on.
    pub fn shape(&self) -> ResidentShape {
        ResidentShape {
            rows: Some(self.rows),
            threads: Some(self.threads),
            loads: Some(self.loads),
            // Said where there are several (and where one is not the default).
            parts: (self.parts > 1 || self.parts != self.auto_parts).then_some(self.parts),
            wide: (self.wide > 1).then_some(self.wide),
            packed: self.packed.then_some(true),
            cache: said(self.cache > 0, self.auto_cache),
            zigzag: said(self.zigzag, self.rows <= AUTO_ZIGZAG_MAX_ROWS),
        }
    }

    /// The WGSL constants the kernel is compiled with (put before its source).
    pub fn constants(&self) -> String {
        let rv = row_vec(self.rows);
        let (ty, at, with) = match rv {
            1 => ("f32", "v", "x"),
            2 => (
                "vec2<f32>",
                "select(v.x, v.y, c == 1u)",
                "select(v, vec2<f32>(x), vec2<u32>(0u, 1u) == vec2<u32>(c))",
            ),
            _ => (
                "vec4<f32>",
                "select(select(select(v.x, v.y, c == 1u), v.z, c == 2u), v.w, c == 3u)",
                "select(v, vec4<f32>(x), vec4<u32>(0u, 1u, 2u, 3u) == vec4<u32>(c))",
            ),
        };
        let consts = [
            ("R", self.rows),
            ("RV", rv),
            ("RB", self.rows / rv),
            ("T", self.threads),
            ("OWN", self.own),
            ("CW", self.wide),
            ("PACKED", u32::from(self.packed)),
            ("OWNW", self.own * self.wide),
            ("RBW", self.rows / rv * self.wide),
            ("UW", self.loads * self.wide),
            ("ITEMS", self.items),
            ("EXTRA_ITEMS", self.items - self.own),
            ("POST_LEN", self.post_len),
            ("EXTRA_LEN", self.n_extra.max(1)),
            ("U", self.loads),
            ("PARTS", self.parts),
            ("CACHE", u32::from(self.cache > 0)),
            ("WC", self.cache.max(1)),
            // A lower part's input per thread (K of the lowest relaxed layer, in RowVecs).
            (
                "NEXT",
                (self.lowest_k * (self.rows / rv))
                    .div_ceil(self.threads)
                    .max(1),
            ),
            ("ZIGZAG", u32::from(self.zigzag)),
        ];
        let mut s = format!("// Generated by gpu::resident::ResidentPlan.\nalias RowVec = {ty};\n");
        for (name, v) in consts {
            s.push_str(&format!("const {name}: u32 = {v}u;\n"));
        }
        s.push_str(&format!(
            "fn rv_at(v: RowVec, c: u32) -> f32 {{ return {at}; }}\n\
             fn rv_with(v: RowVec, c: u32, x: f32) -> RowVec {{ return {with}; }}\n"
        ));
        s
    }
}

/// What every part's split of the work shares: rows and threads per workgroup, columns per unit,
/// and whether the extra items are packed.
#[derive(Clone, Copy, Debug)]
struct Frame {
    rows: u32,
    threads: u32,
    wide: u32,
    packed: bool,
}

/// Lanes that run in step (a warp on NVIDIA; the packing's unit of adjacent items).
const PACK_LANES: usize = 32;

/// The loads of the busiest warp with items `lists` (per thread, by slot; u32::MAX: none) of
/// `loads`: a slot costs its longest item, as the warp's lanes run it together.
fn busiest_warp(lists: &[Vec<u32>], loads: &[u64]) -> u64 {
    lists
        .chunks(PACK_LANES)
        .map(|warp| {
            let slots = warp.iter().map(Vec::len).max().unwrap_or(0);
            (0..slots)
                .map(|q| {
                    warp.iter()
                        .filter_map(|l| l.get(q))
                        .filter(|&&g| g != u32::MAX)
                        .map(|&g| loads[g as usize])
                        .max()
                        .unwrap_or(0)
                })
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// Items by slot for each of `threads` threads (u32::MAX: none), and the busiest warp's loads
/// (see [`busiest_warp`]), for items of `loads` (units first, `n_units` of them, then the
/// extras) in `groups` (their layer and K slice): unit g in slot g / T of thread g mod T, then
/// runs of up to 32 adjacent extras of one group, the heaviest first, each in a new slot of the
/// warp they add least to, lane i taking the run's i-th. Round robin instead where that loads
/// the busiest warp no more. None if a thread would need more than [`MAX_ITEMS`] slots.
fn pack(
    loads: &[u64],
    groups: &[(usize, u32)],
    n_units: u32,
    threads: u32,
) -> Option<(Vec<Vec<u32>>, u64)> {
    let t = threads as usize;
    let mut lists: Vec<Vec<u32>> = vec![Vec::new(); t];
    for g in 0..n_units {
        lists[g as usize % t].push(g);
    }
    let warps = t.div_ceil(PACK_LANES);
    let lanes = |w: usize| PACK_LANES.min(t - w * PACK_LANES);
    let mut next: Vec<usize> = lists
        .chunks(PACK_LANES)
        .map(|warp| warp.iter().map(Vec::len).max().unwrap_or(0))
        .collect();
    let mut warp_load: Vec<u64> = lists
        .chunks(PACK_LANES)
        .map(|warp| busiest_warp(warp, loads))
        .collect();
    // Runs of adjacent extras of one group, at most a warp wide.
    let mut runs: Vec<(u32, usize)> = Vec::new();
    let mut g = n_units as usize;
    while g < loads.len() {
        let mut n = 1;
        while n < lanes(0) && g + n < loads.len() && groups[g + n] == groups[g] {
            n += 1;
        }
        runs.push((g as u32, n));
        g += n;
    }
    // Heaviest first; ties in order.
    runs.sort_by_key(|&(g, _)| std::cmp::Reverse(loads[g as usize]));
    let mut packed = true;
    for (g0, n) in runs {
        let Some(w) = (0..warps)
            .filter(|&w| lanes(w) >= n && next[w] < MAX_ITEMS as usize)
            .min_by_key(|&w| (warp_load[w], w))
        else {
            packed = false;
            break;
        };
        let q = next[w];
        for i in 0..n {
            let list = &mut lists[w * PACK_LANES + i];
            list.resize(q, u32::MAX);
            list.push(g0 + i as u32);
        }
        next[w] += 1;
        warp_load[w] += loads[g0 as usize];
    }
    let busiest = warp_load.into_iter().max().unwrap_or(0);
    // Round robin, by the same measure.
    let mut dealt: Vec<Vec<u32>> = vec![Vec::new(); t];
    for g in 0..loads.len() {
        dealt[g % t].push(g as u32);
    }
    let dealt_fits = loads.len().div_ceil(t) <= MAX_ITEMS as usize;
    let dealt_busiest = busiest_warp(&dealt, loads);
    match (packed, dealt_fits) {
        (true, true) if dealt_busiest <= busiest => Some((dealt, dealt_busiest)),
        (true, _) => Some((lists, busiest)),
        (false, true) => Some((dealt, dealt_busiest)),
        (false, false) => None,
    }
}

/// Slice lengths worth trying: each layer's K cut into 1 to 64 even pieces.
fn candidate_slices(layers: &[(u32, u32)]) -> Vec<u32> {
    let mut c: Vec<u32> = layers
        .iter()
        .flat_map(|&(_, k)| (1..=64u32.min(k)).map(move |s| k.div_ceil(s)))
        .collect();
    c.sort_unstable();
    c.dedup();
    c.reverse();
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAPER: [usize; 5] = [784, 300, 300, 100, 10];

    /// Every (layer, column, k) of every relaxed product is in exactly one item.
    fn covers_each_term_once(widths: &[usize], plan: &ResidentPlan) {
        let layers = relaxed(widths);
        let mut seen: Vec<Vec<u32>> = layers
            .iter()
            .map(|&(n, k)| vec![0; (n * k) as usize])
            .collect();
        let mut cover = |i: usize, j: u32, k0: u32, k1: u32| {
            let (n, k) = layers[i];
            assert!(k0 < k1 && k1 <= k, "layer {i}: slice {k0}..{k1} of {k}");
            for kk in k0..k1 {
                seen[i][(kk * n + j) as usize] += 1;
            }
        };
        // Each part's share, mirroring the kernel's decode: columns col0 + j of its layers.
        for role in &plan.roles {
            let mut extras = 0;
            for i in 0..role.count as usize {
                let p = plan.layers[role.plan_base as usize + i];
                let layer = role.layer0 as usize + i;
                let k = layers[layer].1;
                let (n, w) = (p.units, plan.wide);
                assert_eq!(n, p.width.div_ceil(w));
                // Unit u's columns: col0 + u w + x, for x below w and the part's width.
                let mut unit = |u: u32, k0: u32, k1: u32| {
                    for x in 0..w.min(p.width - u * w) {
                        cover(layer, role.col0 + u * w + x, k0, k1);
                    }
                };
                for u in 0..n {
                    unit(u, 0, p.slice_len.min(k));
                }
                for t in 0..(p.slices - 1) * n {
                    let k0 = (1 + t / n) * p.slice_len;
                    unit(t % n, k0, (k0 + p.slice_len).min(k));
                }
                assert_eq!(p.extra_base, extras);
                extras += (p.slices - 1) * n;
            }
            assert_eq!(extras, role.n_extra);
        }
        for (i, s) in seen.iter().enumerate() {
            assert!(s.iter().all(|&c| c == 1), "layer {i}: {widths:?} {plan:?}");
        }
        assert_eq!(plan.roles.len() as u32, plan.parts);
        // Packed: every item on one thread once, each unit with its owner, in at most `items`
        // slots.
        if plan.packed {
            assert_eq!(plan.assign.len(), plan.roles.len());
            for (role, lists) in plan.roles.iter().zip(&plan.assign) {
                let t = plan.threads as usize;
                assert_eq!(lists.len(), t);
                let mut count = vec![0; (role.n_units + role.n_extra) as usize];
                for (lid, list) in lists.iter().enumerate() {
                    assert!(list.len() <= plan.items as usize);
                    for (q, &g) in list.iter().enumerate() {
                        if g == u32::MAX {
                            continue;
                        }
                        count[g as usize] += 1;
                        if g < role.n_units {
                            assert_eq!((lid, q), (g as usize % t, g as usize / t));
                        }
                    }
                }
                assert!(count.iter().all(|&c| c == 1), "{widths:?} {plan:?}");
            }
            let words = plan.roles_words();
            let n = plan.roles.len() * (8 + (plan.items * plan.threads) as usize);
            assert_eq!(words.len(), n);
        }
    }

    #[test]
    fn plans_cover_every_product_term_once() {
        let models: [&[usize]; 5] = [
            &PAPER,
            &[13, 11, 7, 5],
            &[20, 300, 270, 7],
            &[8, 1100, 4],
            &[3, 1, 1, 2],
        ];
        for widths in models {
            for (threads, rows, parts, wide, packed) in (0..5 * 4 * 4 * 3 * 2).map(|i| {
                let t = [1, 7, 64, 256, 1024][i / 96];
                let w = [1, 2, 3][i / 32 % 3];
                (
                    t,
                    [1, 2, 4, 8][i / 8 % 4],
                    [1, 2, 3, 4][i / 2 % 4],
                    w,
                    i % 2 == 1,
                )
            }) {
                {
                    let shape = ResidentShape {
                        rows: Some(rows),
                        threads: Some(threads),
                        loads: None,
                        parts: Some(parts),
                        wide: Some(wide),
                        packed: Some(packed),
                        zigzag: None,
                        cache: None,
                    };
                    match ResidentPlan::new(widths, 64, 1, shape, (1024, 49152)) {
                        Ok(plan) => {
                            covers_each_term_once(widths, &plan);
                            assert!(plan.items <= MAX_ITEMS && plan.own <= MAX_OWN);
                            assert!(plan.workgroup_bytes() <= 49152);
                        }
                        Err(e) => {
                            let e = e.to_string();
                            assert!(e.contains("units per thread") || e.contains("parts"), "{e}")
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_paper_mlp_splits_its_widest_product() {
        let shape = ResidentShape {
            rows: Some(1),
            threads: Some(1024),
            loads: None,
            parts: Some(1),
            wide: None,
            packed: None,
            zigzag: None,
            cache: None,
        };
        let plan = ResidentPlan::new(&PAPER, 64, 1, shape, (1024, 49152)).unwrap();
        // 700 columns; K = 300, 100 and 10. Unsplit, the busiest thread would load 300 weights.
        assert_eq!((plan.n_cols, plan.post_len, plan.own), (700, 410, 1));
        // 484 KB of weights per step: W₂ (300·300), W₃ (100·300), W₄ (10·100).
        assert_eq!(plan.weights, 121_000);
        assert!(plan.layers[0].slices >= 2, "{plan:?}");
        assert!(plan.busiest_loads < 300, "{plan:?}");
    }

    /// Round robin puts the paper's MLP's extra items back on the owners of W₂'s columns; packed,
    /// they go to the light warps (the figures README quotes).
    #[test]
    fn packing_lightens_the_busiest_thread_at_batch_4096() {
        let busiest = |s: &str| {
            let plan = ResidentPlan::new(&PAPER, 4096, 1, s.parse().unwrap(), (1024, 49152));
            plan.unwrap().busiest_loads
        };
        assert_eq!((busiest("r16-t768"), busiest("r16-t768-b")), (308, 266));
        assert_eq!(
            (busiest("r16-t384-w2"), busiest("r16-t384-w2-b")),
            (608, 516)
        );
    }

    /// Where round robin is no worse, `b` keeps it (the paper's MLP at batch 64); the shapes
    /// `tests/kernels.rs` runs packed on lavapipe do get tables of their own, so the kernel's
    /// packed path is tested with real packing.
    #[test]
    fn packed_tables_are_round_robin_only_where_that_is_no_worse() {
        let dealt = |plan: &ResidentPlan| {
            plan.assign.iter().all(|lists| {
                lists.iter().enumerate().all(|(t, l)| {
                    let at = |q: usize| t + q * plan.threads as usize;
                    l.iter()
                        .enumerate()
                        .all(|(q, &g)| g == u32::MAX || g as usize == at(q))
                })
            })
        };
        let plan = |w: &[usize], batch, s: &str| {
            ResidentPlan::new(w, batch, 1, s.parse().unwrap(), (1024, 49152)).unwrap()
        };
        assert!(dealt(&plan(&PAPER, 64, "b")));
        assert_eq!(plan(&PAPER, 64, "b").cache, plan(&PAPER, 64, "auto").cache);
        for s in ["r2-t256-p1-b-z", "r1-t256-p1-w2-b"] {
            assert!(!dealt(&plan(&[20, 300, 270, 7], 9, s)), "{s}");
        }
    }

    #[test]
    fn automatic_rows_and_threads_follow_the_batch_and_the_device() {
        let plan = |batch, room| {
            ResidentPlan::new(&PAPER, batch, 1, ResidentShape::default(), room).unwrap()
        };
        assert_eq!(
            (
                plan(512, (1024, 49152)).rows,
                plan(512, (1024, 49152)).threads
            ),
            (4, 1024)
        );
        assert_eq!(plan(1024, (1024, 49152)).rows, 8);
        assert_eq!(plan(4096, (1024, 49152)).rows, 16);
        // Many rows: fewer threads, more registers each.
        assert_eq!(plan(1024, (1024, 49152)).threads, 768);
        assert_eq!(plan(1024, (1024, 49152)).loads, 16);
        assert_eq!(plan(512, (1024, 49152)).threads, 1024);
        // WebGPU's defaults: 256 threads, 16 KiB (410 inputs per row fit 8 rows, not 16).
        let small = plan(4096, (256, 16384));
        assert_eq!((small.rows, small.threads), (8, 256));
        assert!(small.workgroup_bytes() <= 16384);
        // Zigzag where streaming W bounds the step (1 and 2 rows).
        let zigzag = |batch| plan(batch, (1024, 49152)).zigzag;
        assert_eq!(
            (zigzag(64), zigzag(512), zigzag(1024)),
            (true, false, false)
        );
        // Up to 256 rows, 4 parts per row block of 32 (upper: W₃ and W₄; lower: W₂ in three).
        let p = |batch| plan(batch, (1024, 49152));
        assert_eq!((p(64).parts, p(64).rows, p(64).threads), (4, 2, 1024));
        assert_eq!((p(256).parts, p(256).rows, p(256).threads), (4, 8, 768));
        assert_eq!((p(512).parts, p(1024).parts), (1, 1));
        // With parts, each thread's weights stay in registers (one K slice of 34 or fewer).
        assert_eq!((p(64).cache, p(256).cache, p(1024).cache), (34, 50, 0));
        let cols: Vec<u32> = p(64).roles.iter().map(|r| r.n_units).collect();
        assert_eq!(cols, [400, 100, 100, 100]);
    }

    /// Every plan the shapes allow fits the workgroup memory it was made for: with parts, the
    /// kernel declares the largest part's inputs beside the largest part's extra items.
    #[test]
    fn every_plan_fits_its_workgroup_memory() {
        let room = (1024, 49152);
        let mut plans = 0;
        for batch in [64, 1024, 4096] {
            for rows in [1, 2, 4, 8, 16, 32] {
                for threads in [256, 512, 768, 1024] {
                    for parts in 1..=7 {
                        let shape = format!("r{rows}-t{threads}-p{parts}").parse().unwrap();
                        if let Ok(plan) = ResidentPlan::new(&PAPER, batch, 1, shape, room) {
                            assert!(plan.workgroup_bytes() <= room.1, "{}", plan.shape());
                            plans += 1;
                        }
                    }
                }
            }
        }
        assert!(plans > 300, "{plans} plans");
    }

    /// What `scripts/gpu-check.sh throughput` sweeps fits the H100, so no device time is spent
    /// on a refusal.
    #[test]
    fn the_swept_shapes_fit_the_h100() {
        let lines = include_str!("../../scripts/resident-shapes.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
        for line in lines {
            let (batches, shapes) = line.split_once(' ').unwrap();
            for batch in batches.split(',') {
                for shape in shapes.split(',') {
                    let batch: usize = batch.parse().unwrap();
                    let shape = shape.parse().unwrap();
                    ResidentPlan::new(&PAPER, batch, 1, shape, (1024, 49152)).unwrap();
                }
            }
        }
    }

    #[test]
    fn a_settled_shape_names_its_plan() {
        for (batch, forced) in [
            (64, "auto"),
            (64, "z0"),
            (64, "p1"),
            (64, "r1-p2"),
            (64, "c0"),
            (256, "r8-p4-c"),
            (1024, "auto"),
            (1024, "z"),
            (1024, "p3"),
            (8, "r4"),
            (4096, "r16-t384-w2"),
            (64, "r2-p4-w2"),
            (1024, "r8-t384-w2-b"),
            (64, "b"),
            // What tune may settle on at large batches.
            (4096, "r16-p4"),
            (1024, "r4-p4"),
            (4096, "r16-t768-b"),
        ] {
            let room = (1024, 49152);
            let plan = ResidentPlan::new(&PAPER, batch, 1, forced.parse().unwrap(), room).unwrap();
            let name = plan.shape().to_string();
            let again = ResidentPlan::new(&PAPER, batch, 1, name.parse().unwrap(), room).unwrap();
            assert_eq!(
                (again.rows, again.threads, again.loads, again.parts),
                (plan.rows, plan.threads, plan.loads, plan.parts)
            );
            assert_eq!(again.zigzag, plan.zigzag, "{forced} settled as {name}");
            assert_eq!(again.cache, plan.cache, "{forced} settled as {name}");
            assert_eq!(again.wide, plan.wide, "{forced} settled as {name}");
            assert_eq!(again.packed, plan.packed, "{forced} settled as {name}");
        }
    }

    #[test]
    fn impossible_shapes_are_clear_errors() {
        let try_shape = |s: &str, room| {
            ResidentPlan::new(&PAPER, 64, 1, s.parse().unwrap(), room)
                .unwrap_err()
                .to_string()
        };
        assert!(try_shape("t2048", (1024, 49152)).contains("device allows 1 to 1024"));
        assert!(try_shape("r16", (256, 16384)).contains("bytes of workgroup memory"));
        assert!(try_shape("t64-p1", (1024, 49152)).contains("units per thread"));
        assert!(try_shape("r2-p4-w2-c", (1024, 49152)).contains("columns per item"));
    }

    #[test]
    fn shapes_parse_and_print() {
        for s in [
            "auto",
            "r4",
            "t256",
            "r4-t256",
            "r16-t1024",
            "z",
            "r1-z",
            "r2-t64-z",
            "r1-z0",
            "r8-u16-z",
            "r2-p4-c-z",
            "c0",
            "r16-t384-w2",
            "r2-p4-w4-c0-z",
            "r8-t384-w2-b",
            "b0-c",
        ] {
            assert_eq!(s.parse::<ResidentShape>().unwrap().to_string(), s);
        }
        for s in [
            "", "r", "x4", "r4-r8", "r4t2", "4", "z-r4", "r4-z-z", "r3", "r0", "t0", "u0", "u65",
            "u8-r1", "t4-t4", "z4", "z1", "z0-z", "p0", "p17", "z-p2", "z-c", "c1", "c-c", "w0",
            "w5", "w", "w2-p2", "c-w2", "b1", "c-b", "b-b0",
        ] {
            assert!(s.parse::<ResidentShape>().is_err(), "{s}");
        }
    }
}
