// The ranking's arithmetic, apart from the page: identical answers become one card, a card
// moves to a place, and an order typed as the cards' numbers ('3142', '3=14 2') becomes ranks.
// A ranking keeps every sampled answer (the stored format, 2 to 6 answers); the answers of one
// card share its rank, so the same text is never preferred to itself.

/** The cards of `answers`: one per distinct text, numbered in the order they were sampled.
 * [{ text, members: [answer indices] }] */
export function cardsOf(answers) {
  const byText = new Map();
  for (const [i, text] of answers.entries()) {
    // the same words with other spaces around them are the same answer (as the pairs' export reads them)
    const key = text.trim();
    if (!byText.has(key)) byText.set(key, { text, members: [] });
    byText.get(key).members.push(i);
  }
  return [...byText.values()];
}

/** Each card's rank: its best member's (a stored ranking may have ranked copies apart). */
export const cardRanks = (cards, ranks) => cards.map((c) => Math.min(...c.members.map((i) => ranks[i])));

/** The answers' ranks from the cards' ranks: every member of a card gets the card's. */
export function answerRanks(cards, ranks, count) {
  const out = new Array(count).fill(1);
  cards.forEach((c, k) => { for (const i of c.members) out[i] = ranks[k]; });
  return out;
}

/** The cards' indices in the order shown: by rank, then by number. */
export const shownOrder = (ranks) => ranks.map((_, k) => k).sort((a, b) => ranks[a] - ranks[b] || a - b);

/** Ranks after card `card` moves to place `place` (1-based) and the others shift down: the
 * shown order, strict (a move ends any tie). */
export function moveCard(ranks, card, place) {
  const order = shownOrder(ranks).filter((k) => k !== card);
  order.splice(Math.min(Math.max(place, 1), order.length + 1) - 1, 0, card);
  const out = new Array(ranks.length);
  order.forEach((k, position) => { out[k] = position + 1; });
  return out;
}

/**
 * Ranks from an order typed as the cards' numbers, best first: '3142', spaces allowed
 * ('3 1 4 2'), '=' between two numbers for a tie ('3=14 2': 3 and 1 tie for best). Cards
 * left out come after the named ones, tied. Returns { ranks } or { error: [message key, vars] }.
 */
export function parseOrder(typed, count) {
  const text = typed.replace(/\s+/g, '');
  if (!/^[1-9](=?[1-9])*$/.test(text)) return { error: ['rank.orderSyntax', { count }] };
  const ranks = new Array(count).fill(0);
  let place = 0;
  for (let at = 0; at < text.length; at += 1) {
    if (text[at] === '=') continue;
    const card = Number(text[at]);
    if (card > count) return { error: ['rank.orderNoCard', { card, count }] };
    if (ranks[card - 1]) return { error: ['rank.orderTwice', { card }] };
    if (text[at - 1] !== '=') place += 1;
    ranks[card - 1] = place;
  }
  const rest = place + 1;
  return { ranks: ranks.map((r) => r || rest) };
}

/** True when the ranks prefer no card to another: every card tied (or only one card). */
export const allTied = (ranks) => ranks.every((r) => r === ranks[0]);
