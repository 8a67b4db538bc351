import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Attributes } from '@opentelemetry/api';
import { defaultResource, resourceAttributesEnvDetector, resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, TraceIdRatioBasedSampler, type Sampler } from '@opentelemetry/sdk-trace';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { packageRoot } from '../schemas.js';

/**
 * The standard OTEL_* variables the router interprets itself, in one place,
 * so traces and metrics cannot disagree (env wins over the `telemetry`
 * config section, as the README documents).
 */
export type OtelEnv = Record<string, string | undefined>;

export const DEFAULT_SERVICE_NAME = 'bioner-router';

/** Who the process is, for both the tracer and the meter provider. */
export interface TelemetryIdentity {
  serviceName: string;
  /** From OTEL_RESOURCE_ATTRIBUTES (operator config, never PHI), without `service.name`. */
  resourceAttributes: Attributes;
  /** OTEL_RESOURCE_ATTRIBUTES was set but malformed, so the whole value was dropped (the spec's rule); worth a warning. */
  resourceAttributesIgnored?: boolean;
}

/** Non-blank or undefined, as the SDK reads variables. */
function value(env: OtelEnv, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

/**
 * Resolves the service name and resource attributes. `service.name` comes
 * from OTEL_SERVICE_NAME, else `service.name` in OTEL_RESOURCE_ATTRIBUTES,
 * else `telemetry.serviceName`. OTEL_RESOURCE_ATTRIBUTES is parsed by the
 * SDK's own detector (percent-decoding, whole value dropped when malformed),
 * which reads process.env like the OTLP exporter does; `env` covers the
 * variables read here.
 */
export function telemetryIdentity(config: { serviceName: string }, env: OtelEnv = process.env): TelemetryIdentity {
  const detected = resourceAttributesEnvDetector.detect().attributes ?? {};
  const resourceAttributes: Attributes = {};
  for (const [k, v] of Object.entries(detected)) if (typeof v === 'string' && k !== ATTR_SERVICE_NAME) resourceAttributes[k] = v;
  const fromAttributes = detected[ATTR_SERVICE_NAME];
  const serviceName =
    value(env, 'OTEL_SERVICE_NAME') ?? (typeof fromAttributes === 'string' && fromAttributes.trim() !== '' ? fromAttributes : config.serviceName);
  // The detector swallows parse errors; a non-empty value that yielded nothing was dropped as a whole.
  const raw = process.env.OTEL_RESOURCE_ATTRIBUTES ?? '';
  const ignored = Object.keys(detected).length === 0 && raw.split(',').some((entry) => entry.trim() !== '');
  return ignored ? { serviceName, resourceAttributes, resourceAttributesIgnored: true } : { serviceName, resourceAttributes };
}

/** The SDK's default resource (telemetry.sdk.*) with the identity on top; service.name always wins. */
/** This package's version (package.json), the resource's service.version unless OTEL_RESOURCE_ATTRIBUTES sets one. */
export const SERVICE_VERSION: string = (() => {
  try {
    const pkg: unknown = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8'));
    return typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
})();

export function telemetryResource(identity: TelemetryIdentity): Resource {
  return defaultResource().merge(
    resourceFromAttributes({ [ATTR_SERVICE_VERSION]: SERVICE_VERSION, ...identity.resourceAttributes, [ATTR_SERVICE_NAME]: identity.serviceName }),
  );
}

/** The sampler names of the OpenTelemetry spec that need no extra component. */
export const SAMPLER_NAMES = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;
export type SamplerName = (typeof SAMPLER_NAMES)[number];

export interface SamplerChoice {
  sampler: Sampler;
  name: SamplerName;
  /** The ratio of the *traceidratio samplers; absent for the others. */
  ratio?: number;
  /** An OTEL_TRACES_SAMPLER value that is not supported here (e.g. jaeger_remote); the default was used instead. */
  ignored?: string;
}

function ratioFrom(env: OtelEnv, fallback: number): number {
  const raw = value(env, 'OTEL_TRACES_SAMPLER_ARG');
  if (raw === undefined) return fallback;
  const n = Number(raw);
  return Number.isFinite(n) && n >= 0 && n <= 1 ? n : fallback;
}

/**
 * The trace sampler: OTEL_TRACES_SAMPLER (spec names; unset or unknown means
 * parentbased_traceidratio, the router's default, so a sampled producer
 * trace is always followed) with the ratio from OTEL_TRACES_SAMPLER_ARG, else
 * `telemetry.sampleRatio`.
 */
export function samplerFromEnv(config: { sampleRatio: number }, env: OtelEnv = process.env): SamplerChoice {
  const raw = value(env, 'OTEL_TRACES_SAMPLER')?.toLowerCase();
  const known = raw !== undefined && (SAMPLER_NAMES as readonly string[]).includes(raw) ? (raw as SamplerName) : undefined;
  const name: SamplerName = known ?? 'parentbased_traceidratio';
  const ignored = raw !== undefined && known === undefined ? { ignored: raw } : {};
  const ratio = ratioFrom(env, config.sampleRatio);
  switch (name) {
    case 'always_on':
      return { sampler: new AlwaysOnSampler(), name, ...ignored };
    case 'always_off':
      return { sampler: new AlwaysOffSampler(), name, ...ignored };
    case 'traceidratio':
      return { sampler: new TraceIdRatioBasedSampler(ratio), name, ratio, ...ignored };
    case 'parentbased_always_on':
      return { sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }), name, ...ignored };
    case 'parentbased_always_off':
      return { sampler: new ParentBasedSampler({ root: new AlwaysOffSampler() }), name, ...ignored };
    case 'parentbased_traceidratio':
      return { sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) }), name, ratio, ...ignored };
  }
}
