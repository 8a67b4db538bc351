import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import avro from 'avsc';
import { applyEnvironment, environmentOverrides, validateConfig } from '../../src/config/load.js';
import { ConfigError, RouterError } from '../../src/errors.js';
import { encodeNote } from '../../src/ingest/decode.js';
import { NoteDecoder } from '../../src/ingest/note-decoder.js';
import { frameConfluent, parseConfluentFrame, SchemaRegistryClient, schemaRegistryOptions } from '../../src/ingest/schema-registry.js';
import { avroType } from '../../src/schemas.js';
import { startTestRegistry } from '../helpers/schema-registry.js';

// Throw-away test PKI (P-256, valid 100 years, generated with openssl for this test only): a CA and a
// server certificate for IP:127.0.0.1 signed by it. Never used outside tests.
const CA_CRT =
  [
    '-----BEGIN CERTIFICATE-----',
    'MIIBmjCCAUGgAwIBAgIUXTKp5EZ4lVQC5DCZBvOE8GvM01UwCgYIKoZIzj0EAwIw',
    'IjEgMB4GA1UEAwwXYmlvbmVyIHRlc3QgcmVnaXN0cnkgQ0EwIBcNMjYxMjAxMjAz',
    'MjI1WhgPMjEyNjExMDcyMDMyMjVaMCIxIDAeBgNVBAMMF2Jpb25lciB0ZXN0IHJl',
    'Z2lzdHJ5IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEY743fVboYWuFK1nD',
    'YESYHZsboQEMCCeW2f9OGfin6r4ul7ofFm/MoP4Y8yqmcskN4G2lA+tMIHrUrFEz',
    'zMaW9KNTMFEwHQYDVR0OBBYEFNgx/+8Jls6asoc5V1Ley54qLieFMB8GA1UdIwQY',
    'MBaAFNgx/+8Jls6asoc5V1Ley54qLieFMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI',
    'zj0EAwIDRwAwRAIgSYY23XcalQjrUKeYpqfmvOHyzzfESEjH2MPOVbpnPSkCIAFY',
    'RBi2HSfljB92ul3Ovs7sPJTY5ldSZ8vEnteQaAXC',
    '-----END CERTIFICATE-----',
  ].join('\n') + '\n';
const SERVER_CRT =
  [
    '-----BEGIN CERTIFICATE-----',
    'MIIBvDCCAWGgAwIBAgIULuyr4MsFF0d7ZpzmvhgSE8jGrsswCgYIKoZIzj0EAwIw',
    'IjEgMB4GA1UEAwwXYmlvbmVyIHRlc3QgcmVnaXN0cnkgQ0EwIBcNMjYxMjAxMjAz',
    'MjI1WhgPMjEyNjExMDcyMDMyMjVaMBQxEjAQBgNVBAMMCTEyNy4wLjAuMTBZMBMG',
    'ByqGSM49AgEGCCqGSM49AwEHA0IABO2l4sLg7BrBQso9GF2xVa0hiRclJSnVPS+q',
    '9QODxvFBm9n4toNe6DnfgjJ6UN1eD2YhkOQsg/ibM0uCXFUW566jgYAwfjAPBgNV',
    'HREECDAGhwR/AAABMAkGA1UdEwQCMAAwCwYDVR0PBAQDAgeAMBMGA1UdJQQMMAoG',
    'CCsGAQUFBwMBMB0GA1UdDgQWBBRLbxrVsU6oEd5R/uuPihkPtpncmzAfBgNVHSME',
    'GDAWgBTYMf/vCZbOmrKHOVdS3sueKi4nhTAKBggqhkjOPQQDAgNJADBGAiEAg3je',
    'aTYAJ9iJc6VArSMOXAD3UIjndUnUtykExypoCswCIQCL5YsL19DEbEwQCyskz3Ox',
    'c5rZAWEiMMaKuhtuWjgvhw==',
    '-----END CERTIFICATE-----',
  ].join('\n') + '\n';
const SERVER_KEY =
  [
    '-----BEGIN PRIVATE KEY-----',
    'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQga3CS6f0ljrZ/9xBC',
    'JGPaR3nbXpOafJA0GOK0cPTuKyehRANCAATtpeLC4OwawULKPRhdsVWtIYkXJSUp',
    '1T0vqvUDg8bxQZvZ+LaDXug534IyelDdXg9mIZDkLIP4mzNLglxVFueu',
    '-----END PRIVATE KEY-----',
  ].join('\n') + '\n';

const clinicalNoteSchema = JSON.stringify(avroType('clinical-note').schema());

/** The ClinicalNote schema as a later producer might write it: a field appended with a default. */
function evolvedWriterSchema(): string {
  const schema = JSON.parse(clinicalNoteSchema) as { fields: Array<Record<string, unknown>> };
  schema.fields.push({ name: 'encounter_id', type: ['null', 'string'], default: null, doc: 'added by a later producer' });
  return JSON.stringify(schema);
}

async function rejectsWithCode(p: Promise<unknown>, code: string, retriable: boolean): Promise<RouterError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RouterError, `a RouterError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.retriable, retriable, `${code} retriable`);
    return err;
  }
  assert.fail(`expected ${code}`);
}

test('the Confluent frame is magic byte 0, a 4-byte big-endian id, then the body', () => {
  const framed = frameConfluent(0x01020304, Buffer.from([9, 8]));
  assert.deepEqual([...framed], [0, 1, 2, 3, 4, 9, 8]);
  assert.deepEqual(parseConfluentFrame(framed), { schemaId: 0x01020304, body: Buffer.from([9, 8]) });
  assert.equal(parseConfluentFrame(Buffer.from([0, 0, 0, 1])), undefined, 'too short');
  assert.equal(parseConfluentFrame(Buffer.from([1, 0, 0, 0, 1, 5])), undefined, 'wrong magic byte');
});

test('schemas by id are fetched once and cached; concurrent lookups share one request', async () => {
  const registry = await startTestRegistry();
  try {
    const id = registry.register('notes-value', clinicalNoteSchema);
    const client = new SchemaRegistryClient({ url: registry.url, timeoutMs: 2000 });
    const [a, b] = await Promise.all([client.schemaById(id), client.schemaById(id)]);
    assert.equal(a.schema, clinicalNoteSchema);
    assert.equal(a.schemaType, 'AVRO');
    assert.equal(b, a);
    await client.schemaById(id);
    assert.equal(registry.requests.filter((r) => r.path === `/schemas/ids/${id}`).length, 1);
    assert.equal(client.stats.requests, 1);
    assert.equal(client.stats.cacheHits, 2);
  } finally {
    await registry.close();
  }
});

test('registry failures: 404 is SCHEMA_NOT_FOUND (not retriable); reset, 503, refused and slow are SCHEMA_REGISTRY_UNAVAILABLE (retriable), never cached', async () => {
  const registry = await startTestRegistry();
  const client = new SchemaRegistryClient({ url: registry.url, timeoutMs: 300 });
  try {
    await rejectsWithCode(client.schemaById(4242), 'SCHEMA_NOT_FOUND', false);
    const id = registry.register('s-value', clinicalNoteSchema);
    registry.setFault('reset');
    const reset = await rejectsWithCode(client.schemaById(id), 'SCHEMA_REGISTRY_UNAVAILABLE', true);
    assert.match(reset.message, /ECONNRESET|socket hang up/);
    registry.setFault('unavailable');
    const unavailable = await rejectsWithCode(client.schemaById(id), 'SCHEMA_REGISTRY_UNAVAILABLE', true);
    assert.match(unavailable.message, /HTTP 503 \(error_code 50003\)/);
    registry.setFault(false);
    assert.equal((await client.schemaById(id)).id, id, 'a recovered registry is asked again');
  } finally {
    await registry.close();
  }
  // A port nobody listens on (the registry's own could still have a kept-alive socket in the agent's pool).
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const freePort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const refused = new SchemaRegistryClient({ url: `http://127.0.0.1:${freePort}`, timeoutMs: 300 });
  assert.match((await rejectsWithCode(refused.schemaById(1), 'SCHEMA_REGISTRY_UNAVAILABLE', true)).message, /ECONNREFUSED/);
  // A registry that takes the request and never answers.
  const silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  try {
    const slow = new SchemaRegistryClient({ url: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, timeoutMs: 200 });
    const started = Date.now();
    assert.match((await rejectsWithCode(slow.schemaById(1), 'SCHEMA_REGISTRY_UNAVAILABLE', true)).message, /timeoutMs \(200 ms\)/);
    assert.ok(Date.now() - started < 2000, 'the timeout holds');
  } finally {
    silent.closeAllConnections();
    await new Promise<void>((r) => silent.close(() => r()));
  }
});

test('register returns one id per schema (idempotent); lookup finds it or answers SCHEMA_NOT_FOUND; a refused registration is SCHEMA_INCOMPATIBLE', async () => {
  const registry = await startTestRegistry();
  try {
    const client = new SchemaRegistryClient({ url: `${registry.url}/`, timeoutMs: 2000 });
    const schema = JSON.stringify(avroType('tagged-note').schema());
    const id = await client.register('tagged notes-value', schema);
    assert.equal(await client.register('tagged notes-value', schema), id);
    assert.deepEqual(registry.subjects.get('tagged notes-value'), [id], 'subject names are URL-encoded');
    assert.equal(await client.lookup('tagged notes-value', schema), id);
    await rejectsWithCode(client.lookup('other-value', schema), 'SCHEMA_NOT_FOUND', false);
    await rejectsWithCode(client.lookup('tagged notes-value', clinicalNoteSchema), 'SCHEMA_NOT_FOUND', false);
    registry.refuseRegistrations(true);
    await rejectsWithCode(client.register('tagged notes-value', clinicalNoteSchema), 'SCHEMA_INCOMPATIBLE', false);
  } finally {
    await registry.close();
  }
});

test('basic auth: the credentials from the files are sent; wrong ones are a retriable 401 with a hint and no secret in the message', async () => {
  const registry = await startTestRegistry({ username: 'router', password: 'S3CRET-PW' });
  const dir = await mkdtemp(join(tmpdir(), 'bioner-sr-'));
  try {
    await writeFile(join(dir, 'user'), 'router\n');
    await writeFile(join(dir, 'pass'), 'S3CRET-PW\r\n');
    await writeFile(join(dir, 'wrong'), 'nope\n');
    const id = registry.register('s-value', clinicalNoteSchema);
    const config = validateConfig({ schemaRegistry: { url: registry.url, usernameFile: join(dir, 'user'), passwordFile: join(dir, 'pass') } });
    const options = await schemaRegistryOptions(config.schemaRegistry);
    assert.ok(options !== undefined);
    assert.deepEqual(options.auth, { username: 'router', password: 'S3CRET-PW' });
    assert.equal((await new SchemaRegistryClient(options).schemaById(id)).id, id);
    const wrong = await schemaRegistryOptions(
      validateConfig({ schemaRegistry: { url: registry.url, usernameFile: join(dir, 'user'), passwordFile: join(dir, 'wrong') } }).schemaRegistry,
    );
    assert.ok(wrong !== undefined);
    const err = await rejectsWithCode(new SchemaRegistryClient(wrong).schemaById(id), 'SCHEMA_REGISTRY_UNAVAILABLE', true);
    assert.match(err.message, /HTTP 401.*usernameFile/);
    assert.ok(!err.message.includes('nope') && !err.message.includes('S3CRET'));
    assert.equal(await schemaRegistryOptions(validateConfig({}).schemaRegistry), undefined, 'no url, no client');
    await assert.rejects(
      schemaRegistryOptions(
        validateConfig({ schemaRegistry: { url: registry.url, usernameFile: join(dir, 'missing'), passwordFile: join(dir, 'pass') } }).schemaRegistry,
      ),
      (e: unknown) => e instanceof ConfigError && e.field === 'schemaRegistry.usernameFile' && /missing: ENOENT/.test(e.message),
    );
    await writeFile(join(dir, 'empty'), '\n');
    await assert.rejects(
      schemaRegistryOptions(
        validateConfig({ schemaRegistry: { url: registry.url, usernameFile: join(dir, 'user'), passwordFile: join(dir, 'empty') } }).schemaRegistry,
      ),
      (e: unknown) => e instanceof ConfigError && e.field === 'schemaRegistry.passwordFile' && /is empty/.test(e.message),
    );
  } finally {
    await registry.close();
  }
});

test('TLS: the registry certificate is verified against schemaRegistry.tls.caFile; without it the handshake fails (retriable); rejectUnauthorized false skips the check', async () => {
  const registry = await startTestRegistry({ tls: { key: SERVER_KEY, cert: SERVER_CRT } });
  const dir = await mkdtemp(join(tmpdir(), 'bioner-sr-tls-'));
  try {
    await writeFile(join(dir, 'ca.crt'), CA_CRT);
    const id = registry.register('s-value', clinicalNoteSchema);
    const withCa = await schemaRegistryOptions(validateConfig({ schemaRegistry: { url: registry.url, tls: { caFile: join(dir, 'ca.crt') } } }).schemaRegistry);
    assert.ok(withCa !== undefined);
    assert.equal((await new SchemaRegistryClient(withCa).schemaById(id)).id, id);
    const noCa = await schemaRegistryOptions(validateConfig({ schemaRegistry: { url: registry.url } }).schemaRegistry);
    assert.ok(noCa !== undefined);
    const err = await rejectsWithCode(new SchemaRegistryClient(noCa).schemaById(id), 'SCHEMA_REGISTRY_UNAVAILABLE', true);
    assert.match(err.message, /request failed \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT)\)/);
    const insecure = await schemaRegistryOptions(validateConfig({ schemaRegistry: { url: registry.url, tls: { rejectUnauthorized: false } } }).schemaRegistry);
    assert.ok(insecure !== undefined);
    assert.equal((await new SchemaRegistryClient(insecure).schemaById(id)).id, id);
  } finally {
    await registry.close();
  }
});

function expectField(fn: () => unknown, field: string, message?: RegExp): void {
  assert.throws(
    fn,
    (e: unknown) => e instanceof ConfigError && e.problems.some((p) => p.field === field && (message === undefined || message.test(p.message))),
    `expected a problem on ${field}`,
  );
}

test('config: defaults, rules naming the field, and environment variables', () => {
  const c = validateConfig({});
  assert.equal(c.output.wireFormat, 'raw');
  assert.equal(c.output.spanText, true);
  assert.equal(c.output.subject, undefined);
  assert.equal(c.schemaRegistry.url, undefined);
  assert.equal(c.schemaRegistry.autoRegister, true);
  assert.equal(c.schemaRegistry.timeoutMs, 5000);
  assert.equal(c.schemaRegistry.tls.rejectUnauthorized, true);
  expectField(() => validateConfig({ output: { wireFormat: 'confluent' } }), 'schemaRegistry.url', /output.wireFormat/);
  expectField(() => validateConfig({ output: { subject: 'x-value' } }), 'output.subject', /raw/);
  expectField(() => validateConfig({ schemaRegistry: { url: 'http://sr:8081', usernameFile: '/u' } }), 'schemaRegistry.passwordFile', /together/);
  expectField(() => validateConfig({ schemaRegistry: { url: 'http://sr:8081', tls: { caFile: '/ca' } } }), 'schemaRegistry.tls.caFile', /http:/);
  expectField(() => validateConfig({ schemaRegistry: { url: 'https://user:pw@sr:8081' } }), 'schemaRegistry.url', /credentials/);
  expectField(() => validateConfig({ schemaRegistry: { url: 'sr:8081' } }), 'schemaRegistry.url', /http/);
  expectField(() => validateConfig({ schemaRegistry: { usernameFile: '/u', passwordFile: '/p' } }), 'schemaRegistry.url');
  expectField(() => validateConfig({ schemaRegistry: { timeoutMs: 0 } }), 'schemaRegistry.timeoutMs');
  expectField(() => validateConfig({ output: { wireFormat: 'avro' } }), 'output.wireFormat');
  const ok = validateConfig({
    output: { wireFormat: 'confluent', subject: 'notes-tagged' },
    schemaRegistry: { url: 'https://sr.internal/prefix', usernameFile: '/u', passwordFile: '/p', tls: { caFile: '/ca' }, autoRegister: false },
  });
  assert.equal(ok.output.subject, 'notes-tagged');
  const vars = new Map(environmentOverrides().map((o) => [o.variable, o.path.join('.')]));
  for (const [v, path] of [
    ['BIONER_OUTPUT_WIRE_FORMAT', 'output.wireFormat'],
    ['BIONER_OUTPUT_SPAN_TEXT', 'output.spanText'],
    ['BIONER_SCHEMA_REGISTRY_TIMEOUT_MS', 'schemaRegistry.timeoutMs'],
    ['BIONER_SCHEMA_REGISTRY_AUTO_REGISTER', 'schemaRegistry.autoRegister'],
    ['BIONER_SCHEMA_REGISTRY_TLS_REJECT_UNAUTHORIZED', 'schemaRegistry.tls.rejectUnauthorized'],
  ])
    assert.equal(vars.get(v), path, v);
  const env = validateConfig(
    applyEnvironment(
      { schemaRegistry: { url: 'http://sr:8081' } },
      { BIONER_OUTPUT_WIRE_FORMAT: 'confluent', BIONER_OUTPUT_SPAN_TEXT: 'false', BIONER_SCHEMA_REGISTRY_AUTO_REGISTER: 'false' },
    ),
  );
  assert.equal(env.output.wireFormat, 'confluent');
  assert.equal(env.output.spanText, false);
  assert.equal(env.schemaRegistry.autoRegister, false);
});

const note = { noteId: 'n-1', text: 'Given cisplatin 🧪 for cancer.', source: 'ward', latencyBudgetMs: 80, patientId: 'p-7', metadata: { k: 'v' } };

test('NoteDecoder reads a writer that added a field, and an older writer without optional fields, through the registry', async () => {
  const registry = await startTestRegistry();
  try {
    const client = new SchemaRegistryClient({ url: registry.url, timeoutMs: 2000 });
    const decoder = new NoteDecoder({ format: 'avro', maxNoteBytes: 10_000, avroWireFormat: 'confluent' }, client);
    assert.equal(decoder.resolvesWriterSchemas, true);
    const evolved = avro.Type.forSchema(JSON.parse(evolvedWriterSchema()) as avro.Schema);
    const evolvedId = registry.register('notes-value', evolvedWriterSchema());
    const body = evolved.toBuffer({
      note_id: note.noteId,
      text: note.text,
      source: note.source,
      latency_budget_ms: note.latencyBudgetMs,
      patient_id: note.patientId,
      metadata: note.metadata,
      encounter_id: 'E-1',
    });
    assert.deepEqual(await decoder.decode(frameConfluent(evolvedId, body)), note);
    // The router's own schema would not read it: the added field is trailing data to it.
    assert.throws(() => avroType('clinical-note').fromBuffer(body));
    // An old writer that knew only note_id and text.
    const old = {
      type: 'record',
      name: 'ClinicalNote',
      namespace: 'io.bioner.router',
      fields: [
        { name: 'note_id', type: 'string' },
        { name: 'text', type: 'string' },
      ],
    };
    const oldId = registry.register('notes-value', JSON.stringify(old));
    const decoded = await decoder.decode(frameConfluent(oldId, avro.Type.forSchema(old as avro.Schema).toBuffer({ note_id: 'n-2', text: 'aspirin' })));
    assert.deepEqual(decoded, { noteId: 'n-2', text: 'aspirin', source: null, latencyBudgetMs: null, patientId: null, metadata: null });
    // Many records, one request per id.
    for (let i = 0; i < 5; i++) await decoder.decode(frameConfluent(evolvedId, body));
    assert.equal(registry.requests.filter((r) => r.path === `/schemas/ids/${evolvedId}`).length, 1);
  } finally {
    await registry.close();
  }
});

test('NoteDecoder failures: unknown id, incompatible or non-Avro writers, bad bytes; size and header are checked before any request', async () => {
  const registry = await startTestRegistry();
  try {
    const client = new SchemaRegistryClient({ url: registry.url, timeoutMs: 2000 });
    const decoder = new NoteDecoder({ format: 'avro', maxNoteBytes: 200, avroWireFormat: 'confluent' }, client);
    const body = encodeNote(note, 'avro');
    await rejectsWithCode(decoder.decode(frameConfluent(999, body)), 'SCHEMA_NOT_FOUND', false);
    const renamed = registry.register(
      'x-value',
      JSON.stringify({
        type: 'record',
        name: 'Other',
        fields: [
          { name: 'note_id', type: 'string' },
          { name: 'text', type: 'string' },
        ],
      }),
    );
    assert.match(
      (await rejectsWithCode(decoder.decode(frameConfluent(renamed, body)), 'SCHEMA_INCOMPATIBLE', false)).message,
      /cannot be read as io.bioner.router.ClinicalNote/,
    );
    const noText = registry.register(
      'x-value',
      JSON.stringify({ type: 'record', name: 'ClinicalNote', namespace: 'io.bioner.router', fields: [{ name: 'note_id', type: 'string' }] }),
    );
    await rejectsWithCode(decoder.decode(frameConfluent(noText, body)), 'SCHEMA_INCOMPATIBLE', false);
    const json = registry.register('x-value', JSON.stringify({ type: 'object' }), 'JSON');
    assert.match((await rejectsWithCode(decoder.decode(frameConfluent(json, body)), 'SCHEMA_INCOMPATIBLE', false)).message, /JSON schema, not Avro/);
    const before = registry.requests.length;
    await rejectsWithCode(decoder.decode(frameConfluent(json, body)), 'SCHEMA_INCOMPATIBLE', false);
    assert.equal(registry.requests.length, before, 'an unusable writer is remembered: ids never change');
    const good = registry.register('notes-value', clinicalNoteSchema);
    await rejectsWithCode(decoder.decode(frameConfluent(good, body.subarray(0, body.length - 2))), 'DECODE_FAILED', false);
    const bad = Buffer.from(body);
    bad[bad.indexOf(Buffer.from('cisplatin'))] = 0xff;
    await rejectsWithCode(decoder.decode(frameConfluent(good, bad)), 'INVALID_UTF8', false);
    const counted = registry.requests.length;
    await rejectsWithCode(decoder.decode(frameConfluent(good, Buffer.alloc(300, 1))), 'NOTE_TOO_LARGE', false);
    await rejectsWithCode(decoder.decode(body), 'DECODE_FAILED', false);
    await rejectsWithCode(decoder.decode(Buffer.alloc(0)), 'DECODE_FAILED', false);
    assert.equal(registry.requests.length, counted, 'no request for records refused before the header');
    registry.setFault('unavailable');
    await rejectsWithCode(decoder.decode(frameConfluent(good + 1000, body)), 'SCHEMA_REGISTRY_UNAVAILABLE', true);
  } finally {
    await registry.close();
  }
});

test('without a registry, confluent input keeps the old behaviour: header stripped, body read with the router schema', async () => {
  const decoder = new NoteDecoder({ format: 'avro', maxNoteBytes: 10_000, avroWireFormat: 'confluent' });
  assert.equal(decoder.resolvesWriterSchemas, false);
  assert.deepEqual(await decoder.decode(frameConfluent(7, encodeNote(note, 'avro'))), note);
});
