import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { validateConfig } from '../../src/config/load.js';
import { METRIC_SERIES } from '../../src/telemetry/metrics.js';
import { HelmChart, TemplateError, mergeValues, renderString } from '../helpers/helm-render.js';

/**
 * No helm binary exists where this project is built: the chart is rendered by
 * test/helpers/helm-render.ts (the Go-template subset the chart keeps to) and
 * values are checked against values.schema.json by the small validator below.
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
const chartDir = join(root, 'helm/bioner-router');
const chart = new HelmChart(chartDir);
const readYaml = (p: string): Record<string, unknown> => parseYaml(readFileSync(join(root, p), 'utf8')) as Record<string, unknown>;
const defaults = readYaml('helm/bioner-router/values.yaml');
const production = mergeValues(defaults, readYaml('deploy/values-production.yaml')) as Record<string, unknown>;
const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8')) as Schema;
// `run` force-exits this long after shutdown.drainTimeoutMs (src/cli/run.ts); the kubelet's SIGKILL must come later.
const forceExit = /drainTimeoutMs \+ ([\d_]+)\)/.exec(readFileSync(join(root, 'src/cli/run.ts'), 'utf8'));
assert.ok(forceExit, 'src/cli/run.ts: force-exit timer `drainTimeoutMs + N` not found');
const APP_FORCE_EXIT_S = Number(forceExit[1].replace(/_/g, '')) / 1000;

// ---------- minimal JSON-schema (draft-07 subset used by values.schema.json) ----------
interface Schema {
  type?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  minItems?: number;
  not?: Schema;
  anyOf?: Schema[];
  additionalProperties?: boolean;
  [k: string]: unknown;
}
const KNOWN = new Set(['$schema', 'title', 'description', 'type', 'required', 'properties', 'items', 'enum', 'minimum', 'maximum', 'minLength', 'minItems', 'not', 'anyOf', 'additionalProperties']);

function typeOk(type: string, v: unknown): boolean {
  switch (type) {
    case 'object':
      return v !== null && typeof v === 'object' && !Array.isArray(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v);
    case 'number':
      return typeof v === 'number';
    case 'boolean':
      return typeof v === 'boolean';
    default:
      throw new Error(`schema type ${type} outside the validator's subset`);
  }
}

function validate(s: Schema, v: unknown, path = ''): string[] {
  for (const k of Object.keys(s)) if (!KNOWN.has(k)) throw new Error(`schema keyword ${k} at ${path || '(root)'} outside the validator's subset`);
  const at = path || '(root)';
  if (s.type !== undefined && !typeOk(s.type, v)) return [`${at}: expected ${s.type}, got ${JSON.stringify(v)}`];
  const errs: string[] = [];
  if (s.enum && !s.enum.includes(v)) errs.push(`${at}: must be one of ${s.enum.join(', ')}`);
  if (typeof v === 'number') {
    if (s.minimum !== undefined && v < s.minimum) errs.push(`${at}: must be >= ${s.minimum}`);
    if (s.maximum !== undefined && v > s.maximum) errs.push(`${at}: must be <= ${s.maximum}`);
  }
  if (typeof v === 'string' && s.minLength !== undefined && v.length < s.minLength) errs.push(`${at}: shorter than ${s.minLength}`);
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) errs.push(`${at}: needs at least ${s.minItems} items`);
    if (s.items) v.forEach((x, i) => errs.push(...validate(s.items as Schema, x, `${path}[${i}]`)));
  }
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Record<string, unknown>;
    for (const r of s.required ?? []) if (!(r in o)) errs.push(`${path ? path + '.' : ''}${r}: is required`);
    for (const [k, sub] of Object.entries(s.properties ?? {})) if (k in o) errs.push(...validate(sub, o[k], path ? `${path}.${k}` : k));
    if (s.additionalProperties !== undefined && typeof s.additionalProperties !== 'boolean') throw new Error(`additionalProperties at ${at}: only true/false in the validator's subset`);
    if (s.additionalProperties === false) {
      for (const k of Object.keys(o)) if (!(k in (s.properties ?? {}))) errs.push(`${path ? path + '.' : ''}${k}: is not allowed (unknown key)`);
    }
  }
  if (s.anyOf && !s.anyOf.some((sub) => validate(sub, v, path).length === 0)) errs.push(`${at}: matches none of anyOf`);
  if (s.not && validate(s.not, v, path).length === 0) errs.push(`${at}: matches a forbidden shape (not)`);
  return errs;
}

// ---------- helpers ----------
type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function renderDocs(values: Record<string, unknown>): Map<string, Doc[]> {
  const out = new Map<string, Doc[]>();
  for (const [name, text] of chart.render(values)) {
    const docs = parseAllDocuments(text);
    const parsed: Doc[] = [];
    for (const d of docs) {
      assert.equal(d.errors.length, 0, `${name}: ${d.errors.map((e) => e.message).join('; ')}\n${text}`);
      const js = d.toJS() as Doc | null;
      if (js !== null && js !== undefined) parsed.push(js);
    }
    out.set(name, parsed);
  }
  return out;
}

function one(docs: Map<string, Doc[]>, file: string, kind: string): Doc {
  const found = (docs.get(file) ?? []).filter((d) => d.kind === kind);
  assert.equal(found.length, 1, `${file} should hold one ${kind}`);
  return found[0];
}

const cases: Array<[string, Record<string, unknown>]> = [
  ['default values', defaults],
  ['deploy/values-production.yaml', production],
];

for (const [label, values] of cases) {
  test(`helm chart (${label}): values.schema.json accepts the values`, () => {
    assert.deepEqual(validate(schema, values), []);
  });

  test(`helm chart (${label}): every template renders and parses as YAML`, () => {
    const docs = renderDocs(values);
    assert.deepEqual([...docs.keys()].sort(), chart.templateNames().sort());
    for (const [name, list] of docs) {
      for (const d of list) {
        assert.equal(typeof d.apiVersion, 'string', `${name}: apiVersion`);
        assert.equal(typeof d.kind, 'string', `${name}: kind`);
        assert.ok(d.metadata?.name, `${name}: metadata.name`);
      }
    }
    for (const must of ['deployment.yaml', 'configmap.yaml', 'service.yaml', 'serviceaccount.yaml', 'pdb.yaml', 'networkpolicy.yaml']) {
      assert.ok((docs.get(must) ?? []).length === 1, `${must} renders one object`);
    }
  });

  test(`helm chart (${label}): the ConfigMap's config passes validateConfig`, () => {
    const docs = renderDocs(values);
    const cm = one(docs, 'configmap.yaml', 'ConfigMap');
    const cfg = validateConfig(parseYaml(cm.data['config.yaml'] as string));
    const v = values as Doc;
    assert.equal(cfg.telemetry.port, v.config.telemetry.port);
    assert.equal(cfg.shutdown.drainTimeoutMs, v.config.shutdown.drainTimeoutMs);
    if (v.kafkaTls.enabled) {
      assert.equal(cfg.kafka.tls.enabled, true);
      if (v.kafkaTls.caSecret) assert.match(cfg.kafka.tls.caFile ?? '', /^\/etc\/bioner-router\/secrets\/kafka-tls-ca\//);
    }
    if (v.kafkaSasl.enabled) {
      assert.equal(cfg.kafka.sasl?.mechanism, v.kafkaSasl.mechanism);
      assert.match(cfg.kafka.sasl?.usernameFile ?? '', /^\/etc\/bioner-router\/secrets\/kafka-sasl\//);
      assert.match(cfg.kafka.sasl?.passwordFile ?? '', /^\/etc\/bioner-router\/secrets\/kafka-sasl\//);
    }
    if (v.llmApiKey.existingSecret) assert.match(cfg.llm.apiKeyFile ?? '', /^\/etc\/bioner-router\/secrets\/llm-api-key\//);
  });

  test(`helm chart (${label}): Deployment meets PSS restricted, mounts secrets as files, no secret in env, grace > drain`, () => {
    const docs = renderDocs(values);
    const dep = one(docs, 'deployment.yaml', 'Deployment');
    const pod = dep.spec.template.spec;
    assert.equal(pod.securityContext.runAsNonRoot, true);
    assert.equal(pod.securityContext.runAsUser, 10001);
    assert.equal(pod.securityContext.seccompProfile.type, 'RuntimeDefault');
    assert.equal(pod.automountServiceAccountToken, false);
    assert.equal(pod.containers.length, 1);
    const c = pod.containers[0];
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
    assert.deepEqual(c.args, ['run', '--config', '/etc/bioner-router/config.yaml']);
    // probes on the telemetry port
    assert.equal(c.ports[0].containerPort, (values as Doc).config.telemetry.port);
    assert.equal(c.livenessProbe.httpGet.path, '/healthz');
    assert.equal(c.readinessProbe.httpGet.path, '/readyz');
    assert.equal(c.livenessProbe.httpGet.port, c.ports[0].name);
    // /tmp emptyDir, config mount
    const mounts = new Map<string, Doc>(c.volumeMounts.map((m: Doc) => [m.name, m]));
    const vols = new Map<string, Doc>(pod.volumes.map((x: Doc) => [x.name, x]));
    assert.equal(mounts.get('tmp')?.mountPath, '/tmp');
    assert.ok(vols.get('tmp')?.emptyDir !== undefined);
    assert.equal(mounts.get('config')?.mountPath, '/etc/bioner-router/config.yaml');
    // every secret volume is mounted read-only under /etc/bioner-router/secrets/, and the config's *File paths point into them
    const secretVols = [...vols.values()].filter((x) => x.secret);
    for (const sv of secretVols) {
      const m = mounts.get(sv.name);
      assert.ok(m, `secret volume ${sv.name} is mounted`);
      assert.equal(m.readOnly, true);
      assert.match(m.mountPath, /^\/etc\/bioner-router\/secrets\//);
    }
    const cfg = validateConfig(parseYaml(one(docs, 'configmap.yaml', 'ConfigMap').data['config.yaml'] as string));
    const files = [cfg.kafka.tls.caFile, cfg.kafka.tls.certFile, cfg.kafka.tls.keyFile, cfg.kafka.sasl?.usernameFile, cfg.kafka.sasl?.passwordFile, cfg.llm.apiKeyFile].filter(
      (f): f is string => f !== undefined,
    );
    for (const f of files) {
      const dir = f.slice(0, f.lastIndexOf('/'));
      const key = f.slice(f.lastIndexOf('/') + 1);
      const m = [...mounts.values()].find((x) => x.mountPath === dir);
      assert.ok(m, `${f} lies in a mounted secret`);
      const vol = vols.get(m.name);
      assert.ok(vol?.secret?.items.some((it: Doc) => it.path === key), `${f}: the secret projects ${key}`);
    }
    if ((values as Doc).kafkaSasl.enabled) assert.ok(secretVols.length >= 2, 'SASL + TLS/LLM secrets mounted');
    // no env var carries a secret
    for (const e of c.env ?? []) {
      assert.equal(e.valueFrom, undefined, `env ${e.name} must not come from a secret`);
      assert.doesNotMatch(e.name, /PASS|SECRET|TOKEN|KEY/i);
    }
    assert.equal(c.envFrom, undefined);
    assert.ok(c.env.some((e: Doc) => e.name === 'OTEL_SERVICE_NAME'));
    // grace period covers the drain and the app's own force-exit after it
    assert.ok(pod.terminationGracePeriodSeconds > cfg.shutdown.drainTimeoutMs / 1000 + APP_FORCE_EXIT_S, `${pod.terminationGracePeriodSeconds}s > drain + ${APP_FORCE_EXIT_S}s`);
    // resources
    assert.ok(c.resources.requests.memory && c.resources.limits.memory);
  });
}

test('helm chart (production): ServiceMonitor, KEDA kafka trigger, NetworkPolicy egress', () => {
  const docs = renderDocs(production);
  const sm = one(docs, 'servicemonitor.yaml', 'ServiceMonitor');
  assert.equal(sm.spec.endpoints[0].port, 'metrics');
  const so = one(docs, 'keda-scaledobject.yaml', 'ScaledObject');
  assert.equal(so.spec.triggers[0].type, 'kafka');
  assert.equal(so.spec.triggers[0].metadata.consumerGroup, 'bioner-router');
  assert.equal(so.spec.triggers[0].metadata.lagThreshold, '500');
  assert.ok(so.spec.maxReplicaCount <= (production as Doc).partitions);
  assert.equal(one(docs, 'deployment.yaml', 'Deployment').spec.replicas, undefined, 'KEDA owns the replica count');
  const np = one(docs, 'networkpolicy.yaml', 'NetworkPolicy');
  assert.deepEqual(np.spec.policyTypes, ['Ingress', 'Egress']);
  const egressPorts = np.spec.egress.map((r: Doc) => r.ports.map((p: Doc) => p.port).join(','));
  assert.deepEqual(egressPorts, ['53,53', '9093', '8000', '4318']);
  for (const r of np.spec.egress) assert.ok(r.to?.length > 0, 'production egress rules name their peers');
  assert.equal(np.spec.ingress[0].ports[0].port, 9464);
  assert.equal(one(docs, 'serviceaccount.yaml', 'ServiceAccount').automountServiceAccountToken, false);
});

test('helm chart: values.schema.json rejects a bad values file and names the field', () => {
  const bad = mergeValues(defaults, { replicas: 'three' });
  const errs = validate(schema, bad);
  assert.ok(errs.some((e) => e.startsWith('replicas:')), errs.join('\n'));
  const badSasl = mergeValues(production, { kafkaSasl: { mechanism: 'scram-sha-1' } });
  assert.ok(validate(schema, badSasl).some((e) => e.startsWith('kafkaSasl.mechanism:')));
  const inlineSecretPath = mergeValues(defaults, { config: { llm: { apiKeyFile: '/x' } } });
  assert.ok(validate(schema, inlineSecretPath).some((e) => e.startsWith('config.llm:')));
  const noDrain = mergeValues(defaults, { config: { shutdown: null } });
  assert.ok(validate(schema, noDrain).some((e) => e.startsWith('config.shutdown:')));
});

test('helm chart: values.schema.json rejects unknown keys (typos) with the field named', () => {
  const typo = validate(schema, mergeValues(defaults, { replica: 5 }));
  assert.ok(typo.some((e) => e.startsWith('replica: is not allowed')), typo.join('\n'));
  const nested = validate(schema, mergeValues(production, { kafkaSasl: { existingSecrett: 'x' } }));
  assert.ok(nested.some((e) => e.startsWith('kafkaSasl.existingSecrett: is not allowed')), nested.join('\n'));
  const peer = validate(schema, mergeValues(defaults, { networkPolicy: { kafka: { port: [9092] } } }));
  assert.ok(peer.some((e) => e.startsWith('networkPolicy.kafka.port:')), peer.join('\n'));
  // Keys Helm injects when the chart is a subchart are allowed.
  assert.deepEqual(validate(schema, mergeValues(defaults, { global: { imageRegistry: 'r' }, enabled: true })), []);
  // config stays open to the schema (the app's validateConfig refuses unknown keys at start-up) but is typed.
  assert.deepEqual(validate(schema, mergeValues(defaults, { config: { input: { maxNoteBytes: 1000 } } })), []);
  assert.ok(validate(schema, mergeValues(defaults, { config: { routing: { policy: 'fastest' } } })).some((e) => e.startsWith('config.routing.policy:')));
  // Both example values files pass with additionalProperties on: the per-file tests above.
});

test('helm chart: template fail on KEDA maxReplicaCount > partitions, replicas > partitions, hpa.maxReplicas > partitions, SASL without a secret', () => {
  assert.throws(() => chart.render(mergeValues(production, { keda: { maxReplicaCount: 6 } }) as Record<string, unknown>), (e: unknown) => e instanceof TemplateError && /keda\.maxReplicaCount \(6\) must not exceed partitions \(3\)/.test(e.message));
  assert.throws(() => chart.render(mergeValues(defaults, { replicas: 4 }) as Record<string, unknown>), (e: unknown) => e instanceof TemplateError && /replicas \(4\) must not exceed partitions \(3\)/.test(e.message));
  assert.throws(() => chart.render(mergeValues(defaults, { hpa: { enabled: true, maxReplicas: 4 } }) as Record<string, unknown>), (e: unknown) => e instanceof TemplateError && /hpa\.maxReplicas \(4\) must not exceed partitions \(3\)/.test(e.message));
  renderDocs(mergeValues(defaults, { hpa: { enabled: true, maxReplicas: 3 } }) as Record<string, unknown>); // at the bound it renders
  assert.throws(() => chart.render(mergeValues(defaults, { kafkaSasl: { enabled: true } }) as Record<string, unknown>), /kafkaSasl\.existingSecret is required/);
  assert.throws(() => chart.render(mergeValues(defaults, { hpa: { enabled: true }, keda: { enabled: true } }) as Record<string, unknown>), /exclusive/);
  assert.throws(() => chart.render(mergeValues(defaults, { config: { shutdown: { drainTimeoutMs: null } } }) as Record<string, unknown>), /drainTimeoutMs is required/);
});

test('helm chart: grace period follows drainTimeoutMs', () => {
  const docs = renderDocs(mergeValues(defaults, { config: { shutdown: { drainTimeoutMs: 60500 }, input: { sessionTimeoutMs: 30000 }, processing: { noteTimeoutMs: 20000 } } }) as Record<string, unknown>);
  assert.equal(one(docs, 'deployment.yaml', 'Deployment').spec.template.spec.terminationGracePeriodSeconds, 61 + 15);
});

test('helm chart: the grace margin outlasts the app\'s force-exit (SIGKILL never before run exits on its own)', () => {
  const margin = schema.properties?.terminationGraceMarginSeconds as Schema;
  assert.equal(APP_FORCE_EXIT_S, 10);
  assert.ok((margin.minimum ?? 0) > APP_FORCE_EXIT_S, `schema minimum ${margin.minimum} > ${APP_FORCE_EXIT_S}`);
  assert.ok((defaults.terminationGraceMarginSeconds as number) >= (margin.minimum ?? 0));
  const errs = validate(schema, mergeValues(defaults, { terminationGraceMarginSeconds: 10 }));
  assert.ok(errs.some((e) => e.startsWith('terminationGraceMarginSeconds:')), errs.join('\n'));
  assert.deepEqual(validate(schema, mergeValues(defaults, { terminationGraceMarginSeconds: 11 })), []);
});

test('helm renderer: the Go-template subset behaves like Go', () => {
  assert.deepEqual(mergeValues({ a: { b: 1, c: [1] } }, { a: { c: [2] } }), { a: { b: 1, c: [2] } });
  const r = (src: string, root: Record<string, unknown> = {}): string => renderString(src, root);
  assert.equal(r('a  {{- " b " -}}  c'), 'a b c');
  assert.equal(r('{{ .x }}|{{ .missing }}', { x: 3 }), '3|<no value>');
  assert.equal(r('{{ range $k, $v := .m }}{{ $k }}={{ $v }};{{ end }}', { m: { b: 2, a: 1 } }), 'a=1;b=2;');
  assert.equal(r('{{ range .l }}[{{ . }}]{{ else }}none{{ end }}', { l: [] }), 'none');
  assert.equal(r('{{ if eq .x 1 }}one{{ else if eq .x 2 }}two{{ else }}many{{ end }}', { x: 2 }), 'two');
  assert.equal(r('{{ with .o }}{{ .k }}{{ else }}no{{ end }}', { o: {} }), 'no');
  assert.equal(r('{{ printf "%s-%d" "a" 7 | quote }}'), '"a-7"');
  assert.equal(r('{{ default "d" .v }}/{{ default "d" "" }}', { v: 0 }), 'd/d');
  assert.equal(r('{{ add (div 25000 1000) 10 }} {{ mul 2 3 }} {{ int "4" }}'), '35 6 4');
  assert.equal(r('{{ define "t" }}<{{ .n }}>{{ end }}{{ include "t" . | nindent 2 }}', { n: 1 }), '\n  <1>');
  assert.equal(r('{{ toYaml .o | indent 2 }}', { o: { a: [1, 2] } }), '  a:\n    - 1\n    - 2');
  assert.equal(r('{{ "abc-" | trimSuffix "-" }} {{ and 1 0 }} {{ or 0 "" 5 }} {{ not 0 }} {{ ne 1 2 }}'), 'abc 0 5 true true');
  assert.throws(() => r('{{ required "need x" .x }}'), /need x/);
  assert.throws(() => r('{{ fail "boom" }}'), /boom/);
  assert.throws(() => r('{{ sha256sum "x" }}'), /outside the supported subset/);
  assert.throws(() => r('{{ .a.b }}'), /nil pointer/);
});

test('deploy/alerts.yaml: 4-6 rules, every series is one the router exports', () => {
  const doc = readYaml('deploy/alerts.yaml') as { groups: Array<{ rules: Array<{ alert: string; expr: string; for?: string }> }> };
  const rules = doc.groups.flatMap((g) => g.rules);
  assert.ok(rules.length >= 4 && rules.length <= 6, `${rules.length} rules`);
  const known = new Set<string>();
  for (const name of Object.values(METRIC_SERIES)) {
    known.add(name);
    for (const suffix of ['_bucket', '_sum', '_count']) known.add(name + suffix);
  }
  const used = new Set<string>();
  for (const r of rules) {
    assert.match(r.alert, /^BionerRouter/);
    for (const m of r.expr.matchAll(/\bbioner_[a-z_]+/g)) {
      assert.ok(known.has(m[0]), `${r.alert}: ${m[0]} is not an exported series`);
      used.add(m[0]);
    }
  }
  for (const s of ['bioner_dlq_total', 'bioner_llm_fallbacks_total', 'bioner_budget_overruns_total', 'bioner_llm_circuit_state', 'bioner_consumer_lag', 'bioner_note_duration_ms_bucket']) {
    assert.ok(used.has(s), `an alert uses ${s}`);
  }
});
