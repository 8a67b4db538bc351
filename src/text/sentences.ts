/**
 * Rule-based sentence splitting for clinical notes (run on NORMALISED text).
 *
 * Clinical notes mix prose with section headers, lists and dosing
 * abbreviations, and the mtsamples export replaced newlines with commas
 * ("allergies.,MEDICATIONS: , Her only..."), so plain ". + Capital" splitting
 * over- and under-splits. The rules, in order of application:
 * - a blank line always ends a sentence;
 * - a newline ends a sentence when the next line starts a list item, an
 *   all-caps header or a "Label:" field; otherwise it is a soft wrap;
 * - an ALL-CAPS header ending in ':' at a sentence start is its own sentence
 *   (also right after a comma: the mtsamples newline artefact ",PLAN:");
 *   a Title-case "Label:" is its own sentence only when it ends the line;
 * - '.', '!', '?' (plus closing quotes/brackets) end a sentence when followed
 *   by a newline, by spaces and an upper-case letter, digit, quote or opening
 *   bracket, or directly by ',' and such a character (the artefact);
 * - after a '.', abbreviations are judged by the word before it (see below);
 * - list markers (1. 2) a. - * •) at a sentence start never end it, and inline
 *   enumerations "1. ... 2. ..." split before the next expected number;
 * - sentences are trimmed of whitespace and of leading artefact commas.
 */

export interface TextSpan {
  start: number;
  end: number;
}

/** Never sentence-final: titles and Latin abbreviations that need a following word. */
const NEVER_FINAL = new Set(['dr', 'drs', 'mr', 'mrs', 'ms', 'mx', 'prof', 'st', 'vs', 'v', 'e.g', 'i.e', 'cf', 'approx', 'fig', 'figs', 'viz']);

/**
 * Units and dosing abbreviations. In mtsamples "10 cm.  The" and "p.r.n.  Patient"
 * are nearly always sentence ends, so these split like ordinary words except
 * before a route/frequency word ("40 mg. PO daily").
 */
const DOSING_OR_UNIT = new Set([
  'mg',
  'mcg',
  'ug',
  'µg',
  'μg',
  'g',
  'kg',
  'ml',
  'dl',
  'l',
  'cc',
  'cm',
  'mm',
  'meq',
  'mmol',
  'iu',
  'units',
  'unit',
  'tab',
  'tabs',
  'cap',
  'caps',
  'b.i.d',
  't.i.d',
  'q.i.d',
  'q.d',
  'q.o.d',
  'q.h.s',
  'h.s',
  'p.o',
  'p.r.n',
  'a.m',
  'p.m',
  'bid',
  'tid',
  'qid',
  'qd',
  'qhs',
  'prn',
  'po',
]);

/** Route/frequency words that continue a dose after "mg." and friends. */
const DOSE_CONTINUATION = new Set(['po', 'iv', 'im', 'sc', 'sq', 'sl', 'pr', 'bid', 'tid', 'qid', 'qd', 'qod', 'qhs', 'hs', 'qam', 'qpm', 'prn', 'daily']);

/**
 * Words that start sentences after a single-letter "initial": in notes
 * "Dr. X.  He ..." ends a sentence while "J. Smith" does not.
 */
const COMMON_STARTERS = new Set([
  'a',
  'an',
  'the',
  'he',
  'she',
  'it',
  'i',
  'we',
  'they',
  'this',
  'that',
  'these',
  'those',
  'there',
  'his',
  'her',
  'their',
  'our',
  'my',
  'no',
  'all',
  'at',
  'in',
  'on',
  'once',
  'after',
  'before',
  'then',
  'if',
  'when',
  'patient',
  'pt',
  'plan',
  'will',
  'please',
  'thank',
]);

const BULLETS = new Set([0x2022, 0x00b7, 0x25aa, 0x25ab, 0x25a0, 0x25a1, 0x25cf, 0x25cb, 0x25e6, 0x2023, 0x2043, 0x2219]);

function isUpperAscii(c: number): boolean {
  return c >= 0x41 && c <= 0x5a;
}
function isLowerAscii(c: number): boolean {
  return c >= 0x61 && c <= 0x7a;
}
function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}
function isHSpace(c: number): boolean {
  return c === 0x20 || c === 0x09;
}
function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x0c || c === 0x0b;
}
const UPPER = /\p{Lu}/u;
const LOWER = /\p{Ll}/u;
const LETTER = /\p{L}/u;
function isUpper(c: number): boolean {
  return c < 0x80 ? isUpperAscii(c) : UPPER.test(String.fromCharCode(c));
}
function isLower(c: number): boolean {
  return c < 0x80 ? isLowerAscii(c) : LOWER.test(String.fromCharCode(c));
}
function isLetter(c: number): boolean {
  return c < 0x80 ? isUpperAscii(c) || isLowerAscii(c) : LETTER.test(String.fromCharCode(c));
}
function isAlnum(c: number): boolean {
  return isDigit(c) || isLetter(c);
}

/** Characters that may start a sentence after a terminator and whitespace. */
function isSentenceOpener(c: number): boolean {
  return isUpper(c) || isDigit(c) || c === 0x22 || c === 0x27 || c === 0x28 || c === 0x5b || BULLETS.has(c);
}

/**
 * End (exclusive, after the ':') of an ALL-CAPS header starting at p, or -1.
 * Words of upper-case letters/digits and / & - ' ( ) # ("2-D M-MODE:"), at least two letters,
 * at most 60 characters, ending in ':' not followed by a digit (not a time).
 */
function capsHeaderEnd(text: string, p: number, limit: number): number {
  if (p >= limit) return -1;
  const first = text.charCodeAt(p);
  if (!isUpper(first) && !isDigit(first)) return -1;
  let letters = 0;
  const max = Math.min(limit, p + 60);
  for (let j = p; j < max; j++) {
    const c = text.charCodeAt(j);
    if (c === 0x3a) {
      if (letters < 2) return -1;
      const after = text.charCodeAt(j + 1);
      if (isDigit(after)) return -1;
      return j + 1;
    }
    if (isUpper(c)) letters++;
    else if (isLower(c)) return -1;
    else if (!(isDigit(c) || isHSpace(c) || c === 0x2f || c === 0x26 || c === 0x2d || c === 0x27 || c === 0x28 || c === 0x29 || c === 0x23)) {
      return -1;
    }
  }
  return -1;
}

/** A "Label:" match: `end` is after the ':' (or -1); `alone` when nothing but spaces follows it on its line. */
interface LabelMatch {
  readonly end: number;
  readonly alone: boolean;
}
// Shared for the common no-match case, so scanning allocates only on a match.
const NO_LABEL: LabelMatch = { end: -1, alone: false };

/** The "Label:" at a line start (1-5 words, first capitalised, no digits), or NO_LABEL. */
function labelAt(text: string, p: number, limit: number): LabelMatch {
  if (p >= limit || !isUpper(text.charCodeAt(p))) return NO_LABEL;
  let words = 1;
  const max = Math.min(limit, p + 50);
  for (let j = p + 1; j < max; j++) {
    const c = text.charCodeAt(j);
    if (c === 0x3a) {
      if (isDigit(text.charCodeAt(j + 1))) return NO_LABEL;
      let k = j + 1;
      while (k < limit && isHSpace(text.charCodeAt(k))) k++;
      return { end: j + 1, alone: k >= limit || text.charCodeAt(k) === 0x0a };
    }
    if (c === 0x20) {
      if (text.charCodeAt(j - 1) === 0x20) return NO_LABEL;
      if (++words > 5) return NO_LABEL;
    } else if (!(isLetter(c) || c === 0x2f || c === 0x26 || c === 0x2d || c === 0x27)) {
      return NO_LABEL;
    }
  }
  return NO_LABEL;
}

/** A list marker match: `end` of the marker (or -1); `number` is its number, -1 for bullets, letters and numerals. */
interface MarkerMatch {
  readonly end: number;
  readonly number: number;
}
const NO_MARKER: MarkerMatch = { end: -1, number: -1 };

/**
 * The list marker at p: a number (1-99) or one letter or a Roman numeral followed
 * by '.' or ')', or a bullet ('-', '*', '•' ...), then horizontal space; else NO_MARKER.
 */
function listMarkerAt(text: string, p: number, limit: number, allowLetters: boolean): MarkerMatch {
  if (p >= limit) return NO_MARKER;
  const c = text.charCodeAt(p);
  if (c === 0x2d || c === 0x2a || BULLETS.has(c)) {
    // "-5 mg" or "--" are not bullets: require space after.
    return p + 1 < limit && isHSpace(text.charCodeAt(p + 1)) ? { end: p + 1, number: -1 } : NO_MARKER;
  }
  let j = p;
  let number = -1;
  if (isDigit(c)) {
    // 1-2 digits, no leading zero: "250,000." is a number, not item 000.
    if (c === 0x30) return NO_MARKER;
    while (j < limit && j - p < 2 && isDigit(text.charCodeAt(j))) j++;
    if (j < limit && isDigit(text.charCodeAt(j))) return NO_MARKER;
    number = Number(text.slice(p, j));
  } else if (allowLetters && isLetter(c)) {
    while (j < limit && j - p < 4 && isLetter(text.charCodeAt(j))) j++;
    const word = text.slice(p, j);
    if (word.length > 1 && !/^[ivxIVX]+$/.test(word)) return NO_MARKER;
  } else {
    return NO_MARKER;
  }
  const d = text.charCodeAt(j);
  if (j < limit && (d === 0x2e || d === 0x29) && (j + 1 >= limit || isSpace(text.charCodeAt(j + 1)))) {
    return { end: j + 1, number };
  }
  return NO_MARKER;
}

/** The word (letters and inner dots, e.g. "b.i.d") ending right before position dot. */
function wordBefore(text: string, dot: number): { word: string; start: number } {
  let s = dot;
  while (s > 0) {
    const c = text.charCodeAt(s - 1);
    if (isLetter(c) || (c === 0x2e && s - 1 > 0 && isLetter(text.charCodeAt(s - 2)))) s--;
    else break;
  }
  return { word: text.slice(s, dot), start: s };
}

/** Letters of the word starting at p (stopping at anything else). */
function wordAt(text: string, p: number): string {
  let e = p;
  while (e < text.length && (isLetter(text.charCodeAt(e)) || text.charCodeAt(e) === 0x2e)) e++;
  return text.slice(p, e).replace(/\./g, '');
}

/**
 * Decides whether the '.' at `dot` is an abbreviation that does NOT end the
 * sentence. `next` is the first position after the whitespace (or artefact
 * comma) that follows; `gapLen` counts the spaces in between.
 */
function abbreviationBlocks(text: string, dot: number, next: number, newline: boolean, gapLen: number, viaComma: boolean): boolean {
  const { word, start } = wordBefore(text, dot);
  if (word.length === 0) return false;
  // "1st." or "x2." are not abbreviations.
  if (start > 0 && isAlnum(text.charCodeAt(start - 1))) return false;
  const lower = word.toLowerCase();
  const nc = text.charCodeAt(next);
  // "No. 2" but "Allergies: No.  She ..."
  if (lower === 'no' || lower === 'nos') return !newline && !viaComma && (isDigit(nc) || nc === 0x23);
  if (lower === 'al') return start >= 3 && text.slice(start - 3, start).toLowerCase() === 'et ';
  // Single upper-case initial ("J. Smith"). In notes "Dr. X.  He ..." is far
  // more common, so it ends a sentence on the typist's double space, a
  // newline, the comma artefact, or before a typical sentence-starting word.
  if (word.length === 1 && isUpper(word.charCodeAt(0))) {
    if (newline || viaComma || gapLen >= 2) return false;
    const nw = wordAt(text, next);
    if (COMMON_STARTERS.has(nw.toLowerCase())) return false;
    if (nw.length >= 2 && nw === nw.toUpperCase()) return false;
    return isUpper(nc);
  }
  if (NEVER_FINAL.has(lower)) return true;
  if (newline || viaComma) return false;
  if (DOSING_OR_UNIT.has(lower) || /^[a-z](\.[a-z0-9]+)+$/i.test(word)) {
    return DOSE_CONTINUATION.has(wordAt(text, next).toLowerCase());
  }
  return false;
}

/** True when only spaces/tabs separate p from the previous newline (or the text start). */
function atLineStart(text: string, p: number): boolean {
  let q = p;
  while (q > 0 && isHSpace(text.charCodeAt(q - 1))) q--;
  return q === 0 || text.charCodeAt(q - 1) === 0x0a;
}

/**
 * Splits normalised text into sentence spans (UTF-16 offsets, end exclusive),
 * trimmed and non-empty, in order.
 */
export function splitSentences(text: string): TextSpan[] {
  const n = text.length;
  const out: TextSpan[] = [];
  let segStart = 0;
  let expectNext = -1; // next number of an inline enumeration, or -1

  const emit = (s: number, e: number): void => {
    while (s < e && (isSpace(text.charCodeAt(s)) || text.charCodeAt(s) === 0x2c)) s++;
    while (e > s && isSpace(text.charCodeAt(e - 1))) e--;
    if (e > s) out.push({ start: s, end: e });
  };

  /**
   * Starts a sentence at p: emits headers that stand alone, skips an opening
   * list marker so its '.' is not taken for a sentence end, and returns where
   * scanning continues.
   */
  const begin = (p: number): number => {
    for (;;) {
      while (p < n && (isSpace(text.charCodeAt(p)) || text.charCodeAt(p) === 0x2c)) p++;
      const h = capsHeaderEnd(text, p, n);
      if (h > 0) {
        out.push({ start: p, end: h });
        p = h;
        continue;
      }
      if (atLineStart(text, p)) {
        const label = labelAt(text, p, n);
        if (label.end > 0 && label.alone) {
          out.push({ start: p, end: label.end });
          p = label.end;
          continue;
        }
      }
      break;
    }
    segStart = p;
    expectNext = -1;
    const marker = listMarkerAt(text, p, n, true);
    if (marker.end > 0) {
      let q = marker.end;
      while (q < n && isHSpace(text.charCodeAt(q))) q++;
      const h = capsHeaderEnd(text, q, n);
      if (h > 0) {
        // A numbered header ("1.  RIGHT ARTERIAL LINE:") is a header too.
        out.push({ start: p, end: h });
        return begin(h);
      }
      if (marker.number >= 0) expectNext = marker.number + 1;
      return marker.end;
    }
    return p;
  };

  let i = begin(0);
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x0a) {
      let j = i + 1;
      while (j < n && (isHSpace(text.charCodeAt(j)) || text.charCodeAt(j) === 0x0d)) j++;
      let boundary = j >= n || text.charCodeAt(j) === 0x0a;
      if (!boundary) {
        boundary = listMarkerAt(text, j, n, false).end > 0 || capsHeaderEnd(text, j, n) > 0 || labelAt(text, j, n).end > 0;
      }
      if (boundary) {
        emit(segStart, i);
        i = begin(j);
      } else {
        i = j;
      }
      continue;
    }
    if (c === 0x2e || c === 0x21 || c === 0x3f) {
      let k = i + 1;
      while (k < n && (text.charCodeAt(k) === 0x2e || text.charCodeAt(k) === 0x21 || text.charCodeAt(k) === 0x3f)) k++;
      const singleDot = c === 0x2e && k === i + 1;
      while (k < n && (text.charCodeAt(k) === 0x22 || text.charCodeAt(k) === 0x27 || text.charCodeAt(k) === 0x29 || text.charCodeAt(k) === 0x5d)) k++;
      if (k >= n) {
        i = k;
        continue;
      }
      // Look past the whitespace (or the artefact comma) for what comes next.
      let j = k;
      const viaComma = text.charCodeAt(j) === 0x2c;
      let newline = false;
      let gapLen = 0;
      while (j < n) {
        const g = text.charCodeAt(j);
        if (g === 0x0a) newline = true;
        if (isSpace(g)) gapLen++;
        else if (!(viaComma && g === 0x2c)) break;
        j++;
      }
      let isEnd: boolean;
      if (j >= n) isEnd = newline || viaComma;
      else if (!viaComma && gapLen === 0)
        isEnd = false; // "2.5", "e.g.x", "...)"
      else if (newline) isEnd = true;
      else isEnd = isSentenceOpener(text.charCodeAt(j));
      // Only a single '.' can belong to an abbreviation ("Dr.", "mg."); "?!" or "..." cannot.
      if (isEnd && singleDot) {
        const blank = newline && /\n[ \t\r]*\n/.test(text.slice(k, j));
        if (!blank && abbreviationBlocks(text, i, j, newline, gapLen, viaComma)) isEnd = false;
      }
      if (isEnd) {
        emit(segStart, k);
        i = begin(k);
      } else {
        i = k;
      }
      continue;
    }
    if (c === 0x3a && i > segStart) {
      let j = i + 1;
      while (j < n && isHSpace(text.charCodeAt(j))) j++;
      // mtsamples artefact "Dear Dr. XYZ: ,XXXX was seen" (the comma was a newline), or
      // a label introducing an inline numbered list "Plan: 1. Aspirin ... 2. ...".
      if (text.charCodeAt(j) === 0x2c || (j > i + 1 && listMarkerAt(text, j, n, false).number >= 0)) {
        emit(segStart, i + 1);
        i = begin(i + 1);
        continue;
      }
    }
    if (c === 0x2c && i + 1 < n && (capsHeaderEnd(text, i + 1, n) > 0 || (!isDigit(text.charCodeAt(i - 1)) && listMarkerAt(text, i + 1, n, false).end > 0))) {
      // mtsamples artefact: ",HEADER:" or ",1.  Item" is a newline that became a comma.
      emit(segStart, i);
      i = begin(i);
      continue;
    }
    if (BULLETS.has(c) && i > segStart && isSpace(text.charCodeAt(i - 1))) {
      // Inline bullets "• Aspirin • Lisinopril" separate items.
      emit(segStart, i);
      i = begin(i);
      continue;
    }
    if (expectNext >= 0 && isDigit(c) && i > 0 && (isSpace(text.charCodeAt(i - 1)) || text.charCodeAt(i - 1) === 0x2c)) {
      if (listMarkerAt(text, i, n, false).number === expectNext) {
        // Inline enumeration without a sentence end: "1. Aspirin daily 2. Lisinopril".
        emit(segStart, i);
        i = begin(i);
        continue;
      }
    }
    i++;
  }
  emit(segStart, n);
  return out;
}
