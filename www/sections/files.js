// The files section: the model exported as a .zip (a Hugging Face folder) and a model
// imported from one or from a folder; LoRA adapters out and in as PEFT folders.
import { t, tParts, content, num } from '../i18n.js';
import { $, app, views, viewsRead, say, guard, mib } from '../page.js';
import { sizes, forgetRun } from './model.js';
import { modelOnTextInUse } from './context.js';
import { trainingOptions } from './train.js';
import { showTokens } from './tokenizer.js';
import { showSftExample } from './sft.js';

async function exportModel() {
  const zip = await app.kiln.exportZip();
  download(new Blob([zip], { type: 'application/zip' }), 'kiln-model.zip');
  say('files-stats', () => t('files.exported', { name: 'kiln-model.zip', size: mib(zip.byteLength) }));
}

/** The model as one GGUF file, for llama.cpp, Ollama and LM Studio. */
async function exportGguf() {
  const type = $('gguf-type').value;
  const bytes = await app.kiln.exportGguf(type);
  const name = `kiln-model-${type}.gguf`;
  download(new Blob([bytes], { type: 'application/octet-stream' }), name);
  say('files-stats', () => t('files.exportedGguf', { name, size: mib(bytes.byteLength) }));
}

/** The trained LoRA adapters as a PEFT folder's two files, downloaded one by one. */
async function exportAdapter() {
  const files = await app.kiln.exportAdapter(app.modelName ?? '');
  for (const [name, bytes] of Object.entries(files)) download(new Blob([bytes]), name);
  say('files-stats', () => t('files.exportedAdapter', { size: mib(Object.values(files).reduce((n, b) => n + b.byteLength, 0)) }));
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** A folder's files (the folder input): a model folder, or an adapter for the model. */
async function importFolder(files, adapter) {
  const list = Array.from(files);
  const folder = list[0]?.webkitRelativePath?.split('/')[0] || '';
  const size = list.reduce((n, f) => n + f.size, 0);
  if (adapter) {
    app.model = await app.kiln.importAdapter(list);
    say('files-stats', () => tParts('files.importedAdapter', { name: content(folder), size: mib(size) }));
    return;
  }
  await importModel(list, { name: folder, size });
  app.modelName = folder;
  // a model made elsewhere fine-tunes with LoRA by default: its adapters are what fits
  for (const id of ['sft-lora', 'align-lora']) $(id).value = '8';
}

async function importModel(file, shown = { name: file.name, size: file.size }) {
  const info = await app.kiln.importModel(file, trainingOptions());
  app.modelName = undefined;
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
  say('files-stats', () => tParts('files.imported', { name: content(shown.name), size: mib(shown.size) }));
}

/** Export (.zip or .gguf), and Import from a chosen .zip or folder; the LoRA adapter out and in. */
export function wireFiles() {
  $('export').addEventListener('click', () => guard(exportModel));
  $('export-gguf').addEventListener('click', () => guard(exportGguf));
  $('export-adapter').addEventListener('click', () => guard(exportAdapter));
  $('import-folder').addEventListener('change', () => guard(() => importFolder($('import-folder').files, false)));
  $('import-adapter').addEventListener('change', () => guard(() => importFolder($('import-adapter').files, true)));
  $('import').addEventListener('change', () => guard(async () => {
    const file = $('import').files[0];
    if (file) await importModel(file);
  }));
}
