// The tokenizer section: trains a character-level or BPE tokenizer on the text and shows
// a sample sentence cut into its tokens.
import { t, onLanguageChange } from '../i18n.js';
import { $, app, views, viewsRead, say, guard } from '../page.js';
import { estimate } from './model.js';
import { showSftExample } from './sft.js';

export async function trainTokenizer() {
  const kind = $('tok-kind').value;
  const vocabSize = kind === 'bpe' ? Number($('tok-vocab').value) : undefined;
  say('tok-stats', () => t('tokenizer.training'));
  const info = await app.kiln.trainTokenizer(null, { kind, vocabSize });
  app.tokenizer = info;
  app.model = null;
  say('tok-stats', () => t(info.kind === 'bpe' ? 'tokenizer.statsBpe' : 'tokenizer.statsChar', { size: info.vocabSize }));
  app.done = {};
  await showTokens();
  await estimate();
  await showSftExample();
  await viewsRead(views.readCompare());
  views.stageMap();
}

export async function showTokens() {
  if (!app.tokenizer) return;
  const pieces = await app.kiln.tokenize($('tok-sample').value);
  $('tok-view').replaceChildren(...pieces.map(({ id, text }) => {
    const span = document.createElement('span');
    span.textContent = text;
    span.title = t('tokenizer.tokenTitle', { id });
    return span;
  }));
}

/** The tokenizer's kind and size, Train, and the sample sentence (re-cut as it is typed). */
export function wireTokenizer() {
  $('tok-kind').addEventListener('change', () => { $('tok-vocab').disabled = $('tok-kind').value === 'char'; });
  $('train-tokenizer').addEventListener('click', () => guard(trainTokenizer));
  let typing;
  $('tok-sample').addEventListener('input', () => { clearTimeout(typing); typing = setTimeout(() => guard(showTokens), 150); });
  // the tokens' titles say 'token 12' in words
  onLanguageChange(() => showTokens().catch(() => {}));
}
