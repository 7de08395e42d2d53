// Several people's rankings: a file each (or lines naming their annotator), how far they
// agree (pairwise agreement, Kendall's tau-b, Krippendorff's alpha for ordinal data), the
// prompts they disagree on, and one set to add to this page's rankings: everyone's, the
// majority's, or one person's. The figures are the core's; this section only shows them.
import { t, tParts, onLanguageChange } from '../i18n.js';
import { $, app, say, guard, fmt, skippedLines } from '../page.js';
import { addRankings } from './rank.js';

/** The files last compared. */
let files = [];

function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) tr.append(Object.assign(document.createElement('td'), { textContent: String(cell) }));
  return tr;
}

function show({ agreement: a, skipped }) {
  $('people-table').tBodies[0].replaceChildren(...a.annotators.map((p) => row([p.name, p.rankings, p.pairs])));
  $('people-between').tBodies[0].replaceChildren(...a.between.map((b) => row([b.annotators.join(' · '), b.sharedPrompts, fmt(b.pairwiseAgreement, 2), fmt(b.meanTauB, 2)])));
  say('people-stats', () => [...tParts('people.stats', { alpha: fmt(a.krippendorffAlpha, 3), shared: a.sharedPrompts, disagreements: a.disagreementCount }), ...[skippedLines(skipped)].flat()]);
  const ranks = (r) => `${r.annotator}: ${r.allBad ? t('people.allBad') : r.ranks.join(' ')}`;
  $('people-disagreements').replaceChildren(...a.disagreements.slice(0, 5).map((d) => Object.assign(document.createElement('li'), {
    textContent: `${d.question} — ${d.answers.join(' | ')} — ${d.ranks.map(ranks).join('; ')}`,
  })));
  const choices = [['union', t('people.union')], ['majority', t('people.majority')], ...a.annotators.map((p) => [p.name, t('people.one', { name: p.name })])];
  $('people-combine').replaceChildren(...choices.map(([value, label]) => new Option(label, value)));
  $('people-add').disabled = false;
}

async function compare() {
  files = [...$('people-files').files];
  app.people = await app.kiln.agreement(files);
  show(app.people);
}

/** The chosen set of the files' rankings, added to the page's own. */
async function addCombined() {
  const { combined } = await app.kiln.agreement(files, $('people-combine').value);
  const read = await app.kiln.checkRankings(combined);
  addRankings(read);
}

export function wirePeople() {
  $('people-files').addEventListener('change', () => guard(compare));
  $('people-add').addEventListener('click', () => guard(addCombined));
  onLanguageChange(() => { if (app.people) show(app.people); });
}
