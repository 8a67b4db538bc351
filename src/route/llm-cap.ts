import { performance } from 'node:perf_hooks';

/**
 * A cost cap on the LLM besides the latency budget (routing.llmCap): over a
 * sliding window of `windowMs`, at most `maxSentenceShare` of the sentences
 * routed may go to the LLM, and at most `maxTokensPerMinute` word tokens (the
 * pipeline's tokens, the cost model's unit) may be sent to it, scaled to the
 * window. Work is counted when it is planned, not when it finishes, and
 * planning is synchronous, so notes planned concurrently cannot overshoot the
 * cap together; a planned call that then fails still counts (its requests
 * were sent).
 *
 * The token limit holds for every window of `windowMs`, wherever it starts:
 * each admission checks the window ending at it, which contains every earlier
 * admission of any window that also contains this one. The share is checked
 * on the window at the time of each admission.
 */
export interface LlmCapSettings {
  maxSentenceShare?: number;
  maxTokensPerMinute?: number;
  windowMs: number;
}

export type CapLimit = 'sentence_share' | 'tokens_per_minute';

/** What may still go to the LLM for one note (Infinity where that limit is unset). */
export interface CapAllowance {
  sentences: number;
  tokens: number;
}

export interface CapSnapshot {
  /** Sentences routed (any route) and sent to the LLM within the window, and LLM tokens. */
  sentences: number;
  llmSentences: number;
  llmTokens: number;
  /** Share of routed sentences that went to the LLM in the window (0 with none routed). */
  share: number;
  /** LLM tokens in the window, per minute. */
  tokensPerMinute: number;
  /** Used fraction of each configured limit (absent when that limit is unset). */
  usage: Partial<Record<CapLimit, number>>;
}

interface Entry {
  at: number;
  sentences: number;
  llmSentences: number;
  llmTokens: number;
}

export class LlmCap {
  private readonly entries: Entry[] = [];
  private head = 0;
  private sentences = 0;
  private llmSentences = 0;
  private llmTokens = 0;
  private readonly now: () => number;

  constructor(
    readonly settings: LlmCapSettings,
    clock?: () => number,
  ) {
    this.now = clock ?? (() => performance.now());
  }

  /** Whether any limit is set (an unset cap lets everything through and counts nothing). */
  get active(): boolean {
    return this.settings.maxSentenceShare !== undefined || this.settings.maxTokensPerMinute !== undefined;
  }

  /** Most tokens the window may hold. */
  private get tokenBudget(): number {
    const perMinute = this.settings.maxTokensPerMinute;
    return perMinute === undefined ? Infinity : (perMinute * this.settings.windowMs) / 60_000;
  }

  private prune(): void {
    const from = this.now() - this.settings.windowMs;
    while (this.head < this.entries.length && this.entries[this.head].at <= from) {
      const e = this.entries[this.head++];
      this.sentences -= e.sentences;
      this.llmSentences -= e.llmSentences;
      this.llmTokens -= e.llmTokens;
    }
    // Compact now and then so the array does not grow with every note ever routed.
    if (this.head > 1024 && this.head * 2 > this.entries.length) {
      this.entries.splice(0, this.head);
      this.head = 0;
    }
  }

  /**
   * What may go to the LLM now for a note of `noteSentences` sentences: the
   * share counts this note's sentences among those routed (so a first note
   * gets its share), the tokens what is left of the window's budget.
   */
  allowance(noteSentences: number): CapAllowance {
    if (!this.active) return { sentences: Infinity, tokens: Infinity };
    this.prune();
    const share = this.settings.maxSentenceShare;
    const sentences = share === undefined ? Infinity : Math.max(0, Math.floor(share * (this.sentences + noteSentences) + 1e-9) - this.llmSentences);
    const tokens = Math.max(0, this.tokenBudget - this.llmTokens);
    return { sentences, tokens };
  }

  /** Counts a planned note: its sentences (all routes) and what of it goes to the LLM. */
  record(noteSentences: number, llmSentences: number, llmTokens: number): void {
    if (!this.active || (noteSentences === 0 && llmSentences === 0 && llmTokens === 0)) return;
    this.prune();
    this.entries.push({ at: this.now(), sentences: noteSentences, llmSentences, llmTokens });
    this.sentences += noteSentences;
    this.llmSentences += llmSentences;
    this.llmTokens += llmTokens;
  }

  snapshot(): CapSnapshot {
    this.prune();
    const usage: Partial<Record<CapLimit, number>> = {};
    const share = this.sentences > 0 ? this.llmSentences / this.sentences : 0;
    if (this.settings.maxSentenceShare !== undefined)
      usage.sentence_share = this.settings.maxSentenceShare > 0 ? share / this.settings.maxSentenceShare : share > 0 ? Infinity : 0;
    if (this.settings.maxTokensPerMinute !== undefined) usage.tokens_per_minute = this.llmTokens / this.tokenBudget;
    return {
      sentences: this.sentences,
      llmSentences: this.llmSentences,
      llmTokens: this.llmTokens,
      share,
      tokensPerMinute: (this.llmTokens * 60_000) / this.settings.windowMs,
      usage,
    };
  }
}
