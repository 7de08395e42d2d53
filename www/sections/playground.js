// The playground section: the model continues a prompt, token by token, as plain text.
// A fine-tuned (chat) model answers inside its chat template: the line under the output
// says so, since outside it (here) it may end at once.
import { t } from '../i18n.js';
import { $, app, guard, pageError, say } from '../page.js';

/** The model learnt to answer in the chat template (fine-tuned, or aligned after that). */
const isChatModel = () => Boolean(app.done?.sft || app.done?.align)
  || ['sft', 'reward', 'ppo', 'dpo', 'kto', 'rloo', 'grpo'].includes(app.stage ?? app.model?.stage);

async function generate() {
  $('generate').disabled = true;
  say('play-note', () => '');
  await guard(async () => {
    if (!app.model) throw pageError('error.modelFirst', 'config');
    const prompt = $('prompt').value;
    if (!prompt) throw pageError('error.playPrompt', 'data');
    $('output').textContent = prompt;
    const options = { maxTokens: Number($('max-tokens').value), temperature: Number($('temperature').value), topK: Number($('top-k').value) };
    let written = '';
    for await (const piece of app.kiln.generate(prompt, options)) {
      written += piece;
      $('output').textContent += piece;
    }
    const chat = isChatModel();
    const key = chat ? (written ? 'play.chatModel' : 'play.chatModelEnded') : (written ? null : 'play.ended');
    if (key) say('play-note', () => t(key));
  });
  $('generate').disabled = false;
  app.generated = $('output').textContent;
}

/** Generate. */
export function wirePlayground() {
  $('generate').addEventListener('click', generate);
}
