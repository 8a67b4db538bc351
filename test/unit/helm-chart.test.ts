import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, test } from 'node:test';
import { parse as parseYaml, parseDocument } from 'yaml';
import { validateConfig } from '../../src/config/load.js';
import { findTool, repoRoot, runTool, runToolAsync } from '../helpers/tools.js';

/**
 * The chart rendered and linted by a real Helm 3 binary (scripts/fetch-tools.sh puts one in
 * build/tools/bin): values.schema.json is enforced by Helm itself, every object below is what
 * `helm template` prints. Without the binary every test here is skipped, with the reason.
 */
const helm = findTool('helm');
const skip = helm.skip;
const chartDir = join(repoRoot, 'helm/bioner-router');
const PROD = join(repoRoot, 'deploy/values-production.yaml');
const RELEASE = 'bioner-router';
const NAMESPACE = 'bioner';
const FULLNAME = `${RELEASE}-bioner-router`;

// `run` force-exits this long after shutdown.drainTimeoutMs (src/cli/run.ts); the kubelet's SIGKILL must come later.
const forceExit = /drainTimeoutMs \+ ([\d_]+)\)/.exec(readFileSync(join(repoRoot, 'src/cli/run.ts'), 'utf8'));
assert.ok(forceExit, 'src/cli/run.ts: force-exit timer `drainTimeoutMs + N` not found');
const APP_FORCE_EXIT_S = Number(forceExit[1].replace(/_/g, '')) / 1000;

// ---------- the Kubernetes shapes the assertions read ----------
type StrMap = Record<string, string>;
interface Meta {
  name: string;
  namespace?: string;
  labels?: StrMap;
  annotations?: StrMap;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: Meta;
}
interface Probe {
  httpGet?: { path: string; port: string | number };
  exec?: { command: string[] };
  periodSeconds?: number;
  failureThreshold?: number;
  timeoutSeconds?: number;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: unknown;
}
interface Volume {
  name: string;
  secret?: { secretName: string; items: Array<{ key: string; path: string }> };
  emptyDir?: { sizeLimit?: string };
  configMap?: { name: string };
}
interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  ports?: Array<{ name: string; containerPort: number }>;
  env?: EnvVar[];
  envFrom?: unknown;
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources: { requests?: StrMap; limits?: StrMap };
  securityContext: { allowPrivilegeEscalation: boolean; readOnlyRootFilesystem: boolean; runAsNonRoot: boolean; capabilities: { drop: string[] } };
  volumeMounts?: VolumeMount[];
}
interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken: boolean;
  terminationGracePeriodSeconds?: number;
  imagePullSecrets?: Array<{ name: string }>;
  securityContext: { runAsNonRoot: boolean; runAsUser: number; seccompProfile: { type: string } };
  containers: Container[];
  volumes?: Volume[];
  affinity?: unknown;
  topologySpreadConstraints?: Array<{ maxSkew: number; topologyKey: string; labelSelector: { matchLabels: StrMap } }>;
  restartPolicy?: string;
}
interface Deployment extends K8sObject {
  spec: { replicas?: number; selector: { matchLabels: StrMap }; template: { metadata: { labels: StrMap; annotations: StrMap }; spec: PodSpec } };
}
interface Pod extends K8sObject {
  spec: PodSpec;
}
interface ConfigMap extends K8sObject {
  data: StrMap;
}
interface Service extends K8sObject {
  spec: { selector: StrMap; ports: Array<{ name: string; port: number }> };
}
interface ServiceAccount extends K8sObject {
  automountServiceAccountToken: boolean;
}
interface NetworkPeer {
  podSelector?: { matchLabels?: StrMap };
  namespaceSelector?: { matchLabels?: StrMap };
  ipBlock?: { cidr: string };
}
interface NetworkPolicy extends K8sObject {
  spec: {
    policyTypes: string[];
    ingress: Array<{ ports: Array<{ port: number }>; from?: NetworkPeer[] }>;
    egress: Array<{ to?: NetworkPeer[]; ports: Array<{ port: number }> }>;
  };
}
interface ScaledObject extends K8sObject {
  spec: { maxReplicaCount: number; triggers: Array<{ type: string; metadata: StrMap; authenticationRef?: { name: string } }> };
}
interface TriggerAuthentication extends K8sObject {
  spec: { secretTargetRef: Array<{ parameter: string; name: string; key: string }> };
}
interface ServiceMonitor extends K8sObject {
  spec: { jobLabel?: string; endpoints: Array<{ port: string; path: string }> };
}

interface Manifest {
  /** templates/<file> that produced it (from Helm's `# Source:` line) */
  source: string;
  obj: K8sObject;
}

// ---------- running helm ----------
const tmp = mkdtempSync(join(tmpdir(), 'bioner-helm-values-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
let files = 0;

/** Values layers: a path is passed as is, an object is written to a JSON values file (JSON is YAML; null deletes a default key). */
type Layer = string | Record<string, unknown>;

function valueArgs(layers: Layer[]): string[] {
  return layers.flatMap((l) => {
    if (typeof l === 'string') return ['-f', l];
    const file = join(tmp, `values-${++files}.json`);
    writeFileSync(file, JSON.stringify(l));
    return ['-f', file];
  });
}

const templateArgs = (layers: Layer[]): string[] => ['template', RELEASE, chartDir, '--namespace', NAMESPACE, ...valueArgs(layers)];

function template(...layers: Layer[]): { status: number; stdout: string; stderr: string } {
  return runTool(helm, templateArgs(layers));
}

// The same values render the same objects: the per-file cases share one helm run each.
const rendered = new Map<string, Manifest[]>();

function render(...layers: Layer[]): Manifest[] {
  const key = JSON.stringify(layers);
  const hit = rendered.get(key);
  if (hit !== undefined) return structuredClone(hit);
  const out = parse(template(...layers));
  rendered.set(key, out);
  return structuredClone(out);
}

function parse(r: { status: number; stdout: string; stderr: string }): Manifest[] {
  assert.equal(r.status, 0, `helm template failed:\n${r.stderr}`);
  const out: Manifest[] = [];
  // Helm prints `---` then `# Source: bioner-router/<template>` before each object.
  for (const chunk of r.stdout.split(/^---$/m)) {
    const doc = parseDocument(chunk);
    assert.equal(doc.errors.length, 0, `${doc.errors.map((e) => e.message).join('; ')}\n${chunk}`);
    const obj = doc.toJS() as K8sObject | null;
    if (obj === null) continue;
    out.push({ source: /^# Source: bioner-router\/(\S+)$/m.exec(chunk)?.[1] ?? '?', obj });
  }
  return out;
}

/** The stderr of a render that must fail. */
function renderFails(...layers: Layer[]): string {
  const r = template(...layers);
  assert.notEqual(r.status, 0, `helm template should have failed; it printed:\n${r.stdout.slice(0, 400)}`);
  return r.stderr;
}

/** Each case must fail to render with its message; the helm runs overlap. */
async function allFail(cases: Array<[Layer[], RegExp]>): Promise<void> {
  const results = await Promise.all(cases.map(([layers]) => runToolAsync(helm, templateArgs(layers))));
  results.forEach((r, i) => {
    assert.notEqual(r.status, 0, `case ${i} should fail to render (${cases[i][1].source})`);
    assert.match(r.stderr, cases[i][1]);
  });
}

function all<T extends K8sObject>(m: Manifest[], kind: string): T[] {
  return m.filter((x) => x.obj.kind === kind).map((x) => x.obj as T);
}

function one<T extends K8sObject>(m: Manifest[], kind: string): T {
  const found = all<T>(m, kind);
  assert.equal(found.length, 1, `one ${kind} expected, got ${found.length}`);
  return found[0];
}

const router = (m: Manifest[]): Container => one<Deployment>(m, 'Deployment').spec.template.spec.containers[0];
const testPod = (m: Manifest[]): Pod => one<Pod>(m, 'Pod');

/** The chart's templates, as Helm names them in `# Source:` (templates/tests/... included). */
function templateFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const f of readdirSync(dir)) {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (f.endsWith('.yaml')) out.push(relative(chartDir, p));
    }
  };
  walk(join(chartDir, 'templates'));
  return out.sort();
}

const defaults = parseYaml(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) as {
  config: { shutdown: { drainTimeoutMs: number }; telemetry: { port: number } };
};

// ---------- helm lint ----------
test('helm lint --strict passes with the default values and with deploy/values-production.yaml', { skip }, () => {
  for (const args of [[], ['-f', PROD]]) {
    const r = runTool(helm, ['lint', '--strict', chartDir, ...args]);
    assert.equal(r.status, 0, `helm lint --strict ${args.join(' ')}:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    assert.doesNotMatch(r.stdout, /\[(WARNING|ERROR)\]/);
  }
});

// ---------- both values files ----------
const cases: Array<[string, Layer[], boolean]> = [
  ['default values', [], false],
  ['deploy/values-production.yaml', [PROD], true],
];

for (const [label, layers, production] of cases) {
  test(`helm template (${label}): the expected objects, each labelled for Helm, in the release namespace`, { skip }, () => {
    const m = render(...layers);
    const expected = production
      ? [
          'configmap.yaml',
          'deployment.yaml',
          'keda-scaledobject.yaml',
          'keda-triggerauthentication.yaml',
          'networkpolicy.yaml',
          'pdb.yaml',
          'service.yaml',
          'serviceaccount.yaml',
          'servicemonitor.yaml',
          'tests/test-readyz.yaml',
        ]
      : ['configmap.yaml', 'deployment.yaml', 'pdb.yaml', 'service.yaml', 'serviceaccount.yaml', 'tests/test-readyz.yaml'];
    assert.deepEqual(m.map((x) => x.source.replace(/^templates\//, '')).sort(), expected);
    const chart = parseYaml(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8')) as { name: string; version: string; appVersion: string };
    for (const { obj, source } of m) {
      assert.equal(typeof obj.apiVersion, 'string', `${source}: apiVersion`);
      assert.ok(obj.metadata.name.length > 0 && obj.metadata.name.length <= 63, `${source}: metadata.name`);
      assert.equal(obj.metadata.namespace, NAMESPACE, `${source}: namespace`);
      assert.equal(obj.metadata.labels?.['helm.sh/chart'], `${chart.name}-${chart.version}`, `${source}: helm.sh/chart`);
      assert.equal(obj.metadata.labels?.['app.kubernetes.io/managed-by'], 'Helm', `${source}: managed-by`);
    }
    assert.equal(one<Deployment>(m, 'Deployment').metadata.labels?.['app.kubernetes.io/version'], chart.appVersion);
  });

  test(`helm template (${label}): the ConfigMap's config passes the router's validateConfig, secret paths filled in`, { skip }, () => {
    const m = render(...layers);
    const cfg = validateConfig(parseYaml(one<ConfigMap>(m, 'ConfigMap').data['config.yaml']));
    assert.equal(cfg.telemetry.port, defaults.config.telemetry.port);
    assert.equal(cfg.shutdown.drainTimeoutMs, defaults.config.shutdown.drainTimeoutMs);
    if (production) {
      assert.equal(cfg.kafka.tls.enabled, true);
      assert.equal(cfg.kafka.tls.caFile, '/etc/bioner-router/secrets/kafka-tls-ca/ca.crt');
      assert.equal(cfg.kafka.sasl?.mechanism, 'scram-sha-512');
      assert.equal(cfg.kafka.sasl?.usernameFile, '/etc/bioner-router/secrets/kafka-sasl/username');
      assert.equal(cfg.kafka.sasl?.passwordFile, '/etc/bioner-router/secrets/kafka-sasl/password');
      assert.equal(cfg.llm.apiKeyFile, '/etc/bioner-router/secrets/llm-api-key/api-key');
    } else {
      assert.equal(cfg.kafka.tls.enabled, false);
      assert.equal(cfg.kafka.sasl, undefined);
    }
  });

  test(`helm template (${label}): PSS restricted, secrets as files only, probes, grace period > drain + force-exit`, { skip }, () => {
    const m = render(...layers);
    const dep = one<Deployment>(m, 'Deployment');
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
    assert.equal(c.ports?.[0].containerPort, defaults.config.telemetry.port);
    // Probes: startup = models loaded (/startupz, not /healthz which is 200 before they load), then liveness and readiness.
    assert.deepEqual(c.startupProbe?.httpGet, { path: '/startupz', port: 'metrics' });
    assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 'metrics' });
    assert.deepEqual(c.readinessProbe?.httpGet, { path: '/readyz', port: 'metrics' });
    assert.ok((c.startupProbe?.periodSeconds ?? 0) * (c.startupProbe?.failureThreshold ?? 0) >= 60, 'at least a minute to load the models');
    // /tmp emptyDir, config mount; every secret volume mounted read-only under /etc/bioner-router/secrets/ and backing the config's *File paths.
    const mounts = new Map((c.volumeMounts ?? []).map((v) => [v.name, v]));
    const vols = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
    assert.equal(mounts.get('tmp')?.mountPath, '/tmp');
    assert.ok(vols.get('tmp')?.emptyDir !== undefined);
    assert.equal(mounts.get('config')?.mountPath, '/etc/bioner-router/config.yaml');
    const secretVols = [...vols.values()].filter((v) => v.secret !== undefined);
    for (const sv of secretVols) {
      const mnt = mounts.get(sv.name);
      assert.ok(mnt !== undefined, `secret volume ${sv.name} is mounted`);
      assert.equal(mnt.readOnly, true);
      assert.match(mnt.mountPath, /^\/etc\/bioner-router\/secrets\//);
    }
    const cfg = validateConfig(parseYaml(one<ConfigMap>(m, 'ConfigMap').data['config.yaml']));
    const paths = [
      cfg.kafka.tls.caFile,
      cfg.kafka.tls.certFile,
      cfg.kafka.tls.keyFile,
      cfg.kafka.sasl?.usernameFile,
      cfg.kafka.sasl?.passwordFile,
      cfg.llm.apiKeyFile,
    ].filter((f): f is string => f !== undefined);
    for (const f of paths) {
      const dir = f.slice(0, f.lastIndexOf('/'));
      const key = f.slice(f.lastIndexOf('/') + 1);
      const mnt = [...mounts.values()].find((x) => x.mountPath === dir);
      assert.ok(mnt !== undefined, `${f} lies in a mounted secret`);
      assert.ok(
        vols.get(mnt.name)?.secret?.items.some((it) => it.path === key),
        `${f}: the secret projects ${key}`,
      );
    }
    assert.equal(secretVols.length, production ? 3 : 0);
    for (const e of c.env ?? []) {
      assert.equal(e.valueFrom, undefined, `env ${e.name} must not come from a secret`);
      assert.doesNotMatch(e.name, /PASS|SECRET|TOKEN|KEY/i);
    }
    assert.equal(c.envFrom, undefined);
    assert.ok(c.env?.some((e) => e.name === 'OTEL_SERVICE_NAME'));
    assert.ok(
      (pod.terminationGracePeriodSeconds ?? 0) > cfg.shutdown.drainTimeoutMs / 1000 + APP_FORCE_EXIT_S,
      `${pod.terminationGracePeriodSeconds}s > drain + ${APP_FORCE_EXIT_S}s`,
    );
    assert.ok(c.resources.requests?.memory !== undefined && c.resources.limits?.memory !== undefined);
    assert.match(dep.spec.template.metadata.annotations['checksum/config'] ?? '', /^[0-9a-f]{64}$/);
    assert.equal(one<ServiceAccount>(m, 'ServiceAccount').automountServiceAccountToken, false);
  });

  test(`helm template (${label}): the helm test pod curls the Service's /readyz and is not selected by the Service`, { skip }, () => {
    const m = render(...layers);
    const pod = testPod(m);
    assert.equal(pod.metadata.annotations?.['helm.sh/hook'], 'test');
    assert.equal(pod.spec.restartPolicy, 'Never');
    const c = pod.spec.containers[0];
    assert.deepEqual(c.command, ['curl']);
    assert.equal(c.args?.at(-1), `http://${FULLNAME}.${NAMESPACE}.svc:9464/readyz`);
    assert.ok(c.args?.includes('--fail'), 'a non-2xx answer fails the test');
    const svc = one<Service>(m, 'Service');
    const matches = Object.entries(svc.spec.selector).every(([k, v]) => pod.metadata.labels?.[k] === v);
    assert.equal(matches, false, 'the Service (and PDB, NetworkPolicy) must not select the test pod');
    assert.equal(pod.spec.securityContext.runAsNonRoot, true);
    assert.equal(pod.spec.automountServiceAccountToken, false);
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  });
}

test('helm template (production): KEDA trigger with its TriggerAuthentication, ServiceMonitor job label, NetworkPolicy peers, pull secrets, zone spread', {
  skip,
}, () => {
  const m = render(PROD);
  const so = one<ScaledObject>(m, 'ScaledObject');
  const trigger = so.spec.triggers[0];
  assert.equal(trigger.type, 'kafka');
  assert.equal(trigger.metadata.consumerGroup, 'bioner-router');
  assert.equal(trigger.metadata.lagThreshold, '500');
  assert.equal(trigger.metadata.sasl, 'scram_sha512');
  assert.equal(trigger.metadata.tls, 'enable');
  assert.equal(trigger.metadata.unsafeSsl, undefined);
  assert.ok(so.spec.maxReplicaCount <= 3);
  // The referenced TriggerAuthentication is rendered, from the same secrets the router mounts.
  const ta = one<TriggerAuthentication>(m, 'TriggerAuthentication');
  assert.equal(trigger.authenticationRef?.name, ta.metadata.name);
  assert.deepEqual(ta.spec.secretTargetRef, [
    { parameter: 'username', name: 'bioner-router-kafka-user', key: 'username' },
    { parameter: 'password', name: 'bioner-router-kafka-user', key: 'password' },
    { parameter: 'ca', name: 'kafka-cluster-ca-cert', key: 'ca.crt' },
  ]);
  assert.equal(one<Deployment>(m, 'Deployment').spec.replicas, undefined, 'KEDA owns the replica count');
  const sm = one<ServiceMonitor>(m, 'ServiceMonitor');
  assert.equal(sm.spec.endpoints[0].port, 'metrics');
  assert.equal(sm.spec.jobLabel, 'app.kubernetes.io/name', 'job="bioner-router" for the alerts and dashboard');
  assert.equal(one<Service>(m, 'Service').metadata.labels?.['app.kubernetes.io/name'], 'bioner-router');
  const np = one<NetworkPolicy>(m, 'NetworkPolicy');
  assert.deepEqual(np.spec.policyTypes, ['Ingress', 'Egress']);
  assert.deepEqual(
    np.spec.egress.map((r) => r.ports.map((p) => p.port).join(',')),
    ['53,53', '9093', '8000', '4318'],
  );
  for (const r of np.spec.egress) assert.ok((r.to ?? []).length > 0, 'every egress rule names its peers');
  assert.equal(np.spec.ingress[0].ports[0].port, 9464);
  const from = np.spec.ingress[0].from ?? [];
  assert.ok(
    from.some((p) => p.podSelector?.matchLabels?.['app.kubernetes.io/component'] === 'helm-test'),
    'the helm test pod may reach the metrics port',
  );
  const testLabels = testPod(m).metadata.labels ?? {};
  const testPeer = from.find((p) => p.podSelector !== undefined);
  assert.ok(
    Object.entries(testPeer?.podSelector?.matchLabels ?? {}).every(([k, v]) => testLabels[k] === v),
    'the peer selects the test pod',
  );
  const pod = one<Deployment>(m, 'Deployment').spec.template.spec;
  assert.deepEqual(pod.imagePullSecrets, [{ name: 'registry-credentials' }]);
  assert.deepEqual(testPod(m).spec.imagePullSecrets, [{ name: 'registry-credentials' }]);
  assert.deepEqual(pod.topologySpreadConstraints?.[0].labelSelector.matchLabels, {
    'app.kubernetes.io/name': 'bioner-router',
    'app.kubernetes.io/instance': RELEASE,
  });
});

test('checksum/config: changes with the rendered config, not with unrelated values', { skip }, () => {
  const sum = (...layers: Layer[]): string => one<Deployment>(render(...layers), 'Deployment').spec.template.metadata.annotations['checksum/config'];
  const base = sum();
  assert.equal(sum({ replicas: 2, podAnnotations: { a: 'b' } }), base, 'replicas and pod annotations do not roll for config');
  assert.notEqual(sum({ config: { logging: { level: 'debug' } } }), base);
  assert.notEqual(sum({ kafkaSasl: { enabled: true, existingSecret: 's' } }), base, 'secret file paths are part of the config');
});

test('chart knobs: image digest, pull secrets, pod labels/annotations, SA annotations, spread, affinity, extra env/volumes, tests image', { skip }, () => {
  const digest = `sha256:${'a'.repeat(64)}`;
  const affinity = {
    podAntiAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [
        {
          weight: 100,
          podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { 'app.kubernetes.io/name': 'bioner-router' } } },
        },
      ],
    },
  };
  const m = render({
    image: { digest },
    imagePullSecrets: [{ name: 'regcred' }],
    podLabels: { team: 'nlp' },
    podAnnotations: { 'example.com/owner': 'nlp' },
    serviceAccount: { annotations: { 'eks.amazonaws.com/role-arn': 'arn:aws:iam::1:role/r' } },
    topologySpreadConstraints: [
      { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'ScheduleAnyway' },
      { maxSkew: 2, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'DoNotSchedule', labelSelector: { matchLabels: { custom: 'x' } } },
    ],
    affinity,
    extraEnv: [{ name: 'NODE_OPTIONS', value: '--max-old-space-size=768' }],
    extraVolumes: [{ name: 'extra-ca', configMap: { name: 'corp-ca' } }],
    extraVolumeMounts: [{ name: 'extra-ca', mountPath: '/etc/ssl/corp', readOnly: true }],
    tests: { image: { repository: 'registry.example.internal/curl', tag: '8', digest } },
  });
  const dep = one<Deployment>(m, 'Deployment');
  const pod = dep.spec.template.spec;
  const c = router(m);
  assert.equal(c.image, `bioner-router:0.1.0@${digest}`);
  assert.deepEqual(pod.imagePullSecrets, [{ name: 'regcred' }]);
  assert.equal(dep.spec.template.metadata.labels.team, 'nlp');
  assert.equal(dep.spec.template.metadata.labels['app.kubernetes.io/name'], 'bioner-router', 'selector labels kept');
  assert.equal(dep.spec.template.metadata.annotations['example.com/owner'], 'nlp');
  assert.ok(dep.spec.template.metadata.annotations['checksum/config'] !== undefined, 'pod annotations do not displace the checksum');
  assert.equal(one<ServiceAccount>(m, 'ServiceAccount').metadata.annotations?.['eks.amazonaws.com/role-arn'], 'arn:aws:iam::1:role/r');
  assert.deepEqual(
    pod.topologySpreadConstraints?.map((t) => t.labelSelector.matchLabels),
    [{ 'app.kubernetes.io/name': 'bioner-router', 'app.kubernetes.io/instance': RELEASE }, { custom: 'x' }],
  );
  assert.deepEqual(pod.affinity, affinity);
  assert.deepEqual(
    c.env?.map((e) => e.name),
    ['OTEL_SERVICE_NAME', 'NODE_OPTIONS'],
  );
  assert.deepEqual(pod.volumes?.find((v) => v.name === 'extra-ca')?.configMap, { name: 'corp-ca' });
  assert.deepEqual(
    c.volumeMounts?.find((v) => v.name === 'extra-ca'),
    { name: 'extra-ca', mountPath: '/etc/ssl/corp', readOnly: true },
  );
  const t = testPod(m);
  assert.equal(t.spec.containers[0].image, `registry.example.internal/curl:8@${digest}`);
  assert.deepEqual(t.spec.imagePullSecrets, [{ name: 'regcred' }]);
});

test('chart knobs: probes are overridable key by key, a handler can be replaced (default set to null), a probe removed', { skip }, () => {
  const tuned = router(render({ probes: { startup: { failureThreshold: 60 }, readiness: { periodSeconds: 3 } } }));
  assert.deepEqual(tuned.startupProbe?.httpGet, { path: '/startupz', port: 'metrics' }, 'the path stays');
  assert.equal(tuned.startupProbe?.failureThreshold, 60);
  assert.equal(tuned.readinessProbe?.periodSeconds, 3);
  const exec = router(render({ probes: { liveness: { httpGet: null, exec: { command: ['/bin/true'] } } } }));
  assert.deepEqual(exec.livenessProbe?.exec, { command: ['/bin/true'] });
  assert.equal(exec.livenessProbe?.httpGet, undefined);
  assert.equal(router(render({ probes: { startup: null } })).startupProbe, undefined);
  assert.match(renderFails({ probes: { startup: { exec: { command: ['x'] } } } }), /probes\.startup needs exactly one handler .*has 2/);
  assert.match(renderFails({ probes: { liveness: { periodSecond: 5 } } }), /probes\.liveness: Additional property periodSecond is not allowed/);
});

test('chart knobs: tests.enabled=false drops the test pod; an external keda.authenticationRef is used as is', { skip }, () => {
  assert.equal(all<Pod>(render({ tests: { enabled: false } }), 'Pod').length, 0);
  const m = render(PROD, { keda: { authenticationRef: 'shared-kafka-auth' } });
  assert.equal(one<ScaledObject>(m, 'ScaledObject').spec.triggers[0].authenticationRef?.name, 'shared-kafka-auth');
  assert.equal(all<TriggerAuthentication>(m, 'TriggerAuthentication').length, 0, 'not templated when one is named');
});

test('KEDA auth follows kafkaTls / kafkaSasl: none for plaintext or a public CA, mTLS cert/key, unsafeSsl when verification is off', { skip }, () => {
  const on = { keda: { enabled: true } };
  const plain = render(on);
  assert.equal(one<ScaledObject>(plain, 'ScaledObject').spec.triggers[0].authenticationRef, undefined);
  assert.equal(all(plain, 'TriggerAuthentication').length, 0);
  const publicCa = render(on, { kafkaTls: { enabled: true } });
  assert.equal(one<ScaledObject>(publicCa, 'ScaledObject').spec.triggers[0].metadata.tls, 'enable');
  assert.equal(all(publicCa, 'TriggerAuthentication').length, 0, 'TLS against a public CA needs no secret');
  const mtls = render(on, {
    kafkaTls: { enabled: true, rejectUnauthorized: false, clientSecret: 'client-tls' },
    kafkaSasl: { enabled: true, mechanism: 'plain', existingSecret: 'creds' },
  });
  const trig = one<ScaledObject>(mtls, 'ScaledObject').spec.triggers[0];
  assert.equal(trig.metadata.sasl, 'plaintext');
  assert.equal(trig.metadata.unsafeSsl, 'true');
  assert.deepEqual(
    one<TriggerAuthentication>(mtls, 'TriggerAuthentication').spec.secretTargetRef.map((r) => `${r.parameter}=${r.name}/${r.key}`),
    ['username=creds/username', 'password=creds/password', 'cert=client-tls/tls.crt', 'key=client-tls/tls.key'],
  );
});

test('the HPA renders at the partition bound; with production, every template file renders in some case', { skip }, () => {
  const m = render({ hpa: { enabled: true, maxReplicas: 3 } });
  assert.equal(m.filter((x) => x.source === 'templates/hpa.yaml').length, 1);
  assert.equal(one<Deployment>(m, 'Deployment').spec.replicas, undefined);
  const seen = new Set([...m, ...render(PROD)].map((x) => x.source));
  assert.deepEqual(
    templateFiles().filter((f) => !seen.has(f)),
    [],
    'a template no test renders',
  );
});

test('values.schema.json (enforced by helm) rejects bad values and names the field', { skip }, async () => {
  const rejects: Array<[Layer[], RegExp]> = [
    [[{ replicas: 'three' }], /replicas: Invalid type\. Expected: integer, given: string/],
    [[PROD, { kafkaSasl: { mechanism: 'scram-sha-1' } }], /kafkaSasl\.mechanism: kafkaSasl\.mechanism must be one of/],
    [[{ config: { llm: { apiKeyFile: '/x' } } }], /config\.llm: Must not validate the schema \(not\)/],
    [[{ config: { shutdown: null } }], /config: shutdown is required/],
    [[{ terminationGraceMarginSeconds: 10 }], /terminationGraceMarginSeconds: Must be greater than or equal to 11/],
    [[{ replica: 5 }], /\(root\): Additional property replica is not allowed/],
    [[PROD, { kafkaSasl: { existingSecrett: 'x' } }], /kafkaSasl: Additional property existingSecrett is not allowed/],
    [[{ networkPolicy: { kafka: { port: [9092] } } }], /networkPolicy\.kafka: Additional property port is not allowed/],
    [[{ networkPolicy: { kafka: { to: [{ namespaceSelectr: {} }] } } }], /networkPolicy\.kafka\.to\.0: Additional property namespaceSelectr is not allowed/],
    [[{ config: { routing: { policy: 'fastest' } } }], /config\.routing\.policy: config\.routing\.policy must be one of/],
    [[{ imagePullSecrets: ['regcred'] }], /imagePullSecrets\.0: Invalid type\. Expected: object, given: string/],
    [[{ image: { digest: 'sha256:abc' } }], /image\.digest: Does not match pattern/],
    [[{ topologySpreadConstraints: [{ maxSkew: 1, whenUnsatisfiable: 'ScheduleAnyway' }] }], /topologySpreadConstraints\.0: topologyKey is required/],
    [[{ serviceAccount: { annotation: {} } }], /serviceAccount: Additional property annotation is not allowed/],
    [[{ podLabels: { team: 1 } }], /podLabels\.team: Invalid type\. Expected: string, given: integer/],
  ];
  await allFail(rejects);
  // Keys Helm injects when the chart is a subchart are allowed; config stays open (validateConfig refuses unknown keys at start-up).
  render({ global: { imageRegistry: 'r' }, enabled: true });
  render({ config: { input: { maxNoteBytes: 1000 } } });
});

test('template fail: bounds against partitions, SASL without a secret, HPA+KEDA, no drain time, selector labels, reserved volume names', { skip }, async () => {
  const fails: Array<[Layer[], RegExp]> = [
    [[PROD, { keda: { maxReplicaCount: 6 } }], /keda\.maxReplicaCount \(6\) must not exceed partitions \(3\)/],
    [[{ replicas: 4 }], /replicas \(4\) must not exceed partitions \(3\)/],
    [[{ hpa: { enabled: true, maxReplicas: 4 } }], /hpa\.maxReplicas \(4\) must not exceed partitions \(3\)/],
    [[{ kafkaSasl: { enabled: true } }], /kafkaSasl\.existingSecret is required/],
    [[{ hpa: { enabled: true }, keda: { enabled: true } }], /exclusive/],
    [[{ config: { shutdown: { drainTimeoutMs: null } } }], /config\.shutdown: drainTimeoutMs is required/],
    [[{ podLabels: { 'app.kubernetes.io/instance': 'other' } }], /podLabels\.app\.kubernetes\.io\/instance is set by the chart/],
    [[{ extraVolumes: [{ name: 'tmp', emptyDir: {} }] }], /extraVolumes: the name "tmp" is used by the chart/],
  ];
  await allFail(fails);
});

test('NetworkPolicy: enabling it without explicit destinations fails the render with the field named', { skip }, () => {
  const kafkaTo = [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kafka' } } }];
  assert.match(renderFails({ networkPolicy: { enabled: true } }), /networkPolicy\.kafka\.to is empty: .*any destination/);
  assert.match(
    renderFails({ networkPolicy: { enabled: true, kafka: { to: kafkaTo } }, config: { llm: { adapter: 'openai', baseUrl: 'http://vllm:8000', model: 'm' } } }),
    /networkPolicy\.llm\.to is empty: config\.llm\.adapter is "openai"/,
  );
  assert.match(
    renderFails({ networkPolicy: { enabled: true, kafka: { to: kafkaTo } }, otel: { endpoint: 'http://collector:4318' } }),
    /networkPolicy\.otelCollector\.to is empty/,
  );
  assert.match(renderFails(PROD, { networkPolicy: { kafka: { to: [] } } }), /networkPolicy\.kafka\.to is empty/);
  // The in-process ONNX LLM needs no LLM egress; with only Kafka named the policy renders, and every rule has peers.
  const np = one<NetworkPolicy>(render({ networkPolicy: { enabled: true, kafka: { to: kafkaTo } } }), 'NetworkPolicy');
  assert.deepEqual(
    np.spec.egress.map((r) => r.ports.map((p) => p.port).join(',')),
    ['53,53', '9092,9093'],
  );
  for (const r of np.spec.egress) assert.ok((r.to ?? []).length > 0);
  assert.equal(np.spec.ingress[0].from, undefined, 'metricsFrom [] leaves the metrics port open to scrapers anywhere');
  // Disabled (the default): no policy at all, and the render does not fail.
  assert.equal(all(render(), 'NetworkPolicy').length, 0);
});

test("grace period follows drainTimeoutMs; the margin outlasts the app's force-exit", { skip }, () => {
  const dep = one<Deployment>(render({ config: { shutdown: { drainTimeoutMs: 60500 } } }), 'Deployment');
  assert.equal(dep.spec.template.spec.terminationGracePeriodSeconds, 61 + 15);
  assert.equal(APP_FORCE_EXIT_S, 10);
  const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8')) as {
    properties: { terminationGraceMarginSeconds: { minimum: number } };
  };
  assert.ok(schema.properties.terminationGraceMarginSeconds.minimum > APP_FORCE_EXIT_S);
  render({ terminationGraceMarginSeconds: 11 });
});

test('the chart ships a README, NOTES.txt and .helmignore; NOTES renders', { skip }, () => {
  for (const f of ['README.md', 'templates/NOTES.txt', '.helmignore']) assert.ok(statSync(join(chartDir, f)).size > 0, f);
  // Helm renders NOTES.txt only on install/upgrade, which need a cluster even with --dry-run: render the same text
  // through `helm template` in a copy of the chart, wrapped in a define and printed into a ConfigMap.
  const copy = join(tmp, 'chart-notes');
  cpSync(chartDir, copy, { recursive: true });
  const notes = readFileSync(join(copy, 'templates/NOTES.txt'), 'utf8');
  rmSync(join(copy, 'templates/NOTES.txt'));
  writeFileSync(join(copy, 'templates/_notes-under-test.tpl'), `{{- define "notes-under-test" -}}\n${notes}{{- end -}}\n`);
  writeFileSync(
    join(copy, 'templates/notes-under-test.yaml'),
    'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "notes-under-test" . | quote }}\n',
  );
  const out = (layers: Layer[]): string => {
    const r = runTool(helm, ['template', RELEASE, copy, '--namespace', NAMESPACE, '--show-only', 'templates/notes-under-test.yaml', ...valueArgs(layers)]);
    assert.equal(r.status, 0, r.stderr);
    return (parseYaml(r.stdout) as ConfigMap).data.notes;
  };
  const prod = out([PROD]);
  assert.match(prod, /installed as bioner-router-bioner-router in bioner/);
  assert.match(prod, /KEDA scales it from 1 to 3 replicas on lag/);
  assert.match(prod, /helm test bioner-router -n bioner/);
  assert.match(prod, /port-forward svc\/bioner-router-bioner-router 9464/);
  assert.doesNotMatch(prod, /No NetworkPolicy/);
  const plain = out([]);
  assert.match(plain, /with 1 replica\(s\)/);
  assert.match(plain, /No NetworkPolicy was created/);
  assert.doesNotMatch(out([{ tests: { enabled: false } }]), /helm test/);
});

test('helm package: the chart packages with its README, schema and test hook; .helmignore keeps editor leftovers out', { skip }, () => {
  const copy = join(tmp, 'chart-package');
  cpSync(chartDir, copy, { recursive: true });
  writeFileSync(join(copy, 'values.yaml.swp'), 'editor leftover');
  const dest = join(tmp, 'packages');
  const r = runTool(helm, ['package', copy, '--destination', dest]);
  assert.equal(r.status, 0, r.stderr);
  const tgz = readdirSync(dest).find((f) => f.endsWith('.tgz'));
  assert.ok(tgz !== undefined, r.stdout);
  const list = spawnSync('tar', ['-tzf', join(dest, tgz)], { encoding: 'utf8' });
  assert.equal(list.status, 0, list.stderr);
  const entries = list.stdout.split('\n').filter((l) => l !== '');
  for (const f of ['Chart.yaml', 'values.yaml', 'values.schema.json', 'README.md', 'templates/NOTES.txt', 'templates/tests/test-readyz.yaml'])
    assert.ok(entries.includes(`bioner-router/${f}`), `${f} is packaged`);
  assert.ok(!entries.some((e) => e.endsWith('.swp')), 'editor leftovers are ignored');
});
