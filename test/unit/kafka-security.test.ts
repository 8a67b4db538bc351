import assert from 'node:assert/strict';
import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createServer, type TLSSocket } from 'node:tls';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { applyEnvironment, environmentOverrides, validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { createKafka } from '../../src/kafka/index.js';
import { kafkaSecurityOptions } from '../../src/kafka/security.js';
import { createLogger } from '../../src/telemetry/logger.js';

const silent = createLogger('silent');

// Throw-away test PKI (P-256, valid 100 years, generated with openssl for this test only): a CA, a server
// certificate for DNS:kafka.test and a client certificate, all signed by the CA. Never used outside tests.
const CA_CRT = `-----BEGIN CERTIFICATE-----
MIIBiTCCAS+gAwIBAgIUPOhe1LBIpWi96Q/ObUeMr/FHzM8wCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOYmlvbmVyLXRlc3QtY2EwIBcNMjYxMTI1MDcxNjA1WhgPMjEy
NjExMDEwNzE2MDVaMBkxFzAVBgNVBAMMDmJpb25lci10ZXN0LWNhMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEbmRmf4gCsaOrHOHisD03kELSrVj6mRwxAnMNP3+W
g33jZ0Da95gDrT4PqOTmUdCko3JvKsFv+orQkIJMgVd0VqNTMFEwHQYDVR0OBBYE
FDJHQ4cK1kIDR/rvplRjsVd7epXRMB8GA1UdIwQYMBaAFDJHQ4cK1kIDR/rvplRj
sVd7epXRMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAIMcgGJv
e2snp47OT2V6NJRsYlrBOc6e/fHRWAQHU1jlAiAHkxatvh0dU0FAtokrm7ILbJ+f
X3dQxaopeyC2cY4p3w==
-----END CERTIFICATE-----
`;
const SERVER_CRT = `-----BEGIN CERTIFICATE-----
MIIBjDCCATGgAwIBAgIUd5C34e/o9IyFY2oTrFwyIO4dj1cwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOYmlvbmVyLXRlc3QtY2EwIBcNMjYxMTI1MDcxNjA1WhgPMjEy
NjExMDEwNzE2MDVaMBUxEzARBgNVBAMMCmthZmthLnRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAATYzv6EZA0KU4pJhIczsmHeub2pOQY7+/HqYFmuriCCw56/
H+gVs2eltJ52+JEc1rKK6DTdmJAMIA9Al0sjSO+go1kwVzAVBgNVHREEDjAMggpr
YWZrYS50ZXN0MB0GA1UdDgQWBBRaM4Uj+8Qg+RdutdAYZWVaMBeUmjAfBgNVHSME
GDAWgBQyR0OHCtZCA0f676ZUY7FXe3qV0TAKBggqhkjOPQQDAgNJADBGAiEA1HDN
ihkMn8gVGXFKAdRdnxwvV/Ke8tpNj2EiMdEg3EoCIQC2AHtphmQAGt0HfF+c2AlY
RFT5SgW+NQh3/pyHzLbv3w==
-----END CERTIFICATE-----
`;
const SERVER_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgvlIdIjXHKQHZsulF
4tYDn5iYmwHVMCcmU/TgwxDH92ShRANCAATYzv6EZA0KU4pJhIczsmHeub2pOQY7
+/HqYFmuriCCw56/H+gVs2eltJ52+JEc1rKK6DTdmJAMIA9Al0sjSO+g
-----END PRIVATE KEY-----
`;
const CLIENT_CRT = `-----BEGIN CERTIFICATE-----
MIIBNDCB2wIUd5C34e/o9IyFY2oTrFwyIO4dj1gwCgYIKoZIzj0EAwIwGTEXMBUG
A1UEAwwOYmlvbmVyLXRlc3QtY2EwIBcNMjYxMTI1MDcxNjA1WhgPMjEyNjExMDEw
NzE2MDVaMB8xHTAbBgNVBAMMFGJpb25lci1yb3V0ZXItY2xpZW50MFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEFBwFxpYZ+gg9pVNqACUlU5g+JCTdmRCP6b25yOyr
+0UDx49cIxmYEgjkq+jrIDqF8JX9BZ9QoQyGcIrqYH3qgTAKBggqhkjOPQQDAgNI
ADBFAiEAguREKjMFUO5LrbNSplg33dART0pUNERIT9gSJkVQsVsCIF6HF+tiMAJr
VN3sisTFMmo7Ul0s3BVe8kmL+b3kE2Fl
-----END CERTIFICATE-----
`;
const CLIENT_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghoqNi96QS3LT8VUY
diLi7dJX6M2G3OUZRnoHxY11BoChRANCAAQUHAXGlhn6CD2lU2oAJSVTmD4kJN2Z
EI/pvbnI7Kv7RQPHj1wjGZgSCOSr6OsgOoXwlf0Fn1ChDIZwiupgfeqB
-----END PRIVATE KEY-----
`;

async function tempFiles(files: Record<string, string>): Promise<Record<string, string>> {
  const dir = await mkdtemp(join(tmpdir(), 'bioner-kafka-sec-'));
  const paths: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    paths[name] = join(dir, name);
    await writeFile(paths[name], content);
  }
  return paths;
}

function expectField(fn: () => unknown, field: string, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.field, field);
    assert.ok(err.message.includes(field), `message names the field: ${err.message}`);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

async function expectFieldAsync(p: Promise<unknown>, field: string, forbidden: string[] = []): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.field, field);
    assert.ok(err.message.includes(field), `message names the field: ${err.message}`);
    for (const secret of forbidden) assert.ok(!err.message.includes(secret), 'message must not quote file contents');
    return true;
  });
}

test('defaults: TLS off, no SASL, no ssl/sasl client options (the embedded mock broker has neither)', async () => {
  const c = validateConfig({});
  assert.equal(c.kafka.tls.enabled, false);
  assert.equal(c.kafka.tls.rejectUnauthorized, true);
  assert.equal(c.kafka.sasl, undefined);
  const opts = await kafkaSecurityOptions(c.kafka);
  assert.deepEqual(opts, {});
  assert.equal('ssl' in opts, false);
  assert.equal('sasl' in opts, false);
  createKafka(c.kafka, silent, opts); // builds without security
  createKafka(c.kafka, silent); // and without the argument
});

test('tls.enabled alone gives ssl: true (Node CAs, full verification)', async () => {
  const c = validateConfig({ kafka: { tls: { enabled: true } } });
  assert.deepEqual(await kafkaSecurityOptions(c.kafka), { ssl: true });
});

test('TLS files map to ssl { ca, cert, key, rejectUnauthorized, servername } with the file contents', async () => {
  const f = await tempFiles({ 'ca.crt': 'CA-PEM\n', 'tls.crt': 'CERT-PEM\n', 'tls.key': 'KEY-PEM\n' });
  const c = validateConfig({
    kafka: {
      tls: { enabled: true, caFile: f['ca.crt'], certFile: f['tls.crt'], keyFile: f['tls.key'], rejectUnauthorized: false, servername: 'kafka.internal' },
    },
  });
  const opts = await kafkaSecurityOptions(c.kafka);
  assert.ok(opts.ssl !== undefined && opts.ssl !== true);
  assert.equal(String(opts.ssl.ca), 'CA-PEM\n');
  assert.equal(String(opts.ssl.cert), 'CERT-PEM\n');
  assert.equal(String(opts.ssl.key), 'KEY-PEM\n');
  assert.equal(opts.ssl.rejectUnauthorized, false);
  assert.equal(opts.ssl.servername, 'kafka.internal');
  assert.equal(opts.sasl, undefined);

  const caOnly = await kafkaSecurityOptions(validateConfig({ kafka: { tls: { enabled: true, caFile: f['ca.crt'] } } }).kafka);
  assert.ok(caOnly.ssl !== undefined && caOnly.ssl !== true);
  assert.deepEqual(Object.keys(caOnly.ssl).sort(), ['ca', 'rejectUnauthorized']);
  assert.equal(caOnly.ssl.rejectUnauthorized, true);
  createKafka(c.kafka, silent, opts);
});

for (const mechanism of ['scram-sha-256', 'scram-sha-512', 'plain'] as const) {
  test(`SASL ${mechanism} maps to sasl { mechanism, username, password }, one trailing newline trimmed`, async () => {
    const f = await tempFiles({ username: 'router-user\n', password: ' p@ss word \r\n' });
    const c = validateConfig({ kafka: { tls: { enabled: mechanism === 'plain' }, sasl: { mechanism, usernameFile: f.username, passwordFile: f.password } } });
    const opts = await kafkaSecurityOptions(c.kafka);
    assert.deepEqual(opts.sasl, { mechanism, username: 'router-user', password: ' p@ss word ' });
    assert.equal(opts.ssl, mechanism === 'plain' ? true : undefined);
    createKafka(c.kafka, silent, opts);
  });
}

test('cross-field rules name the field', async () => {
  const f = await tempFiles({ 'tls.crt': 'C', 'tls.key': 'K', 'ca.crt': 'A', u: 'u', p: 'p' });
  expectField(() => validateConfig({ kafka: { tls: { enabled: true, certFile: f['tls.crt'] } } }), 'kafka.tls.keyFile', /certFile/);
  expectField(() => validateConfig({ kafka: { tls: { enabled: true, keyFile: f['tls.key'] } } }), 'kafka.tls.certFile', /keyFile/);
  expectField(() => validateConfig({ kafka: { tls: { caFile: f['ca.crt'] } } }), 'kafka.tls.caFile', /enabled is false/);
  expectField(
    () => validateConfig({ kafka: { tls: { enabled: false, certFile: f['tls.crt'], keyFile: f['tls.key'] } } }),
    'kafka.tls.certFile',
    /enabled is false/,
  );
  expectField(() => validateConfig({ kafka: { tls: { servername: 'x' } } }), 'kafka.tls.servername', /enabled is false/);
  expectField(() => validateConfig({ kafka: { sasl: { mechanism: 'plain', usernameFile: f.u, passwordFile: f.p } } }), 'kafka.sasl.mechanism', /clear text/);
  // Schema-level: the enum, required files and unknown keys.
  expectField(() => validateConfig({ kafka: { sasl: { mechanism: 'gssapi', usernameFile: f.u, passwordFile: f.p } } }), 'kafka.sasl.mechanism');
  expectField(() => validateConfig({ kafka: { sasl: { mechanism: 'scram-sha-512', usernameFile: f.u } } }), 'kafka.sasl.passwordFile');
  expectField(() => validateConfig({ kafka: { tls: { enabled: true, password: 'x' } } }), 'kafka.tls.password', /unknown option/);
  // SCRAM without TLS is allowed (the password never crosses the wire).
  validateConfig({ kafka: { sasl: { mechanism: 'scram-sha-256', usernameFile: f.u, passwordFile: f.p } } });
});

test('a missing, unreadable or empty file is a ConfigError naming the field, without the file contents', async () => {
  const f = await tempFiles({ u: 'router-user\n', secret: 'TOP-SECRET-PASSWORD\n', empty: '\n', key: 'KEY', cert: 'CERT' });
  const missing = join(tmpdir(), 'bioner-no-such-dir', 'nothing');
  const sasl = (usernameFile: string, passwordFile: string) =>
    validateConfig({ kafka: { sasl: { mechanism: 'scram-sha-512', usernameFile, passwordFile } } }).kafka;
  await expectFieldAsync(kafkaSecurityOptions(sasl(missing, f.secret)), 'kafka.sasl.usernameFile');
  await expectFieldAsync(kafkaSecurityOptions(sasl(f.u, missing)), 'kafka.sasl.passwordFile', ['TOP-SECRET', 'router-user']);
  await expectFieldAsync(kafkaSecurityOptions(sasl(f.u, f.empty)), 'kafka.sasl.passwordFile');
  await expectFieldAsync(kafkaSecurityOptions(validateConfig({ kafka: { tls: { enabled: true, caFile: missing } } }).kafka), 'kafka.tls.caFile');
  await expectFieldAsync(
    kafkaSecurityOptions(validateConfig({ kafka: { tls: { enabled: true, certFile: f.cert, keyFile: missing } } }).kafka),
    'kafka.tls.keyFile',
  );
  if (process.getuid?.() !== 0) {
    await chmod(f.secret, 0o000);
    await expectFieldAsync(kafkaSecurityOptions(sasl(f.u, f.secret)), 'kafka.sasl.passwordFile', ['TOP-SECRET']);
  }
});

test('createKafka refuses a TLS/SASL config whose options were not resolved (no silent plain-text fallback)', async () => {
  const f = await tempFiles({ u: 'u', p: 'p' });
  expectField(() => createKafka(validateConfig({ kafka: { tls: { enabled: true } } }).kafka, silent), 'kafka.tls.enabled');
  expectField(
    () => createKafka(validateConfig({ kafka: { sasl: { mechanism: 'scram-sha-256', usernameFile: f.u, passwordFile: f.p } } }).kafka, silent),
    'kafka.sasl',
  );
});

test('environment variables exist for every TLS/SASL key and build a valid config', async () => {
  const vars = new Map(environmentOverrides().map((o) => [o.variable, o.path.join('.')]));
  const expected: Record<string, string> = {
    BIONER_KAFKA_TLS_ENABLED: 'kafka.tls.enabled',
    BIONER_KAFKA_TLS_CA_FILE: 'kafka.tls.caFile',
    BIONER_KAFKA_TLS_CERT_FILE: 'kafka.tls.certFile',
    BIONER_KAFKA_TLS_KEY_FILE: 'kafka.tls.keyFile',
    BIONER_KAFKA_TLS_REJECT_UNAUTHORIZED: 'kafka.tls.rejectUnauthorized',
    BIONER_KAFKA_TLS_SERVERNAME: 'kafka.tls.servername',
    BIONER_KAFKA_SASL_MECHANISM: 'kafka.sasl.mechanism',
    BIONER_KAFKA_SASL_USERNAME_FILE: 'kafka.sasl.usernameFile',
    BIONER_KAFKA_SASL_PASSWORD_FILE: 'kafka.sasl.passwordFile',
  };
  for (const [variable, path] of Object.entries(expected)) assert.equal(vars.get(variable), path, variable);
  const f = await tempFiles({ 'ca.crt': 'CA', u: 'user\n', p: 'pw\n' });
  const c = validateConfig(
    applyEnvironment(
      {},
      {
        BIONER_KAFKA_TLS_ENABLED: 'true',
        BIONER_KAFKA_TLS_CA_FILE: f['ca.crt'],
        BIONER_KAFKA_TLS_REJECT_UNAUTHORIZED: 'false',
        BIONER_KAFKA_SASL_MECHANISM: 'plain',
        BIONER_KAFKA_SASL_USERNAME_FILE: f.u,
        BIONER_KAFKA_SASL_PASSWORD_FILE: f.p,
      },
    ),
  );
  const opts = await kafkaSecurityOptions(c.kafka);
  assert.deepEqual(opts.sasl, { mechanism: 'plain', username: 'user', password: 'pw' });
  assert.ok(opts.ssl !== undefined && opts.ssl !== true);
  assert.equal(String(opts.ssl.ca), 'CA');
  assert.equal(opts.ssl.rejectUnauthorized, false);
});

/**
 * Not a Kafka broker (the embedded mock has no TLS): a TLS server that records each handshake and closes,
 * to show kafkajs really uses the resolved ssl options (CA, servername, client certificate).
 */
interface Handshake {
  servername: string | false | undefined;
  authorized: boolean;
  clientCN: string | undefined;
}
async function tlsProbe(requestCert: boolean, run: (port: number) => Promise<void>): Promise<{ secure: Handshake[]; tcp: number }> {
  const secure: Handshake[] = [];
  let tcp = 0;
  const server = createServer({ key: SERVER_KEY, cert: SERVER_CRT, ca: CA_CRT, requestCert, rejectUnauthorized: requestCert }, (socket: TLSSocket) => {
    const peer = socket.getPeerCertificate();
    const cn = peer?.subject?.CN;
    secure.push({
      servername: (socket as TLSSocket & { servername?: string | false }).servername,
      authorized: socket.authorized,
      clientCN: typeof cn === 'string' ? cn : undefined,
    });
    socket.destroy();
  });
  server.on('connection', () => tcp++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await run((server.address() as AddressInfo).port);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
  return { secure, tcp };
}

async function connectOnce(kafka: ReturnType<typeof createKafka>): Promise<void> {
  const admin = kafka.admin();
  await assert.rejects(admin.connect()); // the probe closes after the handshake: no Kafka protocol behind it
  await admin.disconnect().catch(() => undefined);
}

test('kafkajs performs the TLS handshake with the resolved CA, servername and client certificate', async () => {
  const f = await tempFiles({ 'ca.crt': CA_CRT, 'tls.crt': CLIENT_CRT, 'tls.key': CLIENT_KEY });
  const base = { clientId: 'tls-probe', connectionTimeoutMs: 2000, requestTimeoutMs: 2000, retries: 0 };

  const ok = await tlsProbe(true, async (port) => {
    const c = validateConfig({
      kafka: {
        ...base,
        brokers: [`127.0.0.1:${port}`],
        tls: { enabled: true, caFile: f['ca.crt'], certFile: f['tls.crt'], keyFile: f['tls.key'], servername: 'kafka.test' },
      },
    });
    await connectOnce(createKafka(c.kafka, silent, await kafkaSecurityOptions(c.kafka)));
  });
  assert.ok(ok.secure.length >= 1, 'a TLS connection was established');
  const peer = ok.secure[0];
  assert.equal(peer.servername, 'kafka.test', 'SNI is tls.servername');
  assert.equal(peer.authorized, true, 'the client certificate was verified by the server');
  assert.equal(peer.clientCN, 'bioner-router-client');

  // Without the CA (Node's bundled CAs) the self-signed chain is refused: verification is on by default.
  const refused = await tlsProbe(false, async (port) => {
    const c = validateConfig({ kafka: { ...base, brokers: [`127.0.0.1:${port}`], tls: { enabled: true, servername: 'kafka.test' } } });
    await connectOnce(createKafka(c.kafka, silent, await kafkaSecurityOptions(c.kafka)));
  });
  assert.equal(refused.secure.length, 0, 'no TLS session without a trusted CA');
  assert.ok(refused.tcp >= 1, 'the client did connect; the certificate check stopped it');
});

/**
 * Not a Kafka broker either (the embedded mock has no SASL): a fake that speaks just enough of the protocol
 * (ApiVersions, SaslHandshake) to record what kafkajs sends after connecting, then closes at the first
 * request it does not answer. Proves the resolved sasl options reach the wire: mechanism, username, password.
 */
interface KafkaRequest {
  apiKey: number;
  body: Buffer;
}
const API = { Metadata: 3, SaslHandshake: 17, ApiVersions: 18, SaslAuthenticate: 36 } as const;

function kafkaString(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  const len = Buffer.alloc(2);
  len.writeInt16BE(b.length);
  return Buffer.concat([len, b]);
}
function readKafkaString(buf: Buffer, at = 0): string {
  return buf.subarray(at + 2, at + 2 + buf.readInt16BE(at)).toString('utf8');
}
function readKafkaBytes(buf: Buffer, at = 0): Buffer {
  return buf.subarray(at + 4, at + 4 + buf.readInt32BE(at));
}

function speakKafka(socket: Socket, requests: KafkaRequest[]): void {
  let pending = Buffer.alloc(0);
  const reply = (correlationId: number, body: Buffer): void => {
    const head = Buffer.alloc(8);
    head.writeInt32BE(4 + body.length, 0);
    head.writeInt32BE(correlationId, 4);
    socket.write(Buffer.concat([head, body]));
  };
  socket.on('error', () => undefined);
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 4 && pending.length >= 4 + pending.readInt32BE(0)) {
      const frame = pending.subarray(4, 4 + pending.readInt32BE(0));
      pending = pending.subarray(4 + frame.length);
      // Request header v1: api_key int16, api_version int16, correlation_id int32, client_id nullable string.
      const apiKey = frame.readInt16BE(0);
      const correlationId = frame.readInt32BE(4);
      const body = frame.subarray(10 + Math.max(0, frame.readInt16BE(8)));
      requests.push({ apiKey, body });
      if (apiKey === API.ApiVersions) {
        // error_code, [api_key min max], throttle_time_ms: enough for kafkajs to pick SaslHandshake v1 + SaslAuthenticate.
        const apis: Array<[number, number, number]> = [
          [API.ApiVersions, 0, 2],
          [API.Metadata, 0, 0],
          [API.SaslHandshake, 0, 1],
          [API.SaslAuthenticate, 0, 1],
        ];
        const b = Buffer.alloc(2 + 4 + apis.length * 6 + 4);
        b.writeInt32BE(apis.length, 2);
        apis.forEach(([k, min, max], i) => {
          b.writeInt16BE(k, 6 + i * 6);
          b.writeInt16BE(min, 8 + i * 6);
          b.writeInt16BE(max, 10 + i * 6);
        });
        reply(correlationId, b);
      } else if (apiKey === API.SaslHandshake) {
        // error_code 0, enabled_mechanisms = [the one asked for]
        const count = Buffer.alloc(6);
        count.writeInt32BE(1, 2);
        reply(correlationId, Buffer.concat([count, kafkaString(readKafkaString(body))]));
      } else {
        socket.destroy(); // recorded; the probe goes no further
        return;
      }
    }
  });
}

async function kafkaProbe(tlsOn: boolean, run: (port: number) => Promise<void>): Promise<KafkaRequest[]> {
  const requests: KafkaRequest[] = [];
  const sockets = new Set<Socket>();
  const server = tlsOn
    ? createServer({ key: SERVER_KEY, cert: SERVER_CRT }, (s: TLSSocket) => speakKafka(s, requests))
    : createNetServer((s: Socket) => speakKafka(s, requests));
  server.on('connection', (s: Socket) => sockets.add(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await run((server.address() as AddressInfo).port);
  } finally {
    for (const s of sockets) s.destroy(); // a failed assertion must not leave close() waiting on a live client
    await new Promise<void>((r) => server.close(() => r()));
  }
  return requests;
}

test('kafkajs sends the resolved SASL mechanism and credentials after ApiVersions (fake broker), none without SASL', async () => {
  const f = await tempFiles({ 'ca.crt': CA_CRT, username: 'router-user\n', password: ' p@ss word \r\n' });
  const base = { clientId: 'sasl-probe', connectionTimeoutMs: 2000, requestTimeoutMs: 2000, retries: 0 };
  const connectWith = (tlsOn: boolean, kafka: Record<string, unknown>): Promise<KafkaRequest[]> =>
    kafkaProbe(tlsOn, async (port) => {
      const c = validateConfig({ kafka: { ...base, brokers: [`127.0.0.1:${port}`], ...kafka } });
      const admin = createKafka(c.kafka, silent, await kafkaSecurityOptions(c.kafka)).admin();
      try {
        // Without SASL connect() ends after ApiVersions; listTopics() then asks for Metadata, which the fake drops.
        await assert.rejects(admin.connect().then(() => admin.listTopics()));
      } finally {
        await admin.disconnect().catch(() => undefined);
      }
    });

  // No SASL: ApiVersions, then straight to Metadata.
  const plain = await connectWith(false, {});
  assert.deepEqual(
    plain.slice(0, 2).map((r) => r.apiKey),
    [API.ApiVersions, API.Metadata],
  );
  assert.ok(!plain.some((r) => r.apiKey === API.SaslHandshake), 'no SaslHandshake without kafka.sasl');

  // SCRAM-SHA-512 (plaintext TCP is allowed for SCRAM): handshake names the mechanism, the client-first message the user.
  const scram = await connectWith(false, { sasl: { mechanism: 'scram-sha-512', usernameFile: f.username, passwordFile: f.password } });
  assert.deepEqual(
    scram.map((r) => r.apiKey),
    [API.ApiVersions, API.SaslHandshake, API.SaslAuthenticate],
  );
  assert.equal(readKafkaString(scram[1].body), 'SCRAM-SHA-512');
  assert.match(readKafkaBytes(scram[2].body).toString('utf8'), /^n,,n=router-user,r=\S+$/);

  // PLAIN needs TLS: over the test CA, the auth bytes carry the username and password read from the files.
  const plainSasl = await connectWith(true, {
    tls: { enabled: true, caFile: f['ca.crt'], servername: 'kafka.test' },
    sasl: { mechanism: 'plain', usernameFile: f.username, passwordFile: f.password },
  });
  assert.deepEqual(
    plainSasl.map((r) => r.apiKey),
    [API.ApiVersions, API.SaslHandshake, API.SaslAuthenticate],
  );
  assert.equal(readKafkaString(plainSasl[1].body), 'PLAIN');
  assert.equal(readKafkaBytes(plainSasl[2].body).toString('utf8'), '\0router-user\0 p@ss word ');
});
