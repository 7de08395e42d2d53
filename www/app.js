// The Kiln demo page, built on the kiln-llm package (lib/kiln.js). Everything the model
// produces is written with textContent: nothing is ever parsed as HTML. The page's own
// words come from i18n.js (English or Chinese); data goes in untranslated (content()).
// Each section of the page is a module in sections/ that owns its part of the DOM; the
// state they share and tests read (window.kilnApp) is page.js's. This file starts them.
import { Kiln } from './lib/kiln.js';
import { t, tParts, content, startI18n } from './i18n.js';
import { setUpViews } from './views.js';
import { $, app, say, guard, setButtons, useViews } from './page.js';
import { chooseSource, wireText } from './sections/text.js';
import { wireTokenizer } from './sections/tokenizer.js';
import { setPreset, showBackend, wireModel } from './sections/model.js';
import { offerResume, wireAutosave } from './sections/autosave.js';
import { wireTraining } from './sections/train.js';
import { addExampleRow, wireSft } from './sections/sft.js';
import { loadRankings, showRankings, restoreRankingInProgress, wireRanking } from './sections/rank.js';
import { restoreRankSource } from './sections/rank_source.js';
import { wireAlignment } from './sections/align.js';
import { wireRules } from './sections/rules.js';
import { wireOnline } from './sections/online.js';
import { wireThumbs } from './sections/thumbs.js';
import { wirePeople } from './sections/people.js';
import { wireChat } from './sections/chat.js';
import { wirePlayground } from './sections/playground.js';
import { wireFiles } from './sections/files.js';

/** Puts Kiln's defaults (the core's, one source for the CLI, the JS API and the page) in the inputs. */
function showDefaults(d) {
  const pre = d.training.pretrain;
  [$('steps').value, $('batch').value, $('lr').value, $('seed').value] = [pre.steps, pre.batchSize, pre.lr, pre.seed];
  [$('sft-steps').value, $('sft-lr').value] = [d.training.sft.steps, d.training.sft.lr];
  // the core's f32 defaults, written as they were meant (0.8, not 0.800000011920929)
  const f32 = (x) => Number(x.toPrecision(6));
  [$('temperature').value, $('top-k').value] = [f32(d.sampling.temperature), d.sampling.topK];
  $('chat-temperature').value = f32(d.chat.temperature);
  $('next-temperature').value = $('next-temperature-value').textContent = f32(d.sampling.temperature);
  const ppo = d.training.ppo;
  [$('rank-k').value, $('rank-temperature').value, $('rank-top-k').value, $('rank-top-p').value] = [ppo.answersPerPrompt, f32(ppo.temperature), ppo.topK, f32(ppo.topP)];
  setPreset('tiny');
}

/** Each section's inputs, in the page's order. */
function wire() {
  wireText();
  wireTokenizer();
  wireModel();
  wireAutosave();
  wireTraining();
  wireSft();
  wireChat();
  wirePlayground();
  wireRanking();
  wireAlignment();
  wireRules();
  wireOnline();
  wireThumbs();
  wirePeople();
  wireFiles();
}

async function main() {
  // a reload opens at the top (the resume offer, the stage map), not where the last page was
  history.scrollRestoration = 'manual';
  startI18n($('language'));
  say('backend', () => t('backend.starting'));
  say('train-stats', () => t('train.statsEmpty'));
  wire();
  setButtons('idle');
  const query = new URLSearchParams(location.search);
  const backend = query.get('backend') ?? 'auto';
  // ?threads=N: CPU workers sharing each step (the default is one per core, at most 4)
  const threads = Number(query.get('threads')) || undefined;
  // ?simd=simd128|relaxed: force a WebAssembly build (the default: relaxed SIMD where the
  // browser has it)
  const simd = query.get('simd') ?? undefined;
  await guard(async () => {
    app.kiln = await Kiln.create({ backend, threads, simd });
    app.backend = app.kiln.backend;
    app.defaults = await app.kiln.defaults();
    showDefaults(app.defaults);
    useViews(setUpViews(app, guard));
    app.rankings = loadRankings();
    showRankings();
    addExampleRow('What is the capital of France?', 'Paris.');
    addExampleRow('Say hello in Spanish.', 'Hola.');
    showBackend(app.backend);
    $('backend-choice').value = backend;
    $('backend-choice').addEventListener('change', () => {
      const url = new URL(location.href);
      url.searchParams.set('backend', $('backend-choice').value);
      location.assign(url);
    });
    await chooseSource();
    restoreRankSource();
    restoreRankingInProgress();
    // last, so nothing after it moves the page: the resume offer, focused, at the top
    await offerResume();
    app.ready = true;
  });
  if (!app.kiln) {
    // the worker never started (a bad ?simd=, no WebAssembly): say so where the page
    // says where it trains, not only in the message line at the foot of the page
    $('backend').className = 'badge error';
    say('backend', () => tParts('backend.failed', { reason: content(app.error ?? '') }));
  }
}

main();
