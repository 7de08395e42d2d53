//! Several people's rankings of the same prompts: how far they agree, the prompts they
//! disagree on, and one set of rankings to train on (everyone's, the majority's, or one
//! person's). Labels from several people are only worth pooling when they agree; the
//! figures say whether they do, and the disagreements show where to look.
//!
//! An item is one prompt (the whole conversation) with one set of answers: two rankings are
//! of the same item when their prompts are equal and they rank the same answer texts
//! (trimmed, in any order). Within an item each person's ranking is read as competition
//! ranks over its distinct texts, r(i) = 1 + #{texts ranked strictly better than i}, so
//! 1 1 2 and 1 1 3 say the same, and a text given twice keeps its better rank. An item of
//! one text orders nothing and counts in no figure. A person who ranked an item twice
//! counts once, with their last ranking (a later ranking corrects an earlier one).
//!
//! Verdicts: a skipped prompt says nothing about its answers and is left out. "All bad"
//! ranks every answer tied at the bottom (K of K): it says no answer is better than
//! another, so pair by pair it agrees with a tie and disagrees with an order; and that each
//! answer is as bad as the worst, so on α's scale it agrees with someone's worst answer and
//! disagrees most with their best. Leaving it out instead would hide the sharpest
//! disagreement there is, one person's best answer that another calls bad.
//!
//! Figures:
//! - pairwise agreement of two people: over every unordered answer pair {i, j} of every item
//!   both ranked, the share they order alike, sign(r_a(i) − r_a(j)) = sign(r_b(i) − r_b(j))
//!   (i better, j better, or tied);
//! - Kendall's τ-b of each item both ranked, τ_b = (n_c − n_d) / √((n_0 − n_a)(n_0 − n_b))
//!   with n_0 = K(K−1)/2 answer pairs, n_c ordered alike, n_d ordered oppositely, n_a and
//!   n_b tied by each; averaged over the items. Where one of them ties every answer (all
//!   bad, for one) τ-b is 0/0: the item is skipped, and counted;
//! - Krippendorff's α for ordinal data over everyone: units are (item, answer), values the
//!   ranks, and only units with two values or more count (pairable values). The coincidence
//!   matrix o_ck = Σ_u #{ordered pairs of values (c, k) from different people in u} / (m_u − 1),
//!   m_u the values of unit u; n_c = Σ_k o_ck, n = Σ_c n_c; Krippendorff's ordinal distance
//!   δ²_ck = (Σ_{g=c..k} n_g − (n_c + n_k)/2)²; α = 1 − (n − 1) Σ o_ck δ²_ck / Σ n_c n_k δ²_ck.
//!   1 is perfect agreement, 0 what chance gives, below 0 systematic disagreement; with one
//!   value throughout it is undefined.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;

use crate::data::chat::Conversation;
use crate::data::preference::{Ranking, Verdict};
use crate::error::{KilnError, Result};

/// Most disagreements listed in a report (the worst first).
pub const DISAGREEMENTS_SHOWN: usize = 20;

/// The annotator named on a combined ranking that the majority decided.
pub const MAJORITY: &str = "majority";

/// How far several people's rankings agree.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agreement {
    pub annotators: Vec<AnnotatorCount>,
    /// Every two people, in the order given.
    pub between: Vec<PairAgreement>,
    /// Items ranked by two people or more.
    pub shared_prompts: usize,
    /// Over everyone; None when no unit holds two values or every value is the same.
    pub krippendorff_alpha: Option<f64>,
    /// Shared items where two people's best answers differ or their τ-b is below 0.
    pub disagreement_count: usize,
    /// The first DISAGREEMENTS_SHOWN of them, the least agreed first.
    pub disagreements: Vec<Disagreement>,
}

/// One person's rankings.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnotatorCount {
    pub name: String,
    /// Every ranking, whatever its verdict.
    pub rankings: usize,
    /// The (chosen, rejected) pairs they give.
    pub pairs: usize,
    pub skipped: usize,
    pub all_bad: usize,
}

/// Two people's agreement on the items both ranked.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairAgreement {
    pub annotators: [String; 2],
    pub shared_prompts: usize,
    /// Unordered answer pairs of the shared items.
    pub answer_pairs: usize,
    /// The share of those pairs both order alike; None without one.
    pub pairwise_agreement: Option<f64>,
    /// Mean Kendall's τ-b over the shared items where it is defined.
    pub mean_tau_b: Option<f64>,
    /// Shared items whose τ-b is in the mean.
    pub tau_prompts: usize,
    /// Shared items one of them ties throughout (τ-b is 0/0).
    pub tau_skipped: usize,
}

/// A shared item on which people disagree.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disagreement {
    /// The user's last turn.
    pub question: String,
    /// The distinct answer texts, trimmed, in the order of `ranks`.
    pub answers: Vec<String>,
    pub ranks: Vec<AnnotatorRanks>,
    /// The least share of answer pairs two of them order alike.
    pub agreement: f64,
}

/// One person's ranks of a disagreement's answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnnotatorRanks {
    pub annotator: String,
    pub ranks: Vec<u32>,
    pub all_bad: bool,
}

/// Each person's rankings from files of rankings, (file name, rankings) each: a ranking
/// is its `annotator`'s when it names one, else its file's, so a file may hold one person or
/// several.
pub fn people(files: Vec<(String, Vec<Ranking>)>) -> Vec<(String, Vec<Ranking>)> {
    let mut people: Vec<(String, Vec<Ranking>)> = Vec::new();
    for (file_name, rankings) in files {
        for ranking in rankings {
            let name = ranking.annotator.clone().unwrap_or_else(|| file_name.clone());
            match people.iter_mut().find(|(n, _)| *n == name) {
                Some((_, list)) => list.push(ranking),
                None => people.push((name, vec![ranking])),
            }
        }
    }
    people
}

/// Which rankings to train on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Everyone's, each ranking with its annotator.
    Union,
    /// One ranking per item (see [`combine`]).
    Majority,
    /// This person's only.
    One(String),
}

impl Combine {
    /// `union`, `majority`, or a person's name.
    pub fn parse(text: &str) -> Combine {
        match text {
            "union" => Combine::Union,
            "majority" => Combine::Majority,
            name => Combine::One(name.to_string()),
        }
    }
}

/// One person's judgement of an item.
struct Judgement<'a> {
    /// Index into the annotators.
    who: usize,
    ranking: &'a Ranking,
    /// Competition ranks over the item's answers; all K when all bad.
    ranks: Vec<u32>,
    all_bad: bool,
}

/// One prompt with one set of answers, as everyone who judged it ranked it.
struct Item<'a> {
    prompt: &'a Conversation,
    /// The distinct answer texts, trimmed and sorted.
    answers: Vec<String>,
    /// At most one per person, in the order first seen.
    judged: Vec<Judgement<'a>>,
}

impl Item<'_> {
    fn ranks_of(&self, who: usize) -> Option<&[u32]> {
        self.judged.iter().find(|j| j.who == who).map(|j| j.ranks.as_slice())
    }

    fn question(&self) -> &str {
        self.prompt.last().map_or("", |m| m.content.as_str())
    }
}

/// The items judged (ranked or all bad), in the order first seen.
fn items(annotators: &[(String, Vec<Ranking>)]) -> Vec<Item<'_>> {
    let mut items: Vec<Item> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (who, (_, rankings)) in annotators.iter().enumerate() {
        for ranking in rankings.iter().filter(|r| r.verdict != Verdict::Skipped) {
            let answers = distinct_texts(ranking);
            let key = serde_json::to_string(&(&ranking.prompt, &answers)).expect("a prompt serialises");
            let at = *index.entry(key).or_insert_with(|| {
                items.push(Item { prompt: &ranking.prompt, answers: answers.clone(), judged: Vec::new() });
                items.len() - 1
            });
            let all_bad = ranking.verdict == Verdict::AllBad;
            let judgement = Judgement { who, ranking, ranks: item_ranks(ranking, &answers), all_bad };
            let judged = &mut items[at].judged;
            match judged.iter_mut().find(|j| j.who == who) {
                Some(earlier) => *earlier = judgement,
                None => judged.push(judgement),
            }
        }
    }
    items
}

/// A ranking's answer texts, trimmed, without repeats, sorted.
fn distinct_texts(ranking: &Ranking) -> Vec<String> {
    let mut texts: Vec<String> = ranking.answers.iter().map(|a| a.trim().to_string()).collect();
    texts.sort();
    texts.dedup();
    texts
}

/// The ranking's competition ranks over `answers` (its distinct texts): 1 + the texts
/// ranked strictly better, a repeated text taking its better rank; all K when all bad.
fn item_ranks(ranking: &Ranking, answers: &[String]) -> Vec<u32> {
    let k = answers.len() as u32;
    if ranking.verdict == Verdict::AllBad {
        return vec![k; answers.len()];
    }
    let given: Vec<u32> = answers
        .iter()
        .map(|text| {
            let ranks = ranking.answers.iter().zip(&ranking.ranks).filter(|(a, _)| a.trim() == text);
            ranks.map(|(_, &r)| r).min().expect("every text is one of the ranking's answers")
        })
        .collect();
    competition_ranks(&given)
}

/// 1 + how many values are strictly smaller, for each value (lower is better).
fn competition_ranks<T: PartialOrd>(values: &[T]) -> Vec<u32> {
    values.iter().map(|v| 1 + values.iter().filter(|o| *o < v).count() as u32).collect()
}

/// The unordered index pairs (i, j), i < j, of `k` answers.
fn answer_pairs(k: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k).flat_map(move |i| (i + 1..k).map(move |j| (i, j)))
}

/// How `ranks` orders answers i and j: Less when i is better.
fn order(ranks: &[u32], (i, j): (usize, usize)) -> Ordering {
    ranks[i].cmp(&ranks[j])
}

/// (answer pairs both order alike, answer pairs).
fn pairs_alike(a: &[u32], b: &[u32]) -> (usize, usize) {
    let alike = answer_pairs(a.len()).filter(|&p| order(a, p) == order(b, p)).count();
    (alike, a.len() * (a.len() - 1) / 2)
}

/// Kendall's τ-b of two rankings of the same answers, (n_c − n_d) / √((n_0 − n_a)(n_0 − n_b));
/// None when either ties every pair (0/0).
fn tau_b(a: &[u32], b: &[u32]) -> Option<f64> {
    let (mut concordant, mut discordant, mut tied_a, mut tied_b, mut n0) = (0i64, 0i64, 0i64, 0i64, 0i64);
    for p in answer_pairs(a.len()) {
        let (oa, ob) = (order(a, p), order(b, p));
        n0 += 1;
        tied_a += (oa == Ordering::Equal) as i64;
        tied_b += (ob == Ordering::Equal) as i64;
        if oa != Ordering::Equal && ob != Ordering::Equal {
            if oa == ob {
                concordant += 1;
            } else {
                discordant += 1;
            }
        }
    }
    let denominator = ((n0 - tied_a) * (n0 - tied_b)) as f64;
    (denominator > 0.0).then(|| (concordant - discordant) as f64 / denominator.sqrt())
}

/// Krippendorff's α for ordinal data over the items' (item, answer) units.
fn krippendorff_alpha(items: &[Item]) -> Option<f64> {
    let top = items.iter().flat_map(|it| it.judged.iter().flat_map(|j| j.ranks.iter())).max().copied()? as usize;
    // o[c][k]: the coincidence matrix, indexed by rank value
    let mut o = vec![vec![0.0f64; top + 1]; top + 1];
    for item in items {
        for answer in 0..item.answers.len() {
            let values: Vec<usize> = item.judged.iter().map(|j| j.ranks[answer] as usize).collect();
            let m = values.len();
            if m < 2 {
                continue; // not pairable
            }
            for (p, &c) in values.iter().enumerate() {
                for (q, &k) in values.iter().enumerate() {
                    if p != q {
                        o[c][k] += 1.0 / (m - 1) as f64;
                    }
                }
            }
        }
    }
    let n_c: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = n_c.iter().sum();
    // δ²_ck = (Σ_{g=c..k} n_g − (n_c + n_k)/2)²
    let delta2 = |c: usize, k: usize| -> f64 {
        let (lo, hi) = (c.min(k), c.max(k));
        let between: f64 = n_c[lo..=hi].iter().sum();
        (between - (n_c[c] + n_c[k]) / 2.0).powi(2)
    };
    let (mut observed, mut expected) = (0.0, 0.0);
    for c in 0..=top {
        for k in 0..=top {
            observed += o[c][k] * delta2(c, k);
            expected += n_c[c] * n_c[k] * delta2(c, k);
        }
    }
    (expected > 0.0).then(|| 1.0 - (n - 1.0) * observed / expected)
}

/// Two people's figures over the items both ranked.
fn pair_agreement(names: &[String], items: &[Item], a: usize, b: usize) -> PairAgreement {
    let (mut shared, mut alike, mut total, mut taus, mut tau_skipped) = (0, 0, 0, Vec::new(), 0);
    for item in items {
        let (Some(ra), Some(rb)) = (item.ranks_of(a), item.ranks_of(b)) else { continue };
        shared += 1;
        let (same, pairs) = pairs_alike(ra, rb);
        alike += same;
        total += pairs;
        match tau_b(ra, rb) {
            Some(tau) => taus.push(tau),
            None => tau_skipped += 1,
        }
    }
    PairAgreement {
        annotators: [names[a].clone(), names[b].clone()],
        shared_prompts: shared,
        answer_pairs: total,
        pairwise_agreement: (total > 0).then(|| alike as f64 / total as f64),
        mean_tau_b: (!taus.is_empty()).then(|| taus.iter().sum::<f64>() / taus.len() as f64),
        tau_prompts: taus.len(),
        tau_skipped,
    }
}

/// The item as a disagreement, when two of its people's best answers differ or their τ-b
/// is below 0.
fn disagreement(names: &[String], item: &Item) -> Option<Disagreement> {
    let best = |ranks: &[u32]| -> Vec<usize> { (0..ranks.len()).filter(|&i| ranks[i] == 1).collect() };
    let (mut disagree, mut least) = (false, 1.0f64);
    for (x, a) in item.judged.iter().enumerate() {
        for b in &item.judged[x + 1..] {
            disagree |= best(&a.ranks) != best(&b.ranks) || tau_b(&a.ranks, &b.ranks).is_some_and(|t| t < 0.0);
            let (alike, pairs) = pairs_alike(&a.ranks, &b.ranks);
            least = least.min(alike as f64 / pairs as f64);
        }
    }
    disagree.then(|| Disagreement {
        question: item.question().to_string(),
        answers: item.answers.clone(),
        ranks: item
            .judged
            .iter()
            .map(|j| AnnotatorRanks { annotator: names[j.who].clone(), ranks: j.ranks.clone(), all_bad: j.all_bad })
            .collect(),
        agreement: least,
    })
}

/// Several people's agreement: `annotators` holds each person's name and rankings.
pub fn agreement(annotators: &[(String, Vec<Ranking>)]) -> Agreement {
    let names: Vec<String> = annotators.iter().map(|(name, _)| name.clone()).collect();
    let items: Vec<Item> = items(annotators).into_iter().filter(|it| it.answers.len() >= 2).collect();
    let shared: Vec<&Item> = items.iter().filter(|it| it.judged.len() >= 2).collect();
    let counts = annotators
        .iter()
        .map(|(name, rankings)| AnnotatorCount {
            name: name.clone(),
            rankings: rankings.len(),
            pairs: rankings.iter().map(|r| r.pairs().len()).sum(),
            skipped: rankings.iter().filter(|r| r.verdict == Verdict::Skipped).count(),
            all_bad: rankings.iter().filter(|r| r.verdict == Verdict::AllBad).count(),
        })
        .collect();
    let between = (0..names.len())
        .flat_map(|a| (a + 1..names.len()).map(move |b| (a, b)))
        .map(|(a, b)| pair_agreement(&names, &items, a, b))
        .collect();
    let mut disagreements: Vec<Disagreement> = shared.iter().filter_map(|it| disagreement(&names, it)).collect();
    // the least agreed first; a stable sort keeps the file order among equals
    disagreements.sort_by(|x, y| x.agreement.total_cmp(&y.agreement));
    let disagreement_count = disagreements.len();
    disagreements.truncate(DISAGREEMENTS_SHOWN);
    Agreement {
        annotators: counts,
        between,
        shared_prompts: shared.len(),
        krippendorff_alpha: krippendorff_alpha(&items),
        disagreement_count,
        disagreements,
    }
}

/// The rankings to train on.
/// - Union: everyone's rankings, each with its annotator (a prompt several people ranked
///   counts once per person, so agreed pairs weigh more).
/// - One: that person's rankings only; an unknown name is an error naming the known ones.
/// - Majority: one ranking per item. An item several people judged is ranked by the mean of
///   each answer's ranks across them (Borda; equal means tie), all bad counting as every
///   answer at the bottom, and is all bad when more than half of them said so; annotator
///   [`MAJORITY`]. An item one person judged (or of one text) is kept as they ranked it.
///   Skipped items are left out: they judge nothing.
pub fn combine(annotators: &[(String, Vec<Ranking>)], how: &Combine) -> Result<Vec<Ranking>> {
    let named = |name: &str, r: &Ranking| Ranking { annotator: Some(name.to_string()), ..r.clone() };
    match how {
        Combine::Union => Ok(annotators.iter().flat_map(|(name, rs)| rs.iter().map(move |r| named(name, r))).collect()),
        Combine::One(who) => match annotators.iter().find(|(name, _)| name == who) {
            Some((name, rs)) => Ok(rs.iter().map(|r| named(name, r)).collect()),
            None => {
                let known: Vec<&str> = annotators.iter().map(|(name, _)| name.as_str()).collect();
                Err(KilnError::Config(format!("no annotator {who:?}; the annotators are {}", known.join(", "))))
            }
        },
        Combine::Majority => Ok(items(annotators)
            .iter()
            .map(|item| match item.judged.as_slice() {
                [one] => named(&annotators[one.who].0, one.ranking),
                [first, ..] if item.answers.len() < 2 => named(&annotators[first.who].0, first.ranking),
                _ => majority(item),
            })
            .collect()),
    }
}

/// An item several people judged, ranked by each answer's mean rank across them; its
/// answers in the first person's order and wording.
fn majority(item: &Item) -> Ranking {
    // every person ranks every answer of the item, so means compare as sums
    let sums: Vec<u32> = (0..item.answers.len()).map(|i| item.judged.iter().map(|j| j.ranks[i]).sum()).collect();
    let ranks = competition_ranks(&sums);
    let first = item.judged[0].ranking;
    let (mut answers, mut order) = (Vec::new(), Vec::new());
    for text in &first.answers {
        let at = item.answers.iter().position(|a| a == text.trim()).expect("the item's text");
        if !order.contains(&at) {
            answers.push(text.clone());
            order.push(at);
        }
    }
    let all_bad = item.judged.iter().filter(|j| j.all_bad).count();
    Ranking {
        prompt: item.prompt.clone(),
        answers,
        ranks: order.iter().map(|&at| ranks[at]).collect(),
        verdict: if 2 * all_bad > item.judged.len() { Verdict::AllBad } else { Verdict::Ranked },
        annotator: Some(MAJORITY.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::chat::{Message, Role};

    fn ranking(question: &str, answers: &[&str], ranks: &[u32]) -> Ranking {
        Ranking {
            prompt: vec![Message { role: Role::User, content: question.into() }],
            answers: answers.iter().map(|a| a.to_string()).collect(),
            ranks: ranks.to_vec(),
            verdict: Verdict::Ranked,
            annotator: None,
        }
    }

    fn with(verdict: Verdict, r: Ranking) -> Ranking {
        Ranking { verdict, ..r }
    }

    /// Three people, three prompts, ties included:
    ///   P1 (x, y, z): A 1 2 3, B 1 1 3, C 2 1 3
    ///   P2 (u, v, w): A 1 2 2, B 1 2 3, C 1 1 1
    ///   P3 (p, q):    A 1 2,   B 2 1,   C skipped
    /// A first ranked P1 the other way round (the later ranking counts); B lists P1's answers
    /// in another order, with spaces.
    fn three() -> Vec<(String, Vec<Ranking>)> {
        let a = vec![
            ranking("P1", &["x", "y", "z"], &[3, 2, 1]),
            ranking("P1", &["x", "y", "z"], &[1, 2, 3]),
            ranking("P2", &["u", "v", "w"], &[1, 2, 2]),
            ranking("P3", &["p", "q"], &[1, 2]),
        ];
        let b = vec![
            ranking("P1", &["z", " y", "x "], &[3, 1, 1]),
            ranking("P2", &["u", "v", "w"], &[1, 2, 3]),
            ranking("P3", &["p", "q"], &[2, 1]),
        ];
        let c = vec![
            ranking("P1", &["x", "y", "z"], &[2, 1, 3]),
            ranking("P2", &["u", "v", "w"], &[1, 1, 1]),
            with(Verdict::Skipped, ranking("P3", &["p", "q"], &[1, 2])),
        ];
        vec![("A".into(), a), ("B".into(), b), ("C".into(), c)]
    }

    fn close(got: Option<f64>, want: f64) {
        let got = got.expect("a figure");
        assert!((got - want).abs() < 1e-9, "{got} against {want}");
    }

    #[test]
    fn agreement_of_three_annotators_with_ties_against_a_hand_computed_case() {
        let report = agreement(&three());
        let counts: Vec<_> = report.annotators.iter().map(|c| (c.rankings, c.pairs, c.skipped, c.all_bad)).collect();
        // A: 3 + 3 + 2 + 1 pairs; B: 2 + 3 + 1; C: 3 + 0, P3 skipped
        assert_eq!(counts, vec![(4, 9, 0, 0), (3, 6, 0, 0), (3, 3, 1, 0)]);
        assert_eq!(report.shared_prompts, 3);
        let [ab, ac, bc] = &report.between[..] else { panic!("three pairs of people") };
        assert_eq!(ab.annotators, ["A".to_string(), "B".to_string()]);
        assert_eq!((ab.shared_prompts, ab.answer_pairs), (3, 7));
        assert_eq!((ac.shared_prompts, ac.answer_pairs), (2, 6));
        assert_eq!((bc.shared_prompts, bc.answer_pairs), (2, 6));

        // Pairwise agreement (answer pairs ordered alike):
        //   A–B: P1 xy (x better | tie) no, xz yes, yz yes; P2 uv yes, uw yes, vw (tie | v) no;
        //        P3 pq no                                                  → 4/7
        //   A–C: P1 xy (x | y) no, xz yes, yz yes; P2 uv (u | tie) no, uw no, vw (tie | tie) yes
        //                                                                  → 3/6
        //   B–C: P1 xy (tie | y) no, xz yes, yz yes; P2 uv no, uw no, vw no → 2/6
        close(ab.pairwise_agreement, 4.0 / 7.0);
        close(ac.pairwise_agreement, 3.0 / 6.0);
        close(bc.pairwise_agreement, 2.0 / 6.0);

        // Kendall's τ-b = (n_c − n_d) / √((n_0 − n_a)(n_0 − n_b)):
        //   A–B: P1 n_c 2 (xz, yz), n_d 0, B ties 1 → 2/√(3·2) = 2/√6;
        //        P2 n_c 2, n_d 0, A ties 1 → 2/√6; P3 n_c 0, n_d 1 → −1/√(1·1) = −1;
        //        mean (4/√6 − 1)/3 ≈ 0.2109977206
        //   A–C: P1 n_c 2, n_d 1, no ties → 1/3; P2: C ties everything, skipped → 1/3
        //   B–C: P1 n_c 2, n_d 0, B ties 1 → 2/√6; P2 skipped → 2/√6
        let root6 = 6f64.sqrt();
        close(ab.mean_tau_b, (4.0 / root6 - 1.0) / 3.0);
        close(ac.mean_tau_b, 1.0 / 3.0);
        close(bc.mean_tau_b, 2.0 / root6);
        assert_eq!((ab.tau_prompts, ab.tau_skipped), (3, 0));
        assert_eq!((ac.tau_prompts, ac.tau_skipped), (1, 1));
        assert_eq!((bc.tau_prompts, bc.tau_skipped), (1, 1));

        // Krippendorff's α (ordinal). Units and values (A, B, C):
        //   P1x 1 1 2 · P1y 2 1 1 · P1z 3 3 3 · P2u 1 1 1 · P2v 2 2 1 · P2w 2 3 1 · P3p 1 2 · P3q 2 1
        // Coincidences (each ordered pair of values / (m_u − 1)):
        //   P1x, P1y: o11 +1, o12 +1, o21 +1 each; P1z: o33 +3; P2u: o11 +3;
        //   P2v: o22 +1, o12 +1, o21 +1; P2w: o12, o21, o13, o31, o23, o32 +½ each;
        //   P3p, P3q: o12 +1, o21 +1 each
        //   → o11 5, o12 = o21 5.5, o22 1, o13 = o31 ½, o23 = o32 ½, o33 3;
        //     n1 11, n2 7, n3 4, n 22
        // δ²: (1,2) (18 − 9)² = 81; (2,3) (11 − 5.5)² = 30.25; (1,3) (22 − 7.5)² = 210.25
        // Σ o δ² = 2 (5.5·81 + ½·210.25 + ½·30.25) = 1131.5
        // Σ n_c n_k δ² = 2 (77·81 + 44·210.25 + 28·30.25) = 32670
        // α = 1 − 21 · 1131.5 / 32670 = 5939/21780 ≈ 0.2726813590 (the `krippendorff` package
        // on PyPI, level_of_measurement='ordinal', gives 0.27268135904499546 on these data)
        close(report.krippendorff_alpha, 5939.0 / 21780.0);

        // every prompt: best answers differ (P1 x | x y | y; P2 u | u | all; P3 p | q);
        // least agreed first: P2 (B–C 0/3), P3 (0/1), then P1 (2/3)
        assert_eq!(report.disagreement_count, 3);
        let order: Vec<(&str, f64)> = report.disagreements.iter().map(|d| (d.question.as_str(), d.agreement)).collect();
        assert_eq!(order, vec![("P2", 0.0), ("P3", 0.0), ("P1", 2.0 / 3.0)]);
        let p1 = &report.disagreements[2];
        assert_eq!(p1.answers, ["x", "y", "z"]);
        let ranks: Vec<_> = p1.ranks.iter().map(|r| (r.annotator.as_str(), r.ranks.clone())).collect();
        assert_eq!(ranks, vec![("A", vec![1, 2, 3]), ("B", vec![1, 1, 3]), ("C", vec![2, 1, 3])]);
    }

    #[test]
    fn perfect_agreement_gives_alpha_and_tau_of_one() {
        let person = || {
            vec![
                ranking("P1", &["x", "y", "z"], &[1, 2, 3]),
                ranking("P2", &["u", "v", "w", "t"], &[2, 1, 2, 4]),
                ranking("P3", &["p", "q"], &[2, 1]),
            ]
        };
        let report = agreement(&[("A".into(), person()), ("B".into(), person()), ("C".into(), person())]);
        close(report.krippendorff_alpha, 1.0);
        for pair in &report.between {
            close(pair.pairwise_agreement, 1.0);
            close(pair.mean_tau_b, 1.0);
            assert_eq!((pair.shared_prompts, pair.tau_skipped), (3, 0));
        }
        assert_eq!(report.disagreement_count, 0);
    }

    #[test]
    fn all_bad_ties_every_answer_at_the_bottom() {
        let ranked = ranking("P", &["x", "y", "z"], &[1, 2, 3]);
        let bad = with(Verdict::AllBad, ranked.clone());
        let report = agreement(&[("A".into(), vec![ranked.clone()]), ("B".into(), vec![bad.clone()])]);
        let pair = &report.between[0];
        // every pair ordered by A and tied by B; τ-b is 0/0
        close(pair.pairwise_agreement, 0.0);
        assert_eq!((pair.mean_tau_b, pair.tau_prompts, pair.tau_skipped), (None, 0, 1));
        assert_eq!(report.disagreements[0].ranks[1].ranks, vec![3, 3, 3]);
        assert!(report.disagreements[0].ranks[1].all_bad);
        // two of three say all bad: the majority does
        let three = [("A".into(), vec![ranked]), ("B".into(), vec![bad.clone()]), ("C".into(), vec![bad])];
        let combined = combine(&three, &Combine::Majority).unwrap();
        assert_eq!(combined.len(), 1);
        assert_eq!((combined[0].verdict, combined[0].ranks.clone()), (Verdict::AllBad, vec![1, 2, 3]));
    }

    #[test]
    fn combining_by_union_majority_or_one_person() {
        let mut people = three();
        people[0].1.push(ranking("P4", &["a", "b"], &[2, 1])); // A's alone
        let union = combine(&people, &Combine::Union).unwrap();
        assert_eq!(union.len(), 11);
        assert_eq!(union.iter().filter(|r| r.annotator.as_deref() == Some("C")).count(), 3);

        let b = combine(&people, &Combine::parse("B")).unwrap();
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|r| r.annotator.as_deref() == Some("B")));
        let err = combine(&people, &Combine::One("D".into())).unwrap_err().to_string();
        assert!(err.contains("\"D\"") && err.contains("A, B, C"), "{err}");

        // mean ranks (as sums): P1 x 1+1+2, y 2+1+1, z 9 → 1 1 3; P2 u 3, v 5, w 6 → 1 2 3;
        // P3 (A and B; C skipped) p 3, q 3 → tied; P4 as A ranked it
        let majority = combine(&people, &Combine::parse("majority")).unwrap();
        let got: Vec<_> = majority
            .iter()
            .map(|r| (r.question(), r.answers.clone(), r.ranks.clone(), r.annotator.clone().unwrap()))
            .collect();
        let strings = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                ("P1", strings(&["x", "y", "z"]), vec![1, 1, 3], MAJORITY.to_string()),
                ("P2", strings(&["u", "v", "w"]), vec![1, 2, 3], MAJORITY.to_string()),
                ("P3", strings(&["p", "q"]), vec![1, 1], MAJORITY.to_string()),
                ("P4", strings(&["a", "b"]), vec![2, 1], "A".to_string()),
            ]
        );
        assert!(majority.iter().all(|r| r.verdict == Verdict::Ranked));
    }
}
