//! A model that came in 16 bits keeps its frozen matrices in 16 bits on the GPU
//! (`model::weights`): an imported folder in bf16 or f16 (tests/golden/smollm2_like
//! rounded to each), on lavapipe, against the same folder kept in f32 on the same device.
//! The weights take about half the memory, and everything else is bit for bit the same:
//! the logits and the frozen weights read back (both formats), LoRA SFT's losses and
//! adapters, and full fine-tuning from the 16-bit copy widened on the device (bf16).

use kiln::backend::{BackendKind, HalfFormat};
use kiln::checkpoint::{load_model, read_dir, Files};
use kiln::data::corpus::Language;
use kiln::gpu::Gpu;
use kiln::session::{Session, StageData};
use kiln::train::{StageKind, TrainConfig};
use kiln::with_run;
use pollster::block_on;
use safetensors::{Dtype, SafeTensors};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/smollm2_like");

/// The fixture folder (bf16, as SmolLM2 ships) with every tensor stored as `format`.
fn folder_in(format: HalfFormat) -> Files {
    let mut files = read_dir(std::path::Path::new(DIR)).unwrap();
    let bytes = files["model.safetensors"].clone();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => {
                    view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
                }
                Dtype::BF16 => {
                    view.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                other => panic!("the fixture holds {other:?}"),
            };
            let values = values.into_iter();
            let data = match format {
                // nudged past bf16's 8 significant bits, so that only f16 holds them
                HalfFormat::F16 => values.flat_map(|x| half::f16::from_f32(x * 1.0029).to_le_bytes()).collect(),
                HalfFormat::Bf16 => values.flat_map(|x| half::bf16::from_f32(x).to_le_bytes()).collect(),
            };
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let dtype = match format {
        HalfFormat::F16 => Dtype::F16,
        HalfFormat::Bf16 => Dtype::BF16,
    };
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, shape, data)| (n.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), data).unwrap()))
        .collect();
    files.insert("model.safetensors".into(), safetensors::tensor::serialize(views, None).unwrap());
    files
}

/// The folder imported on a GPU of its own (16-bit storage on or off), and that GPU.
fn imported(files: &Files, half: bool) -> (Session, Gpu) {
    let gpu = block_on(Gpu::new()).expect("a GPU adapter (lavapipe)");
    gpu.set_half_storage(half);
    let mut session = Session::new(Some(gpu.clone()), BackendKind::Gpu);
    session.import(files, None).unwrap();
    (session, gpu)
}

fn options(lora_rank: usize) -> TrainConfig {
    TrainConfig {
        steps: 2,
        batch_size: 2,
        eval_every: 100,
        eval_batches: 1,
        sample_every: 0,
        log_every: 1,
        warmup_steps: 0,
        lr: 3e-3,
        lora_rank,
        lora_alpha: 8.0,
        lora_targets: "all-linear".into(),
        ..StageKind::Sft.defaults()
    }
}

fn conversations() -> Vec<u8> {
    let pairs = [("Hi", "Hello there."), ("Name a colour.", "Blue."), ("Two plus two?", "Four."), ("Bye", "Goodbye!")];
    let rows = pairs.iter().map(|(q, a)| {
        serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            .to_string()
            + "\n"
    });
    rows.collect::<String>().into_bytes()
}

/// SFT's losses, step by step.
fn sft(session: &mut Session, lora_rank: usize) -> Vec<f32> {
    let data = conversations();
    let data = StageData { bytes: Some(&data), lang: Language::English };
    block_on(session.begin(StageKind::Sft, data, options(lora_rank))).unwrap();
    let mut losses = Vec::new();
    while let Some(p) = block_on(session.train_step(None)).unwrap() {
        losses.push(p.loss.expect("logged every step"));
    }
    losses
}

fn logits(session: &mut Session) -> Vec<f32> {
    let run = session.run_mut().unwrap();
    let ids = [1, 30, 31, 32, 2, 40];
    with_run!(run, r => block_on(kiln::inspect::next_token(&mut r.be, &r.model, &ids, None, true))).unwrap().logits
}

fn format(session: &mut Session) -> Option<HalfFormat> {
    with_run!(session.run_mut().unwrap(), r => r.model.weights.format())
}

#[test]
fn a_model_that_came_in_16_bits_is_kept_in_16_bits_on_the_gpu_with_the_same_results_as_f32() {
    for format in [HalfFormat::Bf16, HalfFormat::F16] {
        let files = folder_in(format);
        let loaded = load_model(&files).unwrap();
        let (mut half, half_gpu) = imported(&files, true);
        let (mut full, full_gpu) = imported(&files, false);
        assert_eq!(self::format(&mut half), Some(format), "kept in {format:?}");
        assert_eq!(self::format(&mut full), None);

        // the weights' memory: the matrices' 4 bytes an element become 2 (each run of
        // adjacent matrices rounded up to whole words)
        let vectors: usize =
            loaded.layout.tensors.iter().filter(|t| t.shape.len() < 2 || t.shape.contains(&1)).map(|t| t.len()).sum();
        let matrices = loaded.layout.total - vectors;
        let (saved, expected) = (full_gpu.memory().0 - half_gpu.memory().0, 2 * matrices as u64);
        println!(
            "{format:?}: {} of {} parameters in matrices; {saved} bytes saved (expected {expected})",
            matrices, loaded.layout.total
        );
        assert!(saved.abs_diff(expected) <= 64, "{saved} bytes saved, expected {expected}");

        // what the frozen weights hold, read back: the folder's values exactly
        let base = |s: &mut Session| with_run!(s.run_mut().unwrap(), r => block_on(r.base_params())).unwrap();
        assert_eq!(base(&mut half), loaded.params);
        assert_eq!(base(&mut full), loaded.params);

        let before = logits(&mut half);
        assert_eq!(before, logits(&mut full), "{format:?}: logits");
        // training once (bf16): the formats differ only in the widening, held above
        if format == HalfFormat::F16 {
            continue;
        }
        let (a, b) = (sft(&mut half, 4), sft(&mut full, 4));
        println!("{format:?}: LoRA SFT losses {a:?}");
        assert_eq!(a, b, "{format:?}: LoRA SFT's losses");
        assert_eq!(self::format(&mut half), Some(format), "the base stays in 16 bits under LoRA");
        let adapters =
            |s: &mut Session| with_run!(s.run_mut().unwrap(), r => block_on(r.adapter())).unwrap().unwrap().1;
        assert_eq!(adapters(&mut half), adapters(&mut full), "{format:?}: the adapters");
        assert_eq!(base(&mut half), loaded.params, "the base is untouched");
        let after = logits(&mut half);
        assert_ne!(after, before, "the adapters trained");
        assert_eq!(after, logits(&mut full), "{format:?}: logits with the adapters");

        // full fine-tuning: the 16-bit copy widened to f32 on the device, then trained
        let (mut half, _) = imported(&files, true);
        let (mut full, _) = imported(&files, false);
        let (a, b) = (sft(&mut half, 0), sft(&mut full, 0));
        assert_eq!(self::format(&mut half), None, "a model that trains every weight holds them in f32");
        assert_eq!(a, b, "{format:?}: full fine-tuning's losses");
        assert_eq!(base(&mut half), base(&mut full), "{format:?}: the fine-tuned weights");
    }
}
