// The files section: the model exported as a .zip (a Hugging Face GPT-2 folder) and a
// model imported from one.
import { t, tParts, content, num } from '../i18n.js';
import { $, app, views, viewsRead, say, guard, mib } from '../page.js';
import { sizes, forgetRun } from './model.js';
import { modelOnTextInUse } from './context.js';
import { trainingOptions } from './train.js';
import { showTokens } from './tokenizer.js';
import { showSftExample } from './sft.js';

async function exportModel() {
  const zip = await app.kiln.exportZip();
  const url = URL.createObjectURL(new Blob([zip], { type: 'application/zip' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = 'kiln-model.zip';
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  say('files-stats', () => t('files.exported', { name: 'kiln-model.zip', size: mib(zip.byteLength) }));
}

async function importModel(file) {
  const info = await app.kiln.importModel(file, trainingOptions());
  app.model = info;
  modelOnTextInUse(false);
  forgetRun();
  app.tokenizer = { vocabSize: info.config.vocab_size, kind: 'imported' };
  // the core's notes on what it changed, as they came
  const notes = info.notes?.length ? [' ', content(info.notes.join(' '))] : '';
  say('tok-stats', () => tParts('tokenizer.imported', { size: info.config.vocab_size, notes }));
  await showSftExample();
  await showTokens();
  const c = info.config;
  say('model-stats', () => t('model.imported', { ...sizes(c), params: num(info.params) }));
  app.done = {};
  await viewsRead(views.refresh('model'));
  say('files-stats', () => tParts('files.imported', { name: content(file.name), size: mib(file.size) }));
}

/** Export, and Import from a chosen .zip. */
export function wireFiles() {
  $('export').addEventListener('click', () => guard(exportModel));
  $('import').addEventListener('change', () => guard(async () => {
    const file = $('import').files[0];
    if (file) await importModel(file);
  }));
}
