// The text section: the corpus the model learns from (a built-in story set, pasted text
// or a file) and what it holds. A new text starts the later sections over.
import { t, num } from '../i18n.js';
import { $, app, views, say, guard } from '../page.js';

function showCorpus(info) {
  say('corpus-stats', () => t('text.stats', { bytes: num(info.bytes), characters: num(info.characters), documents: num(info.documents) }));
  $('corpus-preview').textContent = info.preview + (info.characters > info.preview.length ? ' …' : '');
  app.tokenizer = null;
  app.model = null;
  app.done = {};
  views.stageMap();
  say('tok-stats', () => t('tokenizer.trainPrompt'));
  $('tok-view').replaceChildren();
  say('model-stats', () => '');
}

export async function chooseSource() {
  const source = document.querySelector('input[name=source]:checked').value;
  $('paste').hidden = source !== 'paste';
  $('use-text').hidden = source !== 'paste';
  $('file').hidden = source !== 'file';
  if (source === 'en' || source === 'zh') {
    await guard(async () => showCorpus(await app.kiln.useDefaultCorpus(source)));
    $('tok-sample').value = source === 'zh' ? '从前，有一只可爱的小狐狸。' : 'Once upon a time, there was a little fox.';
    $('prompt').value = source === 'zh' ? '从前' : 'Once upon a time';
    $('next-prompt').value = $('prompt').value;
  }
}

/** The section's inputs: the source's radios, the pasted text's button, the file. */
export function wireText() {
  for (const radio of document.querySelectorAll('input[name=source]')) radio.addEventListener('change', chooseSource);
  $('use-text').addEventListener('click', () => guard(async () => showCorpus(await app.kiln.useCorpus($('paste').value))));
  $('file').addEventListener('change', () => guard(async () => {
    const file = $('file').files[0];
    if (file) showCorpus(await app.kiln.useCorpus(file));
  }));
}
