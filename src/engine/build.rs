//! Building an engine: its kernels, buffers, uniforms and bind groups, all made once per model,
//! batch size and set of options, so that encoding a step only records dispatches.

use std::cell::Cell;
use std::sync::Arc;

use super::*;

impl Kernels {
    /// `fused_sgd`: also the gradient kernels' SGD entries (`split` says which one is used).
    fn new(
        ctx: &GpuContext,
        shapes: &Shapes,
        derivative: bool,
        fused_sgd: bool,
        split: bool,
    ) -> Self {
        use Slot::*;
        let check = shader::module(ctx, "relax_check.wgsl");
        let loss = shader::module(ctx, "loss.wgsl");
        let sgd = shader::module(ctx, "sgd.wgsl");
        let grad_sum = shader::module(ctx, "grad_sum.wgsl");
        let grad = [
            Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite,
        ];
        let sum = Kernel::new(
            ctx,
            &grad_sum,
            "grad_sum",
            &[Uniform, Read, ReadWrite, ReadWrite, ReadWrite],
        );
        Self {
            forward: TiledKernel::new(
                ctx,
                "forward.wgsl",
                "forward_fused",
                &[
                    Uniform, Read, Read, ReadWrite, ReadWrite, Read, ReadWrite, ReadWrite,
                    ReadWrite,
                ],
                &shapes.forward,
            ),
            derivative: derivative.then(|| {
                TiledKernel::new(
                    ctx,
                    "forward.wgsl",
                    "forward",
                    &[Uniform, Read, Read, ReadWrite, ReadWrite],
                    &[shapes.derivative],
                )
            }),
            relax: TiledKernel::new(
                ctx,
                "relax.wgsl",
                "relax",
                &[Uniform, Read, Read, Read, Read, ReadWrite, ReadWrite],
                &shapes.relax_shapes(),
            ),
            relax_check: Kernel::new(ctx, &check, "relax_check", &[Uniform, ReadWrite]),
            param_grad: TiledKernel::new(ctx, "grad.wgsl", "param_grad", &grad, &[shapes.grad]),
            param_grad_sgd: (fused_sgd && !split).then(|| {
                TiledKernel::new(ctx, "grad.wgsl", "param_grad_sgd", &grad, &[shapes.grad])
            }),
            loss: Kernel::new(
                ctx,
                &loss,
                "output_error",
                &[Uniform, Read, Read, ReadWrite, ReadWrite, ReadWrite],
            ),
            sgd: Kernel::new(ctx, &sgd, "sgd", &[Uniform, Read, ReadWrite]),
            grad_sum_sgd: (fused_sgd && split).then(|| {
                // One bind group serves both entries.
                Kernel::with_layout(ctx, &grad_sum, "grad_sum_sgd", sum.layout.clone())
            }),
            grad_sum: sum,
        }
    }
}

impl Engine {
    pub fn new(ctx: Arc<GpuContext>, spec: &ModelSpec, opts: EngineOptions) -> Result<Self> {
        check_options(&opts)?;
        ctx.check_tiles(opts.tile)?;
        let layout = Layout::replicated(spec, opts.batch, opts.replicas);
        let limit = ctx.limits.max_storage_buffer_binding_size;
        if layout.max_buffer_bytes() > limit {
            return Err(Error::Gpu(format!(
                "the model at batch {} needs a {} MiB buffer but the device allows {} MiB per \
                 binding (max_storage_buffer_binding_size); use a smaller batch size or narrower layers",
                opts.batch,
                layout.max_buffer_bytes().div_ceil(1 << 20),
                limit >> 20
            )));
        }
        if u32::try_from(layout.x_len.max(layout.params_len)).is_err() {
            return Err(Error::Config("model too large for 32-bit offsets".into()));
        }
        let parts_bytes = (opts.grad_split * layout.params_len * 4) as u64;
        if opts.grad_split > 1 && parts_bytes > limit {
            return Err(Error::Config(format!(
                "{} K chunks of the weight gradients need a {} MiB buffer; the device allows {} \
                 MiB per binding: use fewer chunks (grad split)",
                opts.grad_split,
                parts_bytes.div_ceil(1 << 20),
                limit >> 20
            )));
        }
        check_resident(&opts)?;
        let device = &ctx.device;
        let shapes = Shapes::new(&layout, opts.tile.for_adapter(ctx.info.device_type));
        let needs_derivative = opts.relax_fprime_current || opts.update_fprime_current;
        let kernels = Kernels::new(
            &ctx,
            &shapes,
            needs_derivative,
            opts.fused_update,
            opts.grad_split > 1,
        );
        let b = opts.batch;
        let rows = layout.rows();
        let n_out = spec.output_width();
        let bufs = Buffers {
            table: buffers::storage_init(device, "layers", &layout.layers),
            params: buffers::storage(device, "params", layout.params_len),
            feedback: (opts.feedback != Feedback::Transpose)
                .then(|| buffers::storage(device, "feedback", layout.params_len)),
            x: buffers::storage(device, "x", layout.x_len),
            fprime: buffers::storage(device, "fprime", layout.fp_len),
            r: [
                buffers::storage(device, "r0", layout.r_len),
                buffers::storage(device, "r1", layout.r_len),
            ],
            target: buffers::storage(device, "target", rows * n_out),
            stats: buffers::storage(device, "stats", 2 * rows),
            grads: buffers::storage(device, "grads", layout.params_len),
            grad_parts: (opts.grad_split > 1).then(|| {
                buffers::storage(
                    device,
                    "weight-gradient chunks",
                    opts.grad_split * layout.params_len,
                )
            }),
            conv: buffers::storage(
                device,
                "relaxation convergence",
                4 + 2 * layout.layers.len(),
            ),
            fp_cur: buffers::storage(device, "fprime at the current state", layout.fp_len),
        };
        let depth = spec.depth();
        let flags = opts.derivative_flags();
        let adaptive = if opts.relax_tol.is_some() {
            FLAG_ADAPTIVE
        } else {
            0
        };
        let pass = |first, count, rate, flags| layout.pass(first, count, rate, flags);
        let k = &kernels;
        let loss_scale = opts.reduction.scale(b) as f32;
        let output_error_fused = shapes.forward[depth - 1].tn as usize >= n_out;
        let forward = (0..depth)
            .map(|l| {
                let flags = if l + 1 < depth {
                    if opts.start == RelaxStart::Forward {
                        FLAG_WRITE_START
                    } else {
                        0
                    }
                } else if output_error_fused {
                    FLAG_OUTPUT_ERROR
                        | match spec.loss {
                            crate::model::Loss::Mse => 0,
                            crate::model::Loss::Ce => FLAG_LOSS_CE,
                        }
                } else {
                    0
                };
                let u = buffers::uniform(device, "forward pass", &pass(l, 1, loss_scale, flags));
                k.forward.bind(
                    device,
                    &[
                        &u,
                        &bufs.table,
                        &bufs.params,
                        &bufs.x,
                        &bufs.fprime,
                        &bufs.target,
                        &bufs.r[0],
                        &bufs.r[1],
                        &bufs.stats,
                    ],
                )
            })
            .collect();
        let (x_l, _) = layout.x_block(depth);
        let (r_l, _) = layout.r_block(depth);
        let loss_u = buffers::uniform(
            device,
            "loss pass",
            &LossUniform {
                x_off: x_l as u32,
                r_off: r_l as u32,
                width: n_out as u32,
                batch: rows as u32,
                kind: match spec.loss {
                    crate::model::Loss::Mse => 0,
                    crate::model::Loss::Ce => 1,
                },
                scale: loss_scale,
                pad: [0; 2],
            },
        );
        let loss = k.loss.bind(
            device,
            &[
                &loss_u,
                &bufs.x,
                &bufs.target,
                &bufs.r[0],
                &bufs.r[1],
                &bufs.stats,
            ],
        );
        let relax_weights = bufs.feedback.as_ref().unwrap_or(&bufs.params);
        let relax_uniform = buffers::uniform(
            device,
            "relax pass",
            &pass(1, depth - 1, opts.relax_rate, flags | adaptive),
        );
        let relax_fp = if opts.relax_fprime_current {
            &bufs.fp_cur
        } else {
            &bufs.fprime
        };
        let relax_bind = |u: &wgpu::Buffer, w: &wgpu::Buffer, fp: &wgpu::Buffer, src: usize| {
            k.relax.bind(
                device,
                &[
                    u,
                    &bufs.table,
                    w,
                    fp,
                    &bufs.r[src],
                    &bufs.r[1 - src],
                    &bufs.conv,
                ],
            )
        };
        let relax_single_uniforms: Vec<wgpu::Buffer> = (0..depth)
            .map(|l| buffers::uniform(device, "sweep pass", &pass(l, 1, opts.relax_rate, flags)))
            .collect();
        let relax_single = relax_single_uniforms
            .iter()
            .enumerate()
            .map(|(l, u)| (l >= 1).then(|| relax_bind(u, relax_weights, relax_fp, 0)))
            .collect();
        let check_u = buffers::uniform(
            device,
            "relax check",
            &CheckUniform {
                tol: opts.relax_tol.unwrap_or(0.0),
                first: layout.entries(1, depth - 1).0,
                count: layout.entries(1, depth - 1).1,
                pad: 0,
            },
        );
        let relax_check = k.relax_check.bind(device, &[&check_u, &bufs.conv]);
        let resident = if opts.relax_kernel == RelaxKernel::Resident {
            Some(Resident::new(
                &ctx,
                &layout,
                &opts,
                flags,
                [relax_weights, relax_fp],
                &bufs,
            )?)
        } else {
            None
        };
        let cooperative = if opts.relax_kernel == RelaxKernel::Cooperative {
            Some(Cooperative::new(
                &ctx,
                &layout,
                &opts,
                shapes.relax,
                flags,
                [relax_weights, relax_fp],
                &bufs,
            )?)
        } else {
            None
        };
        let relax_all = [
            relax_bind(&relax_uniform, relax_weights, relax_fp, 0),
            relax_bind(&relax_uniform, relax_weights, relax_fp, 1),
        ];
        let derivative_u = buffers::uniform(
            device,
            "derivative pass",
            &pass(1, depth - 1, 0.0, FLAG_FPRIME_ONLY),
        );
        let derivative = k.derivative.as_ref().map(|kernel| {
            let bind = |src: usize| {
                kernel.bind(
                    device,
                    &[
                        &derivative_u,
                        &bufs.table,
                        &bufs.params,
                        &bufs.r[src],
                        &bufs.fp_cur,
                    ],
                )
            };
            [bind(0), bind(1)]
        });
        let relax_exact = (0..depth)
            .map(|l| {
                (l >= 1).then(|| {
                    let u = buffers::uniform(device, "backprop pass", &pass(l, 1, 1.0, 0));
                    relax_bind(&u, &bufs.params, &bufs.fprime, 0)
                })
            })
            .collect();
        // With a split, K chunks of every tile, into the chunks' buffer. The lr, ψ's decay and
        // its flag are for the SGD entries (fused_update): the products' when unsplit, else the
        // sum's; the plain entries ignore them.
        let learned = opts.feedback == Feedback::Learned;
        let feedback_flag = if learned { FLAG_SGD_FEEDBACK } else { 0 };
        let grad_pass = |flags: u32| PassUniform {
            split: opts.grad_split as u32,
            part_len: layout.params_len as u32,
            decay: opts.feedback_decay,
            ..pass(0, depth, opts.lr, flags | feedback_flag)
        };
        // AR's (with the variant's flags) and backprop's.
        let grad_uniforms: Vec<(wgpu::Buffer, PassUniform)> = [grad_pass(flags), grad_pass(0)]
            .into_iter()
            .map(|p| (buffers::uniform(device, "grad pass", &p), p))
            .collect();
        let grad_out = bufs.grad_parts.as_ref().unwrap_or(&bufs.grads);
        let update_fp = if opts.update_fprime_current {
            &bufs.fp_cur
        } else {
            &bufs.fprime
        };
        // ψ where it learns; else a stand-in that the kernels never touch.
        let unused = buffers::storage(device, "unused", 1);
        let feedback_out = bufs
            .feedback
            .as_ref()
            .filter(|_| learned)
            .unwrap_or(&unused);
        let grad_bind = |u: &wgpu::Buffer, fp: &wgpu::Buffer, src: usize| {
            let b = [
                u,
                &bufs.table,
                &bufs.x,
                fp,
                &bufs.r[src],
                grad_out,
                &bufs.params,
                feedback_out,
            ];
            k.param_grad.bind(device, &b)
        };
        let grad_sum_uniform = (opts.grad_split > 1).then(|| {
            let p = GradSumUniform {
                count: layout.params_len as u32,
                split: opts.grad_split as u32,
                flags: feedback_flag,
                lr: opts.lr,
                decay: opts.feedback_decay,
                pad: [0; 3],
            };
            (buffers::uniform(device, "grad sum", &p), p)
        });
        let sgd_uniform = buffers::uniform(
            device,
            "sgd",
            &SgdUniform {
                count: layout.params_len as u32,
                lr: opts.lr,
                decay: 0.0,
                pad: 0,
            },
        );
        let sgd_feedback_uniform = buffers::uniform(
            device,
            "sgd feedback",
            &SgdUniform {
                count: layout.params_len as u32,
                lr: opts.lr,
                decay: opts.feedback_decay,
                pad: 0,
            },
        );
        let binds = Binds {
            forward,
            loss,
            relax_all,
            relax_exact,
            relax_single,
            relax_check,
            resident,
            cooperative,
            derivative,
            param_grad: [0, 1].map(|src| grad_bind(&grad_uniforms[0].0, update_fp, src)),
            param_grad_exact: grad_bind(&grad_uniforms[1].0, &bufs.fprime, 0),
            grad_sum: bufs.grad_parts.as_ref().zip(grad_sum_uniform.as_ref()).map(
                |(parts, (u, _))| {
                    let b = [u, parts, &bufs.grads, &bufs.params, feedback_out];
                    k.grad_sum.bind(device, &b)
                },
            ),
            sgd_params: k
                .sgd
                .bind(device, &[&sgd_uniform, &bufs.grads, &bufs.params]),
            sgd_feedback: bufs
                .feedback
                .as_ref()
                .filter(|_| opts.feedback == Feedback::Learned)
                .map(|f| k.sgd.bind(device, &[&sgd_feedback_uniform, &bufs.grads, f])),
        };
        let engine = Self {
            ctx,
            spec: spec.clone(),
            opts,
            layout,
            bufs,
            kernels,
            shapes,
            binds,
            relax_uniform,
            relax_single_uniforms,
            sgd_uniform,
            sgd_feedback_uniform,
            grad_uniforms,
            grad_sum_uniform,
            current: 0,
            output_error_fused,
            start_written: Cell::new(false),
            timer: Default::default(),
        };
        engine.ctx.check()?;
        Ok(engine)
    }
}
