// The operands of the relaxation product, shared by relax.wgsl and relax_cooperative.wgsl:
//   A = r_{l+1} * f'_l [B, n_out] (r alone without the derivative), B = W_l [n_out, n_in],
// so M = B, N = n_in, K = n_out. The including kernel declares `pass_`, `layers`, `weights` and
// `fprime`, and supplies read_state(i): element i of the relaxation state the step reads.

const A_K_CONTIGUOUS: bool = true;
const B_K_CONTIGUOUS: bool = false;

fn dims(l: u32) -> vec3<u32> {
    return vec3<u32>(pass_.batch, layers[l].n_in, layers[l].n_out);
}

fn load_a(l: u32, m: u32, k: u32) -> f32 {
    let i = m * layers[l].n_out + k;
    let r = read_state(layers[l].r_out + i);
    if ((pass_.flags & FLAG_NO_RELAX_DERIV) != 0u) {
        return r;
    }
    return r * fprime[layers[l].fp + i];
}

fn load_b(l: u32, k: u32, n: u32) -> f32 {
    return weights[layers[l].w + k * layers[l].n_in + n];
}
