//! LoRA: low-rank adapters on a frozen model's linear layers, a parameter set of their own.
//!
//! An adapted projection (PEFT's `LoraLayer`, dropout 0) adds a scaled low-rank product to
//! the frozen one:
//!   y (n, out) = x · Wᵀ (+ b) + s · (x · Aᵀ) · Bᵀ,   A (r, in), B (out, r), s = α / r
//! with A uniform in ±1/√in and B zero at the start, so the adapted model starts as the
//! base. Only A and B have gradients and AdamW moments; the base's weights get neither.
//!
//! The model fuses some projections (q|k|v, gate|up), so the adapters of one fused layer
//! are fused too: a *slot*'s A stacks its modules' A's, (R, in) with R = Σ r, and its B
//! holds each module's B as a block, (OUT, R): module j's rows are its output columns
//! [col0, col0 + width), its columns its rank rows [rank0, rank0 + r); every other entry
//! of B is zero and stays zero (its gradient is cleared after each backward pass, so
//! AdamW never moves it). Then one pair of products serves the whole slot, the merged
//! weight is W + s·B·A, and PEFT's tensors are blocks of these.
//!
//! Forward, for a slot with input x (n, in) and output y (n, OUT):
//!   u = x · Aᵀ (n, R);   us = s·u (saved);   y += us · Bᵀ
//! Backward, from dy (n, OUT), after the frozen layer has written dx:
//!   dB += dyᵀ · us,  then B's off-block entries of dB cleared
//!   du = s · (dy · B) (n, R);   dA += duᵀ · x;   dx += du · A
//!
//! A model with a scalar head (the reward model, PPO's value) trains the head in full
//! beside the adapters, as PEFT's `modules_to_save` does: its weight (1, C) and bias (1)
//! follow the adapters in their buffer, and the base's copy of them is not read.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

use super::config::GptConfig;
use super::layers::Linear;
use super::params::{LayerParams, ParamLayout, ParamTensor, ScalarHeadParams};
use crate::backend::{at, At, Backend};
use crate::cpu::matmul::MatmulShape;
use crate::error::{KilnError, Result};
use crate::rng::Rng;

/// Which linear layers get adapters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoraTargets {
    /// PEFT's defaults for the family: q_proj and v_proj (Llama, Qwen2, Mistral), c_attn
    /// (GPT-2).
    #[default]
    Attention,
    /// Every linear layer of every block (PEFT's "all-linear"; not the output layer).
    AllLinear,
    /// PEFT's `target_modules` list: a module is adapted when its path is one of these
    /// or ends with "." and one of these ("q_proj", "model.layers.0.mlp.up_proj").
    Modules(Vec<String>),
}

impl LoraTargets {
    fn wants(&self, path: &str, short: &str, attention: &[&str]) -> bool {
        match self {
            LoraTargets::Attention => attention.contains(&short),
            LoraTargets::AllLinear => true,
            LoraTargets::Modules(names) => {
                names.iter().any(|n| path == n || path.strip_suffix(n.as_str()).is_some_and(|p| p.ends_with('.')))
            }
        }
    }
}

/// The adapters' shape: rank, α (the scale is α / r) and targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    #[serde(default)]
    pub targets: LoraTargets,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { r: 8, alpha: 16.0, targets: LoraTargets::Attention }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    pub fn validate(&self) -> Result<()> {
        if !(1..=256).contains(&self.r) {
            return Err(KilnError::Config(format!(
                "loraRank must be 1 to 256 for LoRA (0 trains every weight), not {}",
                self.r
            )));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(KilnError::Config(format!("loraAlpha must be a positive number, not {}", self.alpha)));
        }
        Ok(())
    }
}

/// The linear layers of a block an adapter can sit on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Qkv,
    AttnOut,
    MlpIn,
    MlpOut,
}

impl Slot {
    pub fn linear(self, parts: &super::layers::BlockParts) -> Linear {
        match self {
            Slot::Qkv => parts.qkv,
            Slot::AttnOut => parts.attn_out,
            Slot::MlpIn => parts.mlp_in,
            Slot::MlpOut => parts.mlp_out,
        }
    }
}

/// One PEFT module inside a slot: its name in the model (transformers' module path) and
/// where its A and B lie in the slot's fused ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// e.g. "model.layers.0.self_attn.q_proj", "transformer.h.0.attn.c_attn".
    pub name: String,
    pub rank0: usize,
    pub col0: usize,
    pub width: usize,
}

/// One slot's fused adapter: A (R, in) at `a`, B (OUT, R) at `b` in the adapter buffer.
#[derive(Clone, Debug)]
pub struct SlotAdapter {
    pub slot: Slot,
    pub a: usize,
    pub b: usize,
    pub inp: usize,
    pub out: usize,
    pub rank: usize,
    pub modules: Vec<Module>,
    /// B's entries outside every module's block, as (row0, rows, col0, cols) rectangles.
    zero: Vec<(usize, usize, usize, usize)>,
}

/// Every block's adapters in one flat buffer.
#[derive(Clone, Debug)]
pub struct LoraLayout {
    pub config: LoraConfig,
    /// One list per block, in slot order.
    pub layers: Vec<Vec<SlotAdapter>>,
    pub tensors: Vec<ParamTensor>,
    pub total: usize,
    /// The widest slot rank (the size of the zero row B's clearing reads).
    pub max_rank: usize,
    /// The base's scalar head, trained in full: its place after the adapters.
    pub head: Option<ScalarHeadParams>,
}

/// A linear module: (slot, path, short name, col0, width).
type Candidate = (Slot, String, &'static str, usize, usize);

/// The modules `targets` adapts in block `l`, as (slot, module path, col0, width).
fn targets(cfg: &GptConfig, lp: &LayerParams, l: usize, targets: &LoraTargets) -> Vec<(Slot, String, usize, usize)> {
    let c = cfg.n_embd;
    // every linear module of the block: (slot, path, short name, col0, width)
    let (all, attention): (Vec<Candidate>, &[&str]) = match lp {
        LayerParams::Gpt2(_) => {
            let p = |s: &str| format!("transformer.h.{l}.{s}");
            (
                vec![
                    (Slot::Qkv, p("attn.c_attn"), "c_attn", 0, 3 * c),
                    (Slot::AttnOut, p("attn.c_proj"), "c_proj", 0, c),
                    (Slot::MlpIn, p("mlp.c_fc"), "c_fc", 0, 4 * c),
                    (Slot::MlpOut, p("mlp.c_proj"), "c_proj", 0, c),
                ],
                &["c_attn"],
            )
        }
        LayerParams::Llama(_) => {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let (kvc, h) = (cfg.n_kv_head() * cfg.head_size(), cfg.mlp_width());
            (
                vec![
                    (Slot::Qkv, p("self_attn.q_proj"), "q_proj", 0, c),
                    (Slot::Qkv, p("self_attn.k_proj"), "k_proj", c, kvc),
                    (Slot::Qkv, p("self_attn.v_proj"), "v_proj", c + kvc, kvc),
                    (Slot::AttnOut, p("self_attn.o_proj"), "o_proj", 0, c),
                    (Slot::MlpIn, p("mlp.gate_proj"), "gate_proj", 0, h),
                    (Slot::MlpIn, p("mlp.up_proj"), "up_proj", h, h),
                    (Slot::MlpOut, p("mlp.down_proj"), "down_proj", 0, c),
                ],
                &["q_proj", "v_proj"],
            )
        }
    };
    all.into_iter()
        .filter(|(_, path, short, _, _)| targets.wants(path, short, attention))
        .map(|(slot, path, _, col0, width)| (slot, path, col0, width))
        .collect()
}

/// B's entries no module owns: for each output row range, the rank columns of the other
/// modules (or all of them where no module writes those rows).
fn off_blocks(out: usize, rank: usize, modules: &[Module], r: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut zero = Vec::new();
    let mut row = 0;
    let mut sorted: Vec<&Module> = modules.iter().collect();
    sorted.sort_by_key(|m| m.col0);
    for m in sorted {
        if m.col0 > row {
            zero.push((row, m.col0 - row, 0, rank));
        }
        if m.rank0 > 0 {
            zero.push((m.col0, m.width, 0, m.rank0));
        }
        if m.rank0 + r < rank {
            zero.push((m.col0, m.width, m.rank0 + r, rank - m.rank0 - r));
        }
        row = m.col0 + m.width;
    }
    if row < out {
        zero.push((row, out - row, 0, rank));
    }
    zero
}

impl LoraLayout {
    /// Adapters on `base`'s blocks as `config` targets them, and its scalar head when
    /// it has one.
    pub fn new(cfg: &GptConfig, base: &ParamLayout, config: LoraConfig) -> Result<LoraLayout> {
        config.validate()?;
        let layers = &base.layers;
        let r = config.r;
        let (mut tensors, mut total, mut max_rank) = (Vec::new(), 0, 0);
        let mut out_layers = Vec::new();
        for (l, lp) in layers.iter().enumerate() {
            let parts = lp.parts(cfg);
            let wanted = targets(cfg, lp, l, &config.targets);
            let mut slots = Vec::new();
            for slot in [Slot::Qkv, Slot::AttnOut, Slot::MlpIn, Slot::MlpOut] {
                let mine: Vec<_> = wanted.iter().filter(|w| w.0 == slot).collect();
                if mine.is_empty() {
                    continue;
                }
                let linear = slot.linear(&parts);
                let rank = r * mine.len();
                let modules: Vec<Module> = mine
                    .iter()
                    .enumerate()
                    .map(|(j, (_, name, col0, width))| Module {
                        name: name.clone(),
                        rank0: j * r,
                        col0: *col0,
                        width: *width,
                    })
                    .collect();
                let mut add = |what: &str, shape: Vec<usize>| {
                    let offset = total;
                    total += shape.iter().product::<usize>();
                    tensors.push(ParamTensor {
                        name: format!("layers.{l}.{slot:?}.{what}"),
                        shape,
                        offset,
                        decay: true,
                    });
                    offset
                };
                let a = add("lora_A", vec![rank, linear.inp]);
                let b = add("lora_B", vec![linear.out, rank]);
                max_rank = max_rank.max(rank);
                let zero = off_blocks(linear.out, rank, &modules, r);
                slots.push(SlotAdapter { slot, a, b, inp: linear.inp, out: linear.out, rank, modules, zero });
            }
            out_layers.push(slots);
        }
        if total == 0 {
            return Err(KilnError::Config(format!(
                "the LoRA targets {:?} name none of this model's linear layers",
                config.targets
            )));
        }
        let head = base.scalar_head.map(|h| {
            let c = cfg.n_embd;
            let prefix = h.kind.prefix();
            let (weight, bias) = (total, total + c);
            tensors.push(ParamTensor {
                name: format!("{prefix}.weight"),
                shape: vec![1, c],
                offset: weight,
                decay: true,
            });
            tensors.push(ParamTensor { name: format!("{prefix}.bias"), shape: vec![1], offset: bias, decay: false });
            total += c + 1;
            ScalarHeadParams { kind: h.kind, weight, bias }
        });
        Ok(LoraLayout { config, layers: out_layers, tensors, total, max_rank, head })
    }

    /// The same adapters without the scalar head (a policy's adapters without PPO's
    /// value head): the first `total` values of this layout's are theirs.
    pub fn without_head(&self) -> LoraLayout {
        let Some(h) = self.head else { return self.clone() };
        let mut out = self.clone();
        out.tensors.retain(|t| t.offset < h.weight);
        out.total = h.weight;
        out.head = None;
        out
    }

    /// PEFT's initialisation: A uniform in ±1/√in (kaiming-uniform with a = √5), B zero.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut values = vec![0.0f32; self.total];
        for s in self.layers.iter().flatten() {
            let bound = 1.0 / (s.inp as f64).sqrt();
            for x in &mut values[s.a..s.a + s.rank * s.inp] {
                *x = ((rng.uniform() * 2.0 - 1.0) * bound) as f32;
            }
        }
        values
    }

    pub fn slot(&self, layer: usize, slot: Slot) -> Option<&SlotAdapter> {
        self.layers.get(layer)?.iter().find(|s| s.slot == slot)
    }

    /// Every module's (name, A (r, in), B (width, r)) from the fused buffer: PEFT's
    /// `lora_A.weight` and `lora_B.weight`.
    pub fn peft_tensors(&self, values: &[f32]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let r = self.config.r;
        let mut out = Vec::new();
        for s in self.layers.iter().flatten() {
            for m in &s.modules {
                let a = values[s.a + m.rank0 * s.inp..s.a + (m.rank0 + r) * s.inp].to_vec();
                let mut b = Vec::with_capacity(m.width * r);
                for row in m.col0..m.col0 + m.width {
                    let at = s.b + row * s.rank + m.rank0;
                    b.extend_from_slice(&values[at..at + r]);
                }
                out.push((format!("{}.lora_A.weight", m.name), vec![r, s.inp], a));
                out.push((format!("{}.lora_B.weight", m.name), vec![m.width, r], b));
            }
        }
        for t in self.head_tensors() {
            out.push((t.name.clone(), t.shape.clone(), values[t.offset..t.offset + t.len()].to_vec()));
        }
        out
    }

    /// The scalar head's tensors (PEFT's `modules_to_save` names: "score.weight", …).
    fn head_tensors(&self) -> &[ParamTensor] {
        match self.head {
            Some(h) => &self.tensors[self.tensors.iter().position(|t| t.offset == h.weight).expect("laid out")..],
            None => &[],
        }
    }

    /// The fused buffer from PEFT's tensors, looked up by `get(name)` (without PEFT's
    /// "base_model.model." prefix), each shape checked.
    pub fn from_peft(&self, mut get: impl FnMut(&str, &[usize]) -> Result<Vec<f32>>) -> Result<Vec<f32>> {
        let r = self.config.r;
        let mut values = vec![0.0f32; self.total];
        for s in self.layers.iter().flatten() {
            for m in &s.modules {
                let a = get(&format!("{}.lora_A.weight", m.name), &[r, s.inp])?;
                values[s.a + m.rank0 * s.inp..s.a + (m.rank0 + r) * s.inp].copy_from_slice(&a);
                let b = get(&format!("{}.lora_B.weight", m.name), &[m.width, r])?;
                for (i, row) in (m.col0..m.col0 + m.width).enumerate() {
                    let at = s.b + row * s.rank + m.rank0;
                    values[at..at + r].copy_from_slice(&b[i * r..(i + 1) * r]);
                }
            }
        }
        for t in self.head_tensors() {
            values[t.offset..t.offset + t.len()].copy_from_slice(&get(&t.name, &t.shape)?);
        }
        Ok(values)
    }

    /// The base's values (of `layout`) with every adapter merged in: W += s · B·A for each
    /// slot's (OUT, in) product, transposed into Conv1D's (in, OUT) storage; the trained
    /// scalar head in place of the base's.
    pub fn merge(&self, cfg: &GptConfig, layout: &ParamLayout, base: &mut [f32], values: &[f32]) {
        let s = self.config.scale();
        if let (Some(h), Some(to)) = (self.head, layout.scalar_head) {
            let c = cfg.n_embd;
            base[to.weight..to.weight + c].copy_from_slice(&values[h.weight..h.weight + c]);
            base[to.bias] = values[h.bias];
        }
        for (lp, slots) in layout.layers.iter().zip(&self.layers) {
            let parts = lp.parts(cfg);
            for sa in slots {
                let linear = sa.slot.linear(&parts);
                let (a, b) = (&values[sa.a..sa.a + sa.rank * sa.inp], &values[sa.b..sa.b + sa.out * sa.rank]);
                for o in 0..sa.out {
                    let brow = &b[o * sa.rank..(o + 1) * sa.rank];
                    if brow.iter().all(|&x| x == 0.0) {
                        continue;
                    }
                    for i in 0..sa.inp {
                        let d: f64 = (0..sa.rank).map(|k| brow[k] as f64 * a[k * sa.inp + i] as f64).sum();
                        let w = if linear.out_by_in { o * sa.inp + i } else { i * sa.out + o };
                        base[linear.weight + w] += (s * d) as f32;
                    }
                }
            }
        }
    }
}

/// Device memory training `cfg` with these adapters takes at B × T: the frozen weights;
/// the adapters, their gradients and AdamW's moments; the activations, as full training
/// keeps them, plus each adapted slot's three (B·T, R) buffers.
pub fn memory(cfg: &GptConfig, lora: &LoraConfig, b: usize, t: usize) -> Result<super::config::MemoryEstimate> {
    let layout = LoraLayout::new(cfg, &ParamLayout::new(cfg), lora.clone())?;
    let full = cfg.memory(b, t);
    let (f, n, bt) = (4u64, layout.total as u64, (b * t) as u64);
    let scratch: u64 = layout.layers.iter().flatten().map(|s| 3 * bt * s.rank as u64).sum();
    Ok(super::config::MemoryEstimate {
        params: full.params + f * n,
        // the adapters' gradients, and the frozen norms' weight gradients' sink
        grads: f * (n + 2 * cfg.n_embd as u64),
        optimizer: 2 * f * n + f * n.div_ceil(32),
        activations: full.activations + f * scratch,
    })
}

/// The adapters on a backend: values, gradients, and whether the model uses them (off:
/// the base itself, which is DPO's and PPO's reference, as TRL does with PEFT).
pub struct Lora<B: Backend> {
    pub layout: LoraLayout,
    pub params: B::Buf,
    pub grads: B::Buf,
    /// `max_rank` zeros: what B's off-block gradients are overwritten from.
    zeros: B::Buf,
    pub on: Cell<bool>,
}

impl<B: Backend> Lora<B> {
    pub fn new(be: &mut B, layout: LoraLayout, values: &[f32]) -> Result<Lora<B>> {
        assert_eq!(values.len(), layout.total, "adapter parameter count");
        Ok(Lora {
            params: be.upload(values)?,
            grads: be.zeros(layout.total)?,
            zeros: be.zeros(layout.max_rank.max(1))?,
            on: Cell::new(true),
            layout,
        })
    }

    /// The slot's adapter when adapters are on.
    pub fn active(&self, layer: usize, slot: Slot) -> Option<&SlotAdapter> {
        if self.on.get() {
            self.layout.slot(layer, slot)
        } else {
            None
        }
    }

    fn scale(&self) -> f32 {
        self.layout.config.scale() as f32
    }

    /// y (n, OUT) += s · (x · Aᵀ) · Bᵀ, keeping us = s·(x·Aᵀ) (n, R) for the backward pass.
    pub fn forward(
        &self,
        be: &mut B,
        sa: &SlotAdapter,
        scratch: &LoraScratch<B::Buf>,
        y: At<B::Buf>,
        x: At<B::Buf>,
        n: usize,
    ) {
        let (p, r) = (&self.params, sa.rank);
        be.matmul(at(&scratch.u, 0), x, at(p, sa.a), None, MatmulShape::nt(n, r, sa.inp), false);
        be.axpy(at(&scratch.us, 0), n * r, at(&scratch.u, 0), n * r, 1, n * r, self.scale(), false);
        be.matmul(y, at(&scratch.us, 0), at(p, sa.b), None, MatmulShape::nt(n, sa.out, r), true);
    }

    /// The adapter's gradients from dy (n, OUT), and dx (n, in) += its share.
    pub fn backward(
        &self,
        be: &mut B,
        sa: &SlotAdapter,
        scratch: &LoraScratch<B::Buf>,
        dx: &B::Buf,
        x: &B::Buf,
        dy: &B::Buf,
        n: usize,
    ) {
        let (p, g, r) = (&self.params, &self.grads, sa.rank);
        be.matmul(at(g, sa.b), at(dy, 0), at(&scratch.us, 0), None, MatmulShape::tn(sa.out, r, n), true);
        for &(row0, rows, col0, cols) in &sa.zero {
            be.axpy(at(g, sa.b + row0 * r + col0), r, at(&self.zeros, 0), 0, rows, cols, 0.0, false);
        }
        // u is free in the backward pass: it holds dy·B, then du = s·(dy·B)
        be.matmul(at(&scratch.u, 0), at(dy, 0), at(p, sa.b), None, MatmulShape::nn(n, r, sa.out), false);
        be.axpy(at(&scratch.du, 0), n * r, at(&scratch.u, 0), n * r, 1, n * r, self.scale(), false);
        be.matmul(at(g, sa.a), at(&scratch.du, 0), at(x, 0), None, MatmulShape::tn(r, sa.inp, n), true);
        be.matmul(at(dx, 0), at(&scratch.du, 0), at(p, sa.a), None, MatmulShape::nn(n, sa.inp, r), true);
    }
}

/// One slot's buffers for `n` rows, (n, R) each: u = x·Aᵀ (and dy·B in the backward
/// pass), us = s·u (kept from the forward pass), du.
pub struct LoraScratch<T> {
    pub u: T,
    pub us: T,
    pub du: T,
}

impl<T> LoraScratch<T> {
    /// A block's scratch, one per slot in `Slot` order (None where the slot has none).
    pub fn for_block<B: Backend<Buf = T>>(be: &mut B, slots: &[SlotAdapter], rows: usize) -> Result<[Option<Self>; 4]> {
        let mut out: [Option<Self>; 4] = [None, None, None, None];
        for sa in slots {
            let n = rows * sa.rank;
            out[sa.slot as usize] = Some(LoraScratch { u: be.zeros(n)?, us: be.zeros(n)?, du: be.zeros(n)? });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::ParamLayout;

    fn llama() -> GptConfig {
        use crate::cpu::rope::RopeScaling;
        use crate::model::config::{Family, LlamaArch, LlamaShape};
        let shape = LlamaShape {
            arch: LlamaArch::Llama,
            n_kv_head: 1,
            intermediate_size: 24,
            qkv_bias: false,
            tie_word_embeddings: true,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::None,
        };
        GptConfig { family: Family::Llama(shape), ..GptConfig::gpt2(64, 16, 2, 2, 8) }
    }

    #[test]
    fn off_blocks_cover_every_entry_no_module_owns() {
        for cfg in [GptConfig::gpt2(64, 16, 2, 2, 8), llama()] {
            for targets in [LoraTargets::Attention, LoraTargets::AllLinear] {
                let layout = ParamLayout::new(&cfg);
                let lora =
                    LoraLayout::new(&cfg, &layout, LoraConfig { r: 2, alpha: 4.0, targets: targets.clone() }).unwrap();
                for s in lora.layers.iter().flatten() {
                    let mut owner = vec![0u8; s.out * s.rank];
                    for m in &s.modules {
                        for row in m.col0..m.col0 + m.width {
                            for k in m.rank0..m.rank0 + 2 {
                                owner[row * s.rank + k] += 1;
                            }
                        }
                    }
                    for &(row0, rows, col0, cols) in &s.zero {
                        for row in row0..row0 + rows {
                            for k in col0..col0 + cols {
                                owner[row * s.rank + k] += 2;
                            }
                        }
                    }
                    assert!(owner.iter().all(|&o| o == 1 || o == 2), "{targets:?} {:?}", s.slot);
                }
            }
        }
    }

    #[test]
    fn peft_tensors_round_trip() {
        let cfg = llama();
        let layout = ParamLayout::new(&cfg);
        let lora =
            LoraLayout::new(&cfg, &layout, LoraConfig { r: 2, alpha: 4.0, targets: LoraTargets::AllLinear }).unwrap();
        let mut values = lora.init(1);
        // B's blocks filled, off-blocks left zero
        for (name, shape, _) in lora.peft_tensors(&values.clone()) {
            assert!(name.starts_with("model.layers."), "{name}");
            assert_eq!(shape.len(), 2);
        }
        let tensors = lora.peft_tensors(&values);
        let mut filled: Vec<_> =
            tensors.into_iter().map(|(n, s, v)| (n, s, v.iter().map(|x| x + 0.5).collect::<Vec<f32>>())).collect();
        values = lora
            .from_peft(|name, shape| {
                let t = filled.iter().find(|t| t.0 == name).expect(name);
                assert_eq!(t.1, shape);
                Ok(t.2.clone())
            })
            .unwrap();
        let again = lora.peft_tensors(&values);
        filled.sort_by(|a, b| a.0.cmp(&b.0));
        let mut again = again;
        again.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(again, filled);
    }
}
