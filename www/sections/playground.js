// The playground section: the model continues a prompt, token by token, as plain text.
import { $, app, guard, pageError } from '../page.js';

async function generate() {
  $('generate').disabled = true;
  $('output').textContent = $('prompt').value;
  await guard(async () => {
    if (!app.model) throw pageError('error.modelFirst', 'config');
    const options = { maxTokens: Number($('max-tokens').value), temperature: Number($('temperature').value), topK: Number($('top-k').value) };
    for await (const piece of app.kiln.generate($('prompt').value, options)) {
      $('output').textContent += piece;
    }
  });
  $('generate').disabled = false;
  app.generated = $('output').textContent;
}

/** Generate. */
export function wirePlayground() {
  $('generate').addEventListener('click', generate);
}
