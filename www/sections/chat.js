// The chat section: a conversation with the model (an optional system message, the
// answer streamed into its bubble as text) and the held-out questions to try it on.
import { t, tParts, content as contentOf } from '../i18n.js';
import { $, app, guard, pageError, say } from '../page.js';
import { sftSource } from './sft.js';
import { thumbButtons } from './thumbs.js';

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
    // beside the answer, not in it: the bubble's text is the answer's
    bubble.after(thumbButtons(messages.slice(), answer));
    app.chat.push({ role: 'assistant', content: answer });
    app.lastAnswer = answer;
    if (app.expectedAnswer != null && content === app.heldOutQuestion) {
      const expected = app.expectedAnswer;
      const matched = await app.kiln.answerMatches(expected, answer);
      app.lastMatched = matched;
      say('chat-check', () => tParts('chat.expected', { answer: contentOf(expected), verdict: t(matched ? 'chat.matched' : 'chat.notMatched') }));
    }
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
  say('chat-check', () => '');
  try {
    // the conversations the fine-tuning held out: the person's own when they gave a file,
    // else the built-in questions with their stories
    const own = await app.kiln.heldOut(20);
    const convs = own.length ? own : await app.kiln.instructionExamples(lang, 'heldout', 20);
    app.heldOutSource = own.length && ['file', 'table'].includes(app.sftSource) ? 'yours' : 'builtin';
    // in order, so a person (or a test) can go through them one by one
    app.heldOutIndex = ((app.heldOutIndex ?? -1) + 1) % convs.length;
    const conv = convs[app.heldOutIndex];
    const asked = conv.findLastIndex((m) => m.role === 'user');
    $('chat-input').value = conv[asked].content;
    app.heldOutQuestion = conv[asked].content.trim();
    app.expectedAnswer = conv.at(-1).role === 'assistant' ? conv.at(-1).content : null;
    say('chat-check', () => t(app.heldOutSource === 'yours' ? 'chat.fromYours' : 'chat.fromBuiltin'));
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
