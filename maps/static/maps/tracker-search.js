// Which trackers a search finds: the list's twin of tracker_search
// (tracking/selectors.py), held to the same cases (tests/cases/search.json).
// Every word must be in the tracker's name (any case) or start its device id
// (hyphens and case ignored); words split as the admin's search splits them,
// so a quoted phrase stays one word.

// Django's smart_split: a run of quoted strings and what touches them, or any other run of non-spaces.
const WORD = /(?:[^\s'"]*(?:(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')[^\s'"]*)+)|\S+/g;
const HEX = /^[0-9a-f]{1,32}$/;

/** A quoted word without its quotes, as Django's unescape_string_literal reads it. */
function unquoted(word) {
  const quote = word[0];
  if (word.length < 2 || (quote !== '"' && quote !== "'") || word.at(-1) !== quote) return word;
  return word.slice(1, -1).replaceAll(`\\${quote}`, quote).replaceAll("\\\\", "\\");
}

/** The hex digits a word's UUID prefix stands for, or null if it is no UUID prefix. */
function idPrefix(word) {
  const digits = word.trim().toLowerCase().replaceAll("-", "");
  return HEX.test(digits) ? digits : null;
}

/**
 * The words of a search, each ready to compare: `text` in lower case, and
 * `id`, the hex digits it starts ids with (null when it cannot start one).
 * @param {string} search
 * @returns {Array<{text: string, id: string|null}>}
 */
export function searchWords(search) {
  if (search.trim() === "") return [];
  return Array.from(search.match(WORD) ?? [], (raw) => {
    const word = unquoted(raw);
    return { text: word.toLowerCase(), id: idPrefix(word) };
  });
}

/** What a tracker is searched by, computed once per tracker: its name in lower case and its id's hex digits. */
export function searchKey(name, id) {
  return { name: name.toLowerCase(), id: id.toLowerCase().replaceAll("-", "") };
}

/**
 * Whether a tracker (its searchKey) is found by the words (from searchWords); no words find every tracker.
 * @param {{name: string, id: string}} key
 * @param {Array<{text: string, id: string|null}>} words
 */
export function found(key, words) {
  for (const word of words) {
    if (key.name.includes(word.text)) continue;
    if (word.id !== null && key.id.startsWith(word.id)) continue;
    return false;
  }
  return true;
}
