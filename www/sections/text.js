// The text section: the corpus the model learns from (a built-in story set, pasted text
// or a file) and what it holds. A new text starts the later sections over; a resumed run
// puts back the text it was trained on (sections/context.js keeps it beside the autosave).
import { t, tParts, content, num } from '../i18n.js';
import { $, app, views, say, guard, pageError } from '../page.js';
import { textInUse, textBack } from './context.js';

/** The corpus's figures and its start, as the core read it. */
function showText(info) {
  say('corpus-stats', () => t('text.stats', { bytes: num(info.bytes), characters: num(info.characters), documents: num(info.documents) }));
  $('corpus-preview').textContent = info.preview + (info.characters > info.preview.length ? ' …' : '');
}

/** Shows the text just given to the core (described as `text`): a new text starts the later
 * sections over; the very text the model learnt from (given again after a resume) keeps it. */
function showCorpus(info, text) {
  showText(info);
  if (app.model && app.modelText && text?.hash === app.modelText.hash) return;
  app.tokenizer = null;
  app.model = null;
  app.done = {};
  views.stageMap();
  say('tok-stats', () => t('tokenizer.trainPrompt'));
  $('tok-view').replaceChildren();
  say('model-stats', () => '');
}

const checkedSource = () => document.querySelector('input[name=source]:checked').value;

/** The paste box and its button, or the file input, for `source`. */
function showInputs(source) {
  $('paste').hidden = source !== 'paste';
  $('use-text').hidden = source !== 'paste';
  $('file').hidden = source !== 'file';
}

/** The sample sentence and the prompts in the built-in stories' language. */
function builtinPrompts(source) {
  $('tok-sample').value = source === 'zh' ? '从前，有一只可爱的小狐狸。' : 'Once upon a time, there was a little fox.';
  $('prompt').value = source === 'zh' ? '从前' : 'Once upon a time';
  $('next-prompt').value = $('prompt').value;
}

export async function chooseSource() {
  const source = checkedSource();
  showInputs(source);
  if (source === 'en' || source === 'zh') {
    await guard(async () => {
      const info = await app.kiln.useDefaultCorpus(source);
      showCorpus(info, await textInUse(source));
    });
    builtinPrompts(source);
  }
}

/** Puts back `text` ({source, name, hash, bytes}), the text a resumed run was trained on,
 * with its words `body` when they were kept; the model stays. Without the words the line
 * says which file (or paste) to give again; `inRun`: the core got the text back with the
 * run (a pretraining run carries its text). */
export async function restoreText(text, body, inRun) {
  if (!['en', 'zh', 'paste', 'file'].includes(text?.source)) return;
  document.querySelector(`input[name=source][value=${text.source}]`).checked = true;
  showInputs(text.source);
  if (text.source === 'en' || text.source === 'zh') {
    showText(await app.kiln.useDefaultCorpus(text.source));
    builtinPrompts(text.source);
    textBack(text, null);
    return;
  }
  $('paste').value = text.source === 'paste' && body != null ? body : '';
  if (body != null) {
    showText(await app.kiln.useCorpus(body));
    textBack(text, body);
    if (text.source === 'file') say('corpus-stats', () => tParts('text.fileKept', { name: content(text.name), bytes: num(text.bytes) }));
    return;
  }
  $('corpus-preview').textContent = '';
  const draw = () => (text.source === 'file'
    ? tParts('text.reopenFile', { name: content(text.name), bytes: num(text.bytes) })
    : t('text.repaste', { bytes: num(text.bytes) }));
  say('corpus-stats', draw);
  if (inRun) textBack(text, null);
}

/** The section's inputs: the source's radios, the pasted text's button, the file. */
export function wireText() {
  for (const radio of document.querySelectorAll('input[name=source]')) radio.addEventListener('change', chooseSource);
  $('use-text').addEventListener('click', () => guard(async () => {
    const pasted = $('paste').value;
    if (!pasted) throw pageError('error.emptyPaste', 'data');
    const info = await app.kiln.useCorpus(pasted);
    showCorpus(info, await textInUse('paste', { bytes: new TextEncoder().encode(pasted) }));
  }));
  $('file').addEventListener('change', () => guard(async () => {
    const file = $('file').files[0];
    if (!file) return;
    const info = await app.kiln.useCorpus(file);
    showCorpus(info, await textInUse('file', { name: file.name, bytes: new Uint8Array(await file.arrayBuffer()) }));
  }));
}
