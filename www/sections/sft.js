// The fine-tuning section: instruction examples (built-in, a JSONL file or a table typed
// in), the first one shown token by token (which tokens are learnt), and Fine-tune.
import { t, tParts, num, onLanguageChange } from '../i18n.js';
import { $, app, views, viewsRead, say, sayForNow, guard, pageError, setButtons, skippedLines, numberField } from '../page.js';
import { PAGE_CADENCE, resetChart, onProgress } from './train.js';
import { onAutosave } from './autosave.js';

export const sftSource = () => document.querySelector('input[name=sft-source]:checked').value;

export function addExampleRow(instruction = '', response = '') {
  const tr = document.createElement('tr');
  for (const value of [instruction, response]) {
    const td = document.createElement('td');
    const area = document.createElement('textarea');
    area.value = value;
    area.addEventListener('input', () => guard(showSftExample));
    td.append(area);
    tr.append(td);
  }
  const remove = document.createElement('button');
  remove.textContent = t('sft.removeRow');
  remove.title = t('sft.removeRowTitle');
  remove.addEventListener('click', () => { tr.remove(); guard(showSftExample); });
  const td = document.createElement('td');
  td.append(remove);
  tr.append(td);
  $('sft-table').tBodies[0].append(tr);
}

function tableRows() {
  return [...$('sft-table').tBodies[0].rows]
    .map((tr) => [...tr.querySelectorAll('textarea')].map((a) => a.value.trim()))
    .filter(([instruction, response]) => instruction && response);
}

/** What train({stage: 'sft'}) gets for the chosen source. */
function sftData() {
  const source = sftSource();
  if (source === 'en' || source === 'zh') return { lang: source };
  if (source === 'file') {
    const file = $('sft-file').files[0];
    if (!file) throw pageError('error.chooseJsonl', 'data');
    return { data: file };
  }
  const rows = tableRows();
  if (rows.length < 2) throw pageError('error.twoExamples', 'data');
  return { data: rows.map(([prompt, completion]) => JSON.stringify({ prompt, completion })).join('\n') };
}

/** The first example of the chosen source, as messages. */
async function firstExample() {
  const source = sftSource();
  if (source === 'en' || source === 'zh') return (await app.kiln.instructionExamples(source, 'train', 1))[0];
  if (source === 'table') {
    const [row] = tableRows();
    return row && [{ role: 'user', content: row[0] }, { role: 'assistant', content: row[1] }];
  }
  const file = $('sft-file').files[0];
  if (!file) return null;
  const line = (await file.slice(0, 64 * 1024).text()).split('\n').find((l) => l.trim());
  try {
    const o = JSON.parse(line);
    if (Array.isArray(o.messages)) return o.messages;
    if (typeof o.prompt === 'string') return [{ role: 'user', content: o.prompt }, { role: 'assistant', content: String(o.completion) }];
  } catch { /* the core reports bad lines by number when training starts */ }
  return null;
}

export async function showSftExample() {
  $('sft-file').hidden = sftSource() !== 'file';
  $('sft-table-box').hidden = sftSource() !== 'table';
  const messages = app.tokenizer ? await firstExample() : null;
  if (!messages) {
    $('sft-example').replaceChildren();
    return;
  }
  const pieces = await app.kiln.renderChat(messages);
  $('sft-example').replaceChildren(...pieces.map(({ id, text, supervised }) => {
    const span = document.createElement('span');
    span.textContent = text;
    span.title = t(supervised ? 'sft.tokenLearnt' : 'sft.tokenMasked', { id });
    if (supervised) span.className = 'sup';
    return span;
  }));
}

/** The lines of the file that were skipped, each with why, under a count that opens them;
 * nothing when none were. They stay after the run (the stats line turns into the steps). */
function skippedList(skipped) {
  if (!skipped.length) return '';
  const details = document.createElement('details');
  const summary = document.createElement('summary');
  summary.textContent = t('sft.skippedList', { count: skipped.length });
  const list = document.createElement('ul');
  list.append(...skipped.map((line) => Object.assign(document.createElement('li'), { textContent: line })));
  details.append(summary, list);
  return details;
}

async function fineTune() {
  setButtons('running');
  await guard(async () => {
    if (!app.model) throw pageError('error.modelBeforeSft', 'config');
    const last = app.progress.at(-1);
    const unfinished = last?.stage === 'sft' && last.step < last.steps && app.sftSource === sftSource();
    app.training = true;
    // until the stage has begun, a refusal (no file, bad options) leaves the chart, the
    // samples and this line as they were
    const putBack = sayForNow('sft-stats', () => t('sft.preparing'));
    let begun = unfinished;
    try {
      await app.kiln.train({
        stage: 'sft', ...(unfinished ? {} : { ...sftData(), restart: true }),
        steps: numberField('sft-steps'), lr: numberField('sft-lr'), loraRank: numberField('sft-lora'), ...PAGE_CADENCE, sampleEvery: 25,
        onProgress, onAutosave,
        onStage: (info) => {
          begun = true;
          resetChart();
          app.sftSource = sftSource();
          say('sft-stats', () => tParts('sft.stats', { train: num(info.trainRows), validation: num(info.valRows), skipped: skippedLines(info.skipped) }));
          say('sft-skipped', () => skippedList(info.skipped ?? []));
          app.sftInfo = info;
        },
      });
    } catch (error) {
      if (!begun) putBack();
      throw error;
    }
  });
  app.training = false;
  setButtons('idle');
  await viewsRead(views.refresh('done'));
}

/** The examples' source, the file, the table's rows, Fine-tune. */
export function wireSft() {
  for (const radio of document.querySelectorAll('input[name=sft-source]')) radio.addEventListener('change', () => guard(showSftExample));
  for (const id of ['sft-steps', 'sft-lr', 'sft-lora']) {
    $(id).addEventListener('change', () => guard(() => app.kiln?.checkTraining('sft', { steps: numberField('sft-steps'), lr: numberField('sft-lr'), loraRank: numberField('sft-lora') })));
  }
  $('sft-file').addEventListener('change', () => guard(showSftExample));
  $('sft-add-row').addEventListener('click', () => addExampleRow());
  $('sft-start').addEventListener('click', fineTune);
  onLanguageChange(() => {
    showSftExample().catch(() => {});
    // made in JS, not from the HTML
    for (const button of document.querySelectorAll('#sft-table button')) Object.assign(button, { textContent: t('sft.removeRow'), title: t('sft.removeRowTitle') });
  });
}
