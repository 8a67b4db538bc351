/**
 * Readers for the evaluation corpora and note files: CoNLL-style IOB (BC5CDR,
 * NCBI-disease), brat standoff (JNLPBA), the mtsamples CSV and JSONL notes.
 * Error messages name file and line but never quote content (notes may be PHI).
 */
import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { DataFormatError } from '../errors.js';
import { makeOffsetConverter } from '../text/codepoints.js';
import type { TokenSpan } from '../types.js';

export interface IobSentence {
  tokens: string[];
  tags: string[];
}

export type IobSpan = Pick<TokenSpan, 'first' | 'last' | 'label'>;

export interface StandoffSpan {
  /** UTF-16 offsets into `text`, end exclusive. */
  start: number;
  end: number;
  label: string;
}

export interface StandoffDoc {
  id: string;
  text: string;
  spans: StandoffSpan[];
  /** Entities whose .ann text field differs from the text at their offsets. */
  mismatches: number;
}

export interface Note {
  id?: string;
  text: string;
}

async function readText(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new DataFormatError(`cannot read ${path}`, { cause: err });
  }
  // A BOM is not content; dropping it keeps offsets of BOM-less and BOM files equal.
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

const IOB_TAG = /^(O|[BIESLU]-\S+)$/;

/**
 * Reads `token<TAB>tag` lines, a blank line between sentences. Tolerates `\r`,
 * trailing whitespace and a missing final blank line.
 */
export async function readIob(path: string): Promise<IobSentence[]> {
  const lines = (await readText(path)).split('\n');
  const out: IobSentence[] = [];
  let tokens: string[] = [];
  let tags: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trimEnd();
    if (line.length === 0) {
      if (tokens.length > 0) out.push({ tokens, tags });
      tokens = [];
      tags = [];
      continue;
    }
    const fields = line.split('\t');
    if (fields.length !== 2 || fields[0].length === 0 || !IOB_TAG.test(fields[1])) {
      throw new DataFormatError(`${path}:${i + 1}: expected "token<TAB>tag" with tag O or B-/I-/E-/S-/L-/U-X (got ${fields.length} field(s))`);
    }
    tokens.push(fields[0]);
    tags.push(fields[1]);
  }
  if (tokens.length > 0) out.push({ tokens, tags });
  return out;
}

/** A tag's chunk role: `L-` (last) reads as `E-`, `U-` (unit) as `S-`, as in IOBES. */
export type ChunkPrefix = 'O' | 'B' | 'I' | 'E' | 'S';

export interface ChunkTag {
  prefix: ChunkPrefix;
  /** Entity type; '' for `O`. */
  type: string;
}

const CHUNK_TAG = /^([BIESLU])-(.+)$/;

/**
 * Reads one tag without folding schemes onto BIO (bio.ts folds `E-` into `I-`,
 * which merges IOE chunks). A bare type `X` is `I-X`, as conlleval -r reads it.
 */
export function chunkTag(tag: string): ChunkTag {
  if (tag === 'O') return { prefix: 'O', type: '' };
  const m = CHUNK_TAG.exec(tag);
  if (m === null) return { prefix: 'I', type: tag };
  const p = m[1];
  return { prefix: p === 'L' ? 'E' : p === 'U' ? 'S' : (p as ChunkPrefix), type: m[2] };
}

/**
 * conlleval's endOfChunk, in its IOBES extension (the rules seqeval also uses):
 * did a chunk end between the previous tag and this one?
 */
export function endOfChunk(prev: ChunkTag, cur: ChunkTag): boolean {
  const p = prev.prefix;
  const c = cur.prefix;
  if (p === 'O') return false;
  if (p === 'E' || p === 'S') return true;
  // p is B or I: the chunk goes on through I/E of the same type only.
  if (c === 'O' || c === 'B' || c === 'S') return true;
  return prev.type !== cur.type;
}

/** conlleval's startOfChunk (IOBES extension): does a chunk start at this tag? */
export function startOfChunk(prev: ChunkTag, cur: ChunkTag): boolean {
  const p = prev.prefix;
  const c = cur.prefix;
  if (c === 'O') return false;
  if (c === 'B' || c === 'S') return true;
  // c is I or E: it opens a chunk after O, after a closed chunk (E/S), or on a type change.
  if (p === 'O' || p === 'E' || p === 'S') return true;
  return prev.type !== cur.type;
}

const OUTSIDE: ChunkTag = { prefix: 'O', type: '' };

/**
 * Entity spans of a tag sequence, read as conlleval reads chunks: IOB1, IOB2,
 * IOE1/IOE2 and IOBES/BILOU all work. A sentence starts and ends as if after and
 * before an `O`, so an `I-X` after `O`, at sentence start or after another type
 * starts a chunk, `E-`/`L-` ends one and `S-`/`U-` is a one-token chunk.
 */
export function iobSpans(tags: readonly string[]): IobSpan[] {
  const spans: IobSpan[] = [];
  let prev = OUTSIDE;
  let first = -1;
  for (let t = 0; t <= tags.length; t++) {
    const cur = t < tags.length ? chunkTag(tags[t]) : OUTSIDE;
    if (first >= 0 && endOfChunk(prev, cur)) {
      spans.push({ first, last: t - 1, label: prev.type });
      first = -1;
    }
    if (startOfChunk(prev, cur)) first = t;
    prev = cur;
  }
  return spans;
}

/**
 * IOB2 tags (`B-X` then `I-X`) for spans over `length` tokens: what the
 * predictions file writes for a tagger's spans. The taggers' spans never
 * overlap; if some did, the later span's tokens would win.
 */
export function iob2Tags(length: number, spans: readonly IobSpan[]): string[] {
  const tags = new Array<string>(length).fill('O');
  const sorted = [...spans].sort((a, b) => a.first - b.first || a.last - b.last);
  for (const s of sorted) {
    for (let t = s.first; t <= s.last && t < length; t++) tags[t] = `${t === s.first ? 'B' : 'I'}-${s.label}`;
  }
  return tags;
}

const RANGE = /^(\d+) (\d+)$/;

function parseAnn(annPath: string, ann: string, text: string): { spans: StandoffSpan[]; mismatches: number } {
  const conv = makeOffsetConverter(text);
  const cpLength = conv.toCodePoint(text.length);
  const spans: StandoffSpan[] = [];
  let mismatches = 0;
  const lines = ann.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    // Only text-bound annotations (T) are entities; relations, events, notes etc. are skipped.
    if (line[0] !== 'T') continue;
    const fields = line.split('\t');
    const bad = (why: string): DataFormatError => new DataFormatError(`${annPath}:${i + 1}: ${why}`);
    if (fields.length < 2) throw bad('expected "ID<TAB>label start end<TAB>text"');
    const mid = fields[1];
    const sp = mid.indexOf(' ');
    if (sp <= 0) throw bad('missing label or offsets');
    const label = mid.slice(0, sp);
    let start = Infinity;
    let end = -Infinity;
    const fragments: string[] = [];
    for (const range of mid.slice(sp + 1).split(';')) {
      const m = RANGE.exec(range.trim());
      if (m === null) throw bad('offsets must be "start end" pairs separated by ";"');
      const cs = Number(m[1]);
      const ce = Number(m[2]);
      if (cs > ce || ce > cpLength) throw bad(`offsets ${cs}-${ce} outside the text (${cpLength} code points)`);
      const us = conv.toUtf16(cs);
      const ue = conv.toUtf16(ce);
      fragments.push(text.slice(us, ue));
      if (us < start) start = us;
      if (ue > end) end = ue;
    }
    // brat joins the fragments of a discontinuous entity with a space in the text field.
    if (fields.length >= 3 && fragments.join(' ') !== fields.slice(2).join('\t')) mismatches++;
    spans.push({ start, end, label });
  }
  spans.sort((a, b) => a.start - b.start || a.end - b.end || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  return { spans, mismatches };
}

/**
 * Reads brat `ID.txt` + `ID.ann` pairs, sorted by id. brat offsets count Unicode
 * code points; they come back as UTF-16 offsets of the JS string. A discontinuous
 * entity (`label 0 5;10 15`) becomes one span from its first start to its last end.
 */
export async function readStandoffDir(dir: string): Promise<StandoffDoc[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new DataFormatError(`cannot read directory ${dir}`, { cause: err });
  }
  const txt = new Set<string>();
  const ann = new Set<string>();
  for (const n of names) {
    if (n.endsWith('.txt')) txt.add(n.slice(0, -4));
    else if (n.endsWith('.ann')) ann.add(n.slice(0, -4));
  }
  for (const id of txt) if (!ann.has(id)) throw new DataFormatError(`${join(dir, id)}.txt has no .ann file`);
  for (const id of ann) if (!txt.has(id)) throw new DataFormatError(`${join(dir, id)}.ann has no .txt file`);
  const ids = [...txt].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const docs: StandoffDoc[] = [];
  // Bounded batches: a training split has thousands of files and fds are finite.
  const BATCH = 64;
  for (let b = 0; b < ids.length; b += BATCH) {
    const batch = await Promise.all(
      ids.slice(b, b + BATCH).map(async (id) => {
        const annPath = join(dir, `${id}.ann`);
        const [text, annText] = await Promise.all([readText(join(dir, `${id}.txt`)), readText(annPath)]);
        return { id, text, ...parseAnn(annPath, annText, text) };
      }),
    );
    docs.push(...batch);
  }
  return docs;
}

export interface CsvOptions {
  /**
   * An unterminated quote at end of input is an error by default; `true` closes
   * the field at end of input instead (a truncated file, as the mtsamples copy is).
   */
  acceptTruncatedEnd?: boolean;
}

/** RFC 4180 records: quoted fields with "" escapes and line breaks inside quotes. Blank lines are skipped. */
export function parseCsv(text: string, source = 'CSV', options: CsvOptions = {}): string[][] {
  return parseCsvRecords(text, source, options.acceptTruncatedEnd === true).records;
}

function parseCsvRecords(text: string, source: string, acceptTruncatedEnd: boolean): { records: string[][]; truncated: boolean } {
  const records: string[][] = [];
  let truncated = false;
  const n = text.length;
  const lineAt = (pos: number): number => {
    let line = 1;
    for (let k = text.indexOf('\n'); k !== -1 && k < pos; k = text.indexOf('\n', k + 1)) line++;
    return line;
  };
  const delim = /[,\r\n]/g;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  let fields: string[] = [];
  while (i < n) {
    let field: string;
    if (text[i] === '"') {
      const open = i;
      field = '';
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (q === -1) {
          if (!acceptTruncatedEnd) throw new DataFormatError(`${source}:${lineAt(open)}: unterminated quoted field`);
          field += text.slice(i);
          i = n;
          truncated = true;
          break;
        }
        field += text.slice(i, q);
        if (text[q + 1] === '"') {
          field += '"';
          i = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
      if (i < n && text[i] !== ',' && text[i] !== '\r' && text[i] !== '\n') {
        throw new DataFormatError(`${source}:${lineAt(i)}: unexpected character after a closing quote`);
      }
    } else {
      delim.lastIndex = i;
      const m = delim.exec(text);
      const stop = m === null ? n : m.index;
      field = text.slice(i, stop);
      i = stop;
    }
    fields.push(field);
    if (i < n && text[i] === ',') {
      i++;
      // A trailing comma at end of input still means one more (empty) field.
      if (i === n) fields.push('');
      continue;
    }
    if (text[i] === '\r') i++;
    if (text[i] === '\n') i++;
    if (!(fields.length === 1 && fields[0] === '')) records.push(fields);
    fields = [];
  }
  if (fields.length > 0) records.push(fields);
  return { records, truncated };
}

interface CsvTable {
  header: string[];
  rows: string[][];
}

async function readCsv(path: string): Promise<CsvTable> {
  const { records, truncated } = parseCsvRecords(await readText(path), path, true);
  if (records.length === 0) throw new DataFormatError(`${path}: empty CSV (no header)`);
  const [header, ...rows] = records;
  rows.forEach((r, k) => {
    // A file cut inside a quoted field loses the last record's remaining fields; keep what is there.
    if (truncated && k === rows.length - 1 && r.length < header.length) {
      while (r.length < header.length) r.push('');
    }
    if (r.length !== header.length) {
      throw new DataFormatError(`${path}: record ${k + 1} has ${r.length} fields, the header has ${header.length}`);
    }
  });
  return { header, rows };
}

function column(table: CsvTable, path: string, name: string): number {
  const col = table.header.indexOf(name);
  if (col === -1) throw new DataFormatError(`${path}: no "${name}" column in the header`);
  return col;
}

/**
 * The non-empty `transcription` column values of an mtsamples-style CSV. A file
 * cut inside its last quoted field (as the shared mtsamples copy is) keeps the
 * partial last record.
 */
export async function readMtsamplesCsv(path: string): Promise<string[]> {
  const table = await readCsv(path);
  const col = column(table, path, 'transcription');
  return table.rows.map((r) => r[col]).filter((t) => t.trim().length > 0);
}

/**
 * Notes from `.csv` (the `transcription` column, empty ones skipped; `id` from an
 * `id` column when there is one) or `.jsonl` (objects with string `text` and
 * optional `id`).
 */
export async function readNotesFile(path: string): Promise<Note[]> {
  const ext = extname(path).toLowerCase();
  if (ext === '.csv') {
    const table = await readCsv(path);
    const col = column(table, path, 'transcription');
    const idCol = table.header.indexOf('id');
    const notes: Note[] = [];
    for (const r of table.rows) {
      if (r[col].trim().length === 0) continue;
      notes.push(idCol === -1 ? { text: r[col] } : { id: r[idCol], text: r[col] });
    }
    return notes;
  }
  if (ext === '.jsonl') {
    const lines = (await readText(path)).split('\n');
    const notes: Note[] = [];
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (line.length === 0) continue;
      const bad = (why: string): DataFormatError => new DataFormatError(`${path}:${i + 1}: ${why}`);
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        // The SyntaxError is not kept as cause: its message can quote the note.
        throw bad('invalid JSON');
      }
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('expected a JSON object');
      const rec = value as { text?: unknown; id?: unknown };
      if (typeof rec.text !== 'string') throw bad('"text" must be a string');
      if (rec.id === undefined || rec.id === null) notes.push({ text: rec.text });
      else if (typeof rec.id === 'string' || typeof rec.id === 'number') notes.push({ id: String(rec.id), text: rec.text });
      else throw bad('"id" must be a string or a number');
    }
    return notes;
  }
  throw new DataFormatError(`${path}: unsupported notes file type "${ext}" (expected .csv or .jsonl)`);
}
