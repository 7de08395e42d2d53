// The ten lines from Kiln's README, in a page that only installed the kiln-llm tarball.
const log = (line) => { document.getElementById('log').textContent += `${line}\n`; };
const text = await (await fetch('./stories.txt')).text();
window.result = { losses: [] };
try {
  // ---- the README's ten lines ----
  const { Kiln } = await import('kiln-llm');
  const kiln = await Kiln.create({ backend: 'auto' });
  await kiln.trainTokenizer(text, { vocabSize: 300 });
  await kiln.createModel({ preset: 'tiny' });
  await kiln.train({ stage: 'pretrain', steps: 15, onProgress: (p) => p.loss != null && window.result.losses.push(p.loss) });
  await kiln.train({ stage: 'sft', lang: 'en', steps: 4, onProgress: (p) => window.result.sft = p });
  let answer = '';
  for await (const piece of kiln.chat([{ role: 'user', content: 'Where did Lily go?' }], { maxTokens: 8 })) answer += piece;
  const answers = await kiln.sampleCandidates([{ role: 'user', content: 'Where did Lily go?' }], { k: 4, maxTokens: 8 });
  // (a person ranks answers in a page; here two prompts' answers in the order sampled)
  const rankingsJsonl = ['Where did Lily go?', 'Who came to play?'].map((q) => JSON.stringify({
    prompt: [{ role: 'user', content: q }], answers: answers.map((a) => a.text), ranks: [1, 2, 3, 4], verdict: 'ranked' })).join('\n');
  // (beyond the README: learning as the person ranks, an update every two rankings, then undone)
  const ranked = (q) => ({ prompt: [{ role: 'user', content: q }], answers: ['Home!', 'Home.', 'A park'], ranks: [1, 2, 3], verdict: 'ranked' });
  const online = [await kiln.learnFromRanking(ranked('Where did Lily go?'), { every: 2, steps: 2 })];
  online.push(await kiln.learnFromRanking(ranked('Who came to play?'), { every: 2, steps: 2 }), await kiln.undoUpdate(), await kiln.undoUpdate());
  window.result.online = online;
  await kiln.train({ stage: 'reward', data: rankingsJsonl, steps: 2, onProgress: (p) => window.result.reward = p });
  const files = await kiln.exportModel();
  // ---------------------------------
  let out = '';
  for await (const piece of kiln.generate('Once upon a time', { maxTokens: 20, temperature: 0 })) out += piece;
  Object.assign(window.result, { backend: kiln.backend, text: out, answer, candidates: answers, files: Object.keys(files).sort(), done: true });
  log(`trained on ${kiln.backend.kind}; generated: Once upon a time${out}`);
} catch (error) {
  window.result.error = `${error.code ?? ''} ${error.message}`;
  log(window.result.error);
}
