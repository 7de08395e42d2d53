//! What the session shows of its model without training it: text generated piece by
//! piece, the next token's distribution (and one head's attention), a training row's loss
//! at each position, and the model as a Hugging Face folder.

use serde::{Deserialize, Serialize};

use super::{Run, Session};
use crate::data::format::ChatFormat;
use crate::data::Files;
use crate::error::{KilnError, Result};
use crate::inspect::{next_token, row_losses, top_tokens, HeadRef, TOP_K};
use crate::sample::{Generation, SampleConfig};
use crate::tokenizer::Tokenizer;
use crate::with_run;

/// A generation in progress: the sampler, the ids generated so far, and how many bytes
/// of their text have been handed out.
pub struct TextGeneration {
    generation: Generation,
    ids: Vec<u32>,
    shown: usize,
}

/// One token as a person sees it; `special`: a control token such as `<|eos|>`, named,
/// which typed text never becomes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Piece {
    pub id: u32,
    pub text: String,
    pub special: bool,
}

impl Piece {
    pub fn of(tok: &Tokenizer, id: u32) -> Piece {
        Piece { id, text: tok.token_text(id), special: tok.is_special(id) }
    }
}

/// A likely next token: its probability, and at the temperature asked for.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopPiece {
    #[serde(flatten)]
    pub piece: Piece,
    pub p: f32,
    pub p_at_temperature: f32,
}

/// Which head's attention to read (from 0).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct HeadChoice {
    pub layer: usize,
    pub head: usize,
}

/// One head's attention weights over the prompt: (T, T), a row per query position.
#[derive(Clone, Debug, Serialize)]
pub struct Attention {
    pub layer: usize,
    pub head: usize,
    pub weights: Vec<f32>,
}

/// What the model predicts after a prompt.
#[derive(Clone, Debug, Serialize)]
pub struct NextToken {
    pub tokens: Vec<Piece>,
    /// (V) at temperature 1.
    pub probs: Vec<f32>,
    pub temperature: f32,
    /// The most likely, most likely first.
    pub top: Vec<TopPiece>,
    pub attention: Option<Attention>,
}

/// How to read the next token: `append`, token ids after the prompt's own (picked by
/// hand, appended exactly rather than re-tokenized with the text).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InspectOptions {
    pub top_k: Option<usize>,
    pub temperature: Option<f32>,
    pub attention: Option<HeadChoice>,
    pub append: Vec<u32>,
}

/// A training row under the model now: the loss at each position, None where masked.
#[derive(Clone, Debug, Serialize)]
pub struct RowView {
    pub stage: Option<&'static str>,
    pub inputs: Vec<Piece>,
    pub targets: Vec<Piece>,
    pub losses: Vec<Option<f32>>,
}

impl Session {
    /// Starts generating after the ids `prompt` makes from the run's tokenizer, chat format
    /// and context; then [`Session::generate_next`] until it returns None.
    pub fn start_generation(
        &mut self,
        prompt: impl Fn(&Tokenizer, &ChatFormat, usize) -> Result<Vec<u32>>,
        cfg: &SampleConfig,
    ) -> Result<()> {
        let generation = with_run!(self.run_mut()?, r => {
            let ids = prompt(&r.tokenizer, &r.chat_format(), r.model.config.block_size)?;
            let (be, model, decoder) = r.generator()?;
            Generation::start(be, model, decoder, &ids, cfg)
        });
        self.generation = Some(TextGeneration { generation, ids: Vec::new(), shown: 0 });
        Ok(())
    }

    /// The next piece of generated text (empty while a character is incomplete: a
    /// byte-level token can end inside one), or None when the generation has ended.
    pub async fn generate_next(&mut self) -> Result<Option<String>> {
        let mut g = self.generation.take().ok_or_else(|| KilnError::Config("start a generation first".into()))?;
        let run = self.run.as_mut().ok_or_else(|| KilnError::Config("create or import a model first".into()))?;
        let next = with_run!(run, r => {
            let (be, model, decoder) = r.generator()?;
            g.generation.next(be, model, decoder).await?
        });
        let Some(id) = next else {
            self.generation = Some(g);
            return Ok(None);
        };
        g.ids.push(id);
        let text = with_run!(&*run, r => r.tokenizer.decode(&g.ids)).unwrap_or_default();
        let upto = if text.ends_with('\u{FFFD}') { g.shown } else { text.len() };
        let piece = text.get(g.shown..upto).unwrap_or("").to_string();
        g.shown = upto.max(g.shown);
        self.generation = Some(g);
        Ok(Some(piece))
    }

    /// What the model predicts after `prompt` (`<|bos|>`, its tokens, then `o.append`), on
    /// the backend that trains it. Nothing is kept: a closed view costs nothing.
    pub async fn inspect_next(&mut self, prompt: &str, o: &InspectOptions) -> Result<NextToken> {
        let temperature = o.temperature.unwrap_or(SampleConfig::default().temperature);
        let head = o.attention.map(|a| HeadRef { layer: a.layer, head: a.head });
        with_run!(self.run_mut()?, r => {
            let mut ids = r.prompt_ids(prompt)?;
            let v = r.model.config.vocab_size;
            if let Some(bad) = o.append.iter().find(|&&id| id as usize >= v) {
                return Err(KilnError::Config(format!("token {bad} is past the vocabulary of {v}")));
            }
            ids.extend(&o.append);
            let look = next_token(&mut r.be, &r.model, &ids, head, false).await?;
            let top = top_tokens(&look, o.top_k.unwrap_or(TOP_K), temperature)
                .into_iter()
                .map(|x| TopPiece { piece: Piece::of(&r.tokenizer, x.id), p: x.p, p_at_temperature: x.p_at_temperature })
                .collect();
            Ok(NextToken {
                tokens: look.ids.iter().map(|&id| Piece::of(&r.tokenizer, id)).collect(),
                probs: look.probs,
                temperature,
                top,
                attention: o.attention.zip(look.attention).map(|(a, weights)| Attention {
                    layer: a.layer,
                    head: a.head,
                    weights,
                }),
            })
        })
    }

    /// The current stage's first training row under the model now; None when the stage
    /// trains on no token rows (the preference stages).
    pub async fn inspect_row(&mut self) -> Result<Option<RowView>> {
        with_run!(self.run_mut()?, r => {
            let Some(row) = r.stage.as_ref().and_then(|s| s.example_row()).cloned() else { return Ok(None) };
            let out = row_losses(&mut r.be, &r.model, &row).await?;
            let pieces = |ids: &[u32]| ids.iter().map(|&id| Piece::of(&r.tokenizer, id)).collect();
            Ok(Some(RowView {
                stage: r.stage.as_ref().map(|s| s.kind().name()),
                inputs: pieces(&out.inputs),
                targets: pieces(&out.targets),
                losses: out.losses,
            }))
        })
    }

    /// The model as a Hugging Face GPT-2 folder (with the reward model's score head, if
    /// it has one).
    pub async fn model_files(&mut self) -> Result<Files> {
        model_files(self.run_mut()?).await
    }
}

impl Session {
    /// The model as one GGUF file (llama.cpp, Ollama), its matrices in `encoding`.
    pub async fn model_gguf(&mut self, encoding: crate::gguf::Encoding) -> Result<Vec<u8>> {
        let run = self.run_mut()?;
        with_run!(run, r => crate::train::resume::model_gguf(r, encoding).await)
    }
}

async fn model_files(run: &mut Run) -> Result<Files> {
    with_run!(run, r => crate::train::resume::model_folder(r).await)
}
