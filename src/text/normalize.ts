/**
 * Character-level normalisation with an offset map back to the original text.
 *
 * Taggers see the normalised text; every offset the pipeline reports must point
 * into the original, so each output UTF-16 unit records where its source
 * character starts. Rules work per character (never across characters) so the
 * map stays exact and the pass stays linear.
 */

export interface Normalized {
  text: string;
  /**
   * Length `text.length + 1`; entry i is the original UTF-16 offset of the
   * character that produced normalised unit i; the last entry is `original.length`.
   * Non-decreasing; equal neighbours only inside one character's expansion.
   */
  toOriginal: Int32Array;
}

/** Kept as-is: NFKC would change their meaning or break the offset map. */
function keepAsIs(cp: number): boolean {
  return (
    // Vulgar fractions: NFKC turns "1½" into "11⁄2", which reads as eleven halves.
    (cp >= 0x00bc && cp <= 0x00be) ||
    (cp >= 0x2150 && cp <= 0x215f) ||
    cp === 0x2189 ||
    // Superscripts/subscripts: "10⁹/L" must not become "109/L", nor "m²" "m2".
    cp === 0x00b2 ||
    cp === 0x00b3 ||
    cp === 0x00b9 ||
    (cp >= 0x2070 && cp <= 0x209f) ||
    (cp >= 0x02b0 && cp <= 0x02b8) ||
    (cp >= 0x02e0 && cp <= 0x02e4) ||
    (cp >= 0x1d2c && cp <= 0x1d6a) ||
    cp === 0x1d78 ||
    (cp >= 0x1d9b && cp <= 0x1dbf) ||
    // Ordinal indicators: "º" is often typed for the degree sign; NFKC makes it "o".
    cp === 0x00aa ||
    cp === 0x00ba
  );
}

/**
 * Explicit replacements, applied before NFKC. '' removes the character.
 * Returns undefined when the table has no entry.
 */
function explicit(cp: number): string | undefined {
  // Unicode spaces: taggers and the word splitter treat them like ' '.
  if (cp === 0x00a0 || cp === 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp === 0x202f || cp === 0x205f || cp === 0x3000) {
    return ' ';
  }
  // Line/paragraph separators: line-based sentence rules must see them.
  if (cp === 0x2028 || cp === 0x2029) return '\n';
  // Invisible characters that would otherwise glue into or split words.
  // ZWJ/ZWNJ (U+200C/D) stay: they carry meaning in emoji and some scripts.
  if (
    cp === 0x200b || // zero-width space
    cp === 0xfeff || // BOM / zero-width no-break space
    cp === 0x00ad || // soft hyphen (hyphenation hint, not a hyphen)
    cp === 0x2060 || // word joiner
    cp === 0x180e || // Mongolian vowel separator (old zero-width space)
    cp === 0x200e || // LRM
    cp === 0x200f || // RLM
    (cp >= 0x202a && cp <= 0x202e) || // bidi embeddings/overrides
    (cp >= 0x2066 && cp <= 0x2069) // bidi isolates
  ) {
    return '';
  }
  // Single quotes, primes and the acute accent typed as an apostrophe.
  if (cp === 0x2018 || cp === 0x2019 || cp === 0x201a || cp === 0x201b || cp === 0x2032 || cp === 0x2035 || cp === 0x2039 || cp === 0x203a || cp === 0x00b4) {
    return "'";
  }
  // Double quotes, double primes and guillemets.
  if (cp === 0x201c || cp === 0x201d || cp === 0x201e || cp === 0x201f || cp === 0x2033 || cp === 0x2036 || cp === 0x00ab || cp === 0x00bb) {
    return '"';
  }
  // Hyphens and dashes (incl. non-breaking hyphen, figure dash, minus sign).
  if ((cp >= 0x2010 && cp <= 0x2015) || cp === 0x2212) return '-';
  return undefined;
}

/**
 * Windows-1252 meaning of the C1 range. C1 controls in notes are almost always
 * cp1252 bytes decoded as Latin-1 ("patient\u0092s"), so repairing them keeps
 * words whole; the five undefined cp1252 bytes become ' '.
 */
const CP1252_C1 = [
  0x20ac, 0x20, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0x20, 0x017d, 0x20, 0x20, 0x2018, 0x2019, 0x201c,
  0x201d, 0x2022, 0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x20, 0x017e, 0x0178,
];

/** Whitespace, control or punctuation inside a multi-character NFKC result. */
const SPLITTING = /[\s\p{P}\p{Cc}]/u;

function computeReplacement(cp: number): string | null {
  if (cp >= 0x80 && cp <= 0x9f) {
    const repaired = CP1252_C1[cp - 0x80];
    if (repaired === 0x20) return ' ';
    return computeReplacement(repaired) ?? String.fromCharCode(repaired);
  }
  const table = explicit(cp);
  if (table !== undefined) return table;
  if (keepAsIs(cp)) return null;
  const ch = String.fromCodePoint(cp);
  const nfkc = ch.normalize('NFKC');
  if (nfkc === ch) return null;
  const cps = Array.from(nfkc);
  if (cps.length === 1) {
    // e.g. U+FE58 small em dash -> U+2014 -> '-'.
    const again = explicit(cps[0].codePointAt(0) as number);
    return again ?? nfkc;
  }
  // Multi-character results that contain a separator (…->"...", ℅->"c/o",
  // ⑴->"(1)", ¨->" ̈") would turn one original character into several tokens
  // that all map to the same span; keep those characters as they are.
  if (SPLITTING.test(nfkc)) return null;
  // Letter expansions: ﬁ->fi, ™->TM, ㎎->mg, ℃->°C.
  return nfkc;
}

const cache = new Map<number, string | null>();

/** Replacement for a non-ASCII code point, or null when it stays unchanged. */
function replacementFor(cp: number): string | null {
  let r = cache.get(cp);
  if (r === undefined) {
    r = computeReplacement(cp);
    cache.set(cp, r);
  }
  return r;
}

// Classification result for the character at i, shared to avoid allocating per character.
let gWidth = 1;

/**
 * Replacement for the character at i (null = unchanged, '' = removed); sets
 * gWidth to the number of original UTF-16 units it spans.
 */
function classify(s: string, i: number): string | null {
  const c = s.charCodeAt(i);
  gWidth = 1;
  if (c < 0x80) {
    if (c >= 0x20) return c === 0x7f ? ' ' : null;
    if (c === 0x0a || c === 0x09) return null;
    if (c === 0x0d) {
      // CRLF and lone CR both become one '\n'.
      if (s.charCodeAt(i + 1) === 0x0a) gWidth = 2;
      return '\n';
    }
    return ' ';
  }
  if (c >= 0xd800 && c <= 0xdfff) {
    if (c <= 0xdbff) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        gWidth = 2;
        return replacementFor(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
      }
    }
    // Lone surrogate: invalid UTF-16 that encoders would mangle anyway.
    return '\ufffd';
  }
  return replacementFor(c);
}

function isWs(code: number): boolean {
  return code === 0x20 || code === 0x0a || code === 0x09;
}

function identity(original: string): Normalized {
  const n = original.length;
  const map = new Int32Array(n + 1);
  for (let k = 0; k <= n; k++) map[k] = k;
  return { text: original, toOriginal: map };
}

/**
 * Normalises `original` character by character (see module docs for the rules).
 * Linear time; returns the original string with an identity map when nothing changes.
 */
export function normalize(original: string): Normalized {
  const n = original.length;
  let first = 0;
  // Fast path: most notes are plain ASCII with nothing to change.
  while (first < n) {
    const c = original.charCodeAt(first);
    if (c >= 0x20 && c < 0x7f) {
      first++;
      continue;
    }
    if (classify(original, first) !== null) break;
    first += gWidth;
  }
  if (first === n) return identity(original);

  let map = new Int32Array(n + (n >> 3) + 16);
  for (let k = 0; k < first; k++) map[k] = k;
  let outLen = first;
  const parts: string[] = [];
  let runStart = 0; // start of the pending unchanged run (copied by slice)
  let removedStart = -1; // start of a pending run of removed characters
  let lastWs = first === 0 || isWs(original.charCodeAt(first - 1));

  const ensure = (extra: number): void => {
    if (outLen + extra + 1 <= map.length) return;
    const next = new Int32Array(Math.max(map.length * 2, outLen + extra + 1));
    next.set(map);
    map = next;
  };
  // Where the output unit produced by the character at p starts in the original.
  // A removed run right before it attaches to the preceding whitespace (so a
  // token after "\u200b" starts cleanly) or otherwise to this character (so
  // the token before it ends cleanly).
  const boundary = (p: number): number => {
    if (removedStart < 0) return p;
    const b = outLen === 0 || lastWs ? p : removedStart;
    removedStart = -1;
    return b;
  };

  let i = first;
  while (i < n) {
    const rep = classify(original, i);
    const width = gWidth;
    if (rep === null) {
      ensure(width);
      map[outLen] = boundary(i);
      if (width === 2) map[outLen + 1] = i + 1;
      outLen += width;
      lastWs = isWs(original.charCodeAt(i));
    } else {
      if (runStart < i) parts.push(original.slice(runStart, i));
      runStart = i + width;
      if (rep.length === 0) {
        if (removedStart < 0) removedStart = i;
      } else {
        parts.push(rep);
        ensure(rep.length);
        // Every unit of an expansion maps to the same original character, so
        // a span over part of "fi" from "ﬁ" still covers the whole ligature.
        const b = boundary(i);
        for (let k = 0; k < rep.length; k++) map[outLen + k] = b;
        outLen += rep.length;
        lastWs = isWs(rep.charCodeAt(rep.length - 1));
      }
    }
    i += width;
  }
  if (runStart < n) parts.push(original.slice(runStart, n));
  map[outLen] = n;
  const text = parts.join('');
  return { text, toOriginal: map.subarray(0, outLen + 1) };
}

/**
 * Maps a normalised span [start, end) to the original. Plain indexing
 * (`toOriginal[start]`, `toOriginal[end]`) is exact except when `end` falls
 * inside one character's expansion; this also extends such an end to cover the
 * whole original character.
 */
export function mapSpan(toOriginal: Int32Array, start: number, end: number): { start: number; end: number } {
  const s = toOriginal[start];
  if (end <= start) return { start: s, end: s };
  const inner = toOriginal[end - 1];
  let e = end;
  const last = toOriginal.length - 1;
  while (e < last && toOriginal[e] === inner) e++;
  return { start: s, end: toOriginal[e] };
}
