// The chat section: a conversation with the model (an optional system message, the
// answer streamed into its bubble as text) and the held-out questions to try it on.
import { $, app, guard, pageError } from '../page.js';
import { sftSource } from './sft.js';

function chatBubble(role, text) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  div.textContent = text;
  $('chat-log').append(div);
  div.scrollIntoView({ block: 'nearest' });
  return div;
}

async function sendChat() {
  const content = $('chat-input').value.trim();
  if (!content) return;
  $('chat-send').disabled = true;
  await guard(async () => {
    if (!app.model) throw pageError('error.modelFirst', 'config');
    $('chat-input').value = '';
    app.chat.push({ role: 'user', content });
    chatBubble('user', content);
    const bubble = chatBubble('assistant', '');
    const system = $('chat-system').value.trim();
    const messages = system ? [{ role: 'system', content: system }, ...app.chat] : app.chat;
    let answer = '';
    for await (const piece of app.kiln.chat(messages, { temperature: Number($('chat-temperature').value) })) {
      answer += piece;
      bubble.textContent = answer;
    }
    app.chat.push({ role: 'assistant', content: answer });
    app.lastAnswer = answer;
  });
  $('chat-send').disabled = false;
}

function resetChat() {
  app.chat = [];
  $('chat-log').replaceChildren();
}

/** Puts the next held-out question in the chat box. The questions come from the worker:
 * until they are there the button is disabled and the box and expectedAnswer are empty, so
 * nothing (a person, a test) reads the last question as the next one. */
async function askHeldOut() {
  const lang = sftSource() === 'zh' ? 'zh' : 'en';
  const button = $('chat-heldout');
  button.disabled = true;
  app.expectedAnswer = null;
  $('chat-input').value = '';
  try {
    app.heldOut ??= {};
    app.heldOut[lang] ??= await app.kiln.instructionExamples(lang, 'heldout', 20);
    // in order, so a person (or a test) can go through them one by one
    app.heldOutIndex = ((app.heldOutIndex ?? -1) + 1) % app.heldOut[lang].length;
    const conv = app.heldOut[lang][app.heldOutIndex];
    $('chat-input').value = conv.at(-2).content;
    app.expectedAnswer = conv.at(-1).content;
  } finally {
    button.disabled = false;
  }
}

/** Send (or Enter; Shift+Enter is a new line), Reset, and the held-out question. */
export function wireChat() {
  $('chat-send').addEventListener('click', sendChat);
  $('chat-input').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) { event.preventDefault(); sendChat(); }
  });
  $('chat-reset').addEventListener('click', resetChat);
  $('chat-heldout').addEventListener('click', () => guard(askHeldOut));
}
