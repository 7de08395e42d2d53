//! Every CPU backward pass against central finite differences, in f64.
//!
//! Each test builds a scalar loss L = Σ output ⊙ G (G random) — or the weighted loss
//! itself for cross-entropy — perturbs every input element by ±h and compares
//! (L(x + h) − L(x − h)) / 2h with the analytic gradient from the twin's backward.
//! In f64 with h = 1e-5 the truncation error is O(h²) ≈ 1e-10 and the rounding error
//! about ε·|L|/h ≈ 1e-10, so 1e-7 (relative to the gradient's largest element) is
//! a tolerance no wrong gradient passes.

use kiln::cpu::attention::{attention_backward, attention_forward, qkv_width};
use kiln::cpu::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use kiln::cpu::embedding::{embedding_backward, embedding_forward};
use kiln::cpu::gelu::{gelu_backward, gelu_forward};
use kiln::cpu::layernorm::{layernorm_backward, layernorm_forward};
use kiln::cpu::matmul::{matmul, MatmulShape};
use kiln::cpu::residual::{residual_backward, residual_forward};
use kiln::cpu::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use kiln::cpu::rope::{rope_backward, rope_forward, rope_inv_freq, RopeScaling};
use kiln::cpu::sum_rows::sum_rows;
use kiln::cpu::swiglu::{swiglu_backward, swiglu_forward};
use kiln::rng::Rng;

const H: f64 = 1e-5;
const TOLERANCE: f64 = 1e-7;

fn random(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.range(-1.0, 1.0)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compares `analytic` with central differences of `loss` around `x`; returns the max
/// relative error and asserts it is within tolerance.
fn check(name: &str, x: &[f64], analytic: &[f64], loss: impl Fn(&[f64]) -> f64) -> f64 {
    assert_eq!(x.len(), analytic.len());
    let mut x = x.to_vec();
    let scale = analytic.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 0.0, "{name}: the analytic gradient is all zero");
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let keep = x[i];
        x[i] = keep + H;
        let plus = loss(&x);
        x[i] = keep - H;
        let minus = loss(&x);
        x[i] = keep;
        let numeric = (plus - minus) / (2.0 * H);
        worst = worst.max((numeric - analytic[i]).abs() / scale);
    }
    println!("{name:<40} {} elements, max rel err {worst:.2e} (tolerance {TOLERANCE:.0e})", x.len());
    assert!(worst <= TOLERANCE, "{name}: finite differences disagree, max rel err {worst:.3e}");
    worst
}

#[test]
fn linear_layer_backward() {
    // out (M×N) = A (M×K) · Wᵀ (W stored N×K) + bias: the three products of a linear layer.
    let (m, n, k) = (5, 7, 3);
    let rng = &mut Rng::new(1);
    let (a, w, bias, g) = (random(rng, m * k), random(rng, n * k), random(rng, n), random(rng, m * n));
    let forward = |a: &[f64], w: &[f64], bias: &[f64]| {
        let mut out = vec![0.0; m * n];
        matmul(&mut out, a, w, Some(bias), MatmulShape::nt(m, n, k), false);
        dot(&out, &g)
    };
    let (mut da, mut dw, mut dbias) = (vec![0.0; m * k], vec![0.0; n * k], vec![0.0; n]);
    matmul(&mut da, &g, &w, None, MatmulShape::nn(m, k, n), false); // dA = G · W
    matmul(&mut dw, &g, &a, None, MatmulShape::tn(n, k, m), false); // dW = Gᵀ · A
    sum_rows(&mut dbias, &g, m, n, false); // dbias = Σ_rows G
    check("matmul: dA = G·W", &a, &da, |x| forward(x, &w, &bias));
    check("matmul: dW = Gᵀ·A", &w, &dw, |x| forward(&a, x, &bias));
    check("sum_rows: dbias", &bias, &dbias, |x| forward(&a, &w, x));
}

#[test]
fn attention_backward_matches_finite_differences() {
    // (B, T, C, NH, NKV): multi-head, then grouped-query (each kv head serving two query
    // heads, its dk and dv the sum of theirs) and multi-query attention (NKV = 1)
    for (b, t, c, nh, nkv) in [(1, 1, 2, 1, 1), (2, 5, 8, 2, 2), (1, 7, 6, 3, 3), (2, 5, 8, 4, 2), (1, 6, 9, 3, 1)] {
        let rng = &mut Rng::new(2);
        let w = qkv_width(c, nh, nkv);
        let (qkv, g) = (random(rng, b * t * w), random(rng, b * t * c));
        let forward = |qkv: &[f64]| {
            let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
            attention_forward(&mut out, &mut lse, qkv, b, t, c, nh, nkv, 0, t);
            dot(&out, &g)
        };
        let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * nh * t]);
        attention_forward(&mut out, &mut lse, &qkv, b, t, c, nh, nkv, 0, t);
        let (mut dqkv, mut delta) = (vec![0.0; b * t * w], vec![0.0; b * nh * t]);
        attention_backward(&mut dqkv, &mut delta, &g, &qkv, &out, &lse, b, t, c, nh, nkv);
        check(&format!("attention B={b} T={t} C={c} NH={nh} NKV={nkv}"), &qkv, &dqkv, forward);
    }
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let (n, v) = (6, 11);
    let rng = &mut Rng::new(3);
    let logits: Vec<f64> = random(rng, n * v).iter().map(|x| 3.0 * x).collect();
    let targets: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
    let weights = vec![0.5, 0.0, 0.25, 1.0, 0.0, 0.125]; // zeros mask positions out
    let loss = |logits: &[f64]| {
        let mut losses = vec![0.0; n];
        cross_entropy_forward(&mut losses, logits, &targets, &weights, n, v);
        losses.iter().sum::<f64>()
    };
    let mut dlogits = logits.clone(); // the gradient is written in place of the logits
    cross_entropy_backward(&mut dlogits, &targets, &weights, n, v);
    check("cross_entropy (weighted, masked)", &logits, &dlogits, loss);
    assert!(dlogits[v..2 * v].iter().all(|&d| d == 0.0), "a masked row has a gradient");
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    let (n, c) = (4, 9);
    let rng = &mut Rng::new(4);
    let (inp, weight, bias, g) = (random(rng, n * c), random(rng, c), random(rng, c), random(rng, n * c));
    let forward = |inp: &[f64], weight: &[f64], bias: &[f64]| {
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut out, &mut mean, &mut rstd, inp, weight, bias, n, c);
        dot(&out, &g)
    };
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, n, c);
    let (mut dinp, mut dweight, mut dbias) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    layernorm_backward(&mut dinp, &mut dweight, &mut dbias, &g, &inp, &weight, &mean, &rstd, n, c);
    check("layernorm: dinp", &inp, &dinp, |x| forward(x, &weight, &bias));
    check("layernorm: dweight", &weight, &dweight, |x| forward(&inp, x, &bias));
    check("layernorm: dbias", &bias, &dbias, |x| forward(&inp, &weight, x));
}

#[test]
fn gelu_backward_matches_finite_differences() {
    let rng = &mut Rng::new(5);
    let inp: Vec<f64> = random(rng, 40).iter().map(|x| 5.0 * x).collect();
    let g = random(rng, 40);
    let forward = |x: &[f64]| {
        let mut out = vec![0.0; x.len()];
        gelu_forward(&mut out, x);
        dot(&out, &g)
    };
    let mut dinp = vec![0.0; inp.len()];
    gelu_backward(&mut dinp, &inp, &g);
    check("gelu", &inp, &dinp, forward);
}

#[test]
fn residual_backward_matches_finite_differences() {
    let rng = &mut Rng::new(6);
    let (a, b, g) = (random(rng, 10), random(rng, 10), random(rng, 10));
    let forward = |a: &[f64], b: &[f64]| {
        let mut out = vec![0.0; a.len()];
        residual_forward(&mut out, a, b);
        dot(&out, &g)
    };
    let (mut da, mut db) = (vec![0.0; 10], vec![0.0; 10]);
    residual_backward(&mut da, &mut db, &g);
    check("residual: dinp1", &a, &da, |x| forward(x, &b));
    check("residual: dinp2", &b, &db, |x| forward(&a, x));
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let (b, t, c, v) = (2, 5, 3, 4);
    let rng = &mut Rng::new(7);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
    let (wte, wpe, g) = (random(rng, v * c), random(rng, t * c), random(rng, b * t * c));
    let forward = |wte: &[f64], wpe: &[f64]| {
        let mut out = vec![0.0; b * t * c];
        embedding_forward(&mut out, &tokens, wte, Some(wpe), b, t, c);
        dot(&out, &g)
    };
    let (mut dwte, mut dwpe) = (vec![0.0; v * c], vec![0.0; t * c]);
    embedding_backward(&mut dwte, Some(&mut dwpe), &g, &tokens, b, t, c);
    check("embedding: dwte", &wte, &dwte, |x| forward(x, &wpe));
    check("embedding: dwpe", &wpe, &dwpe, |x| forward(&wte, x));
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let (n, c, eps) = (4, 9, 1e-5);
    let rng = &mut Rng::new(8);
    let (inp, weight, g) = (random(rng, n * c), random(rng, c), random(rng, n * c));
    let forward = |inp: &[f64], weight: &[f64]| {
        let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
        rmsnorm_forward(&mut out, &mut rstd, inp, weight, n, c, eps);
        dot(&out, &g)
    };
    let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
    rmsnorm_forward(&mut out, &mut rstd, &inp, &weight, n, c, eps);
    let (mut dinp, mut dweight) = (vec![0.0; n * c], vec![0.0; c]);
    rmsnorm_backward(&mut dinp, &mut dweight, &g, &inp, &weight, &rstd, n, c);
    check("rmsnorm: dinp", &inp, &dinp, |x| forward(x, &weight));
    check("rmsnorm: dweight", &weight, &dweight, |x| forward(&inp, x));
}

#[test]
fn rope_backward_matches_finite_differences() {
    // a fused qkv (B, T, 3C), C = 8, NH = 2 (HS = 4): q's and k's 4 heads turned, v kept;
    // positions from 3 on (a decode offset), llama3-scaled frequencies
    let (b, t, c, nh, pos0) = (2, 3, 8, 2, 3);
    let (stride, heads, hs) = (3 * c, 2 * nh, c / nh);
    let scaling = RopeScaling::Llama3 {
        factor: 4.0,
        low_freq_factor: 1.0,
        high_freq_factor: 2.0,
        original_max_position_embeddings: 40.0,
    };
    let inv_freq: Vec<f64> = rope_inv_freq(hs, 100.0, scaling).iter().map(|&f| f as f64).collect();
    let rng = &mut Rng::new(9);
    let (x, g) = (random(rng, b * t * stride), random(rng, b * t * stride));
    let forward = |x: &[f64]| {
        let mut out = x.to_vec();
        rope_forward(&mut out, &inv_freq, b, t, stride, heads, hs, pos0);
        dot(&out, &g)
    };
    let mut dx = g.clone(); // the gradient is turned back in place
    rope_backward(&mut dx, &inv_freq, b, t, stride, heads, hs, pos0);
    check("rope (qkv, llama3 scaling)", &x, &dx, forward);
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let (n, h) = (3, 5);
    let rng = &mut Rng::new(10);
    let inp: Vec<f64> = random(rng, n * 2 * h).iter().map(|x| 5.0 * x).collect();
    let g = random(rng, n * h);
    let forward = |inp: &[f64]| {
        let mut out = vec![0.0; n * h];
        swiglu_forward(&mut out, inp, n, h);
        dot(&out, &g)
    };
    let mut dinp = vec![0.0; n * 2 * h];
    swiglu_backward(&mut dinp, &inp, &g, n, h);
    check("swiglu: [dgate | dup]", &inp, &dinp, forward);
}
