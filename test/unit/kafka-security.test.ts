import assert from 'node:assert/strict';
import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createServer, type TLSSocket } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { applyEnvironment, environmentOverrides, validateConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { createKafka } from '../../src/ingest/kafka.js';
import { kafkaSecurityOptions } from '../../src/ingest/kafka-security.js';
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
    kafka: { tls: { enabled: true, caFile: f['ca.crt'], certFile: f['tls.crt'], keyFile: f['tls.key'], rejectUnauthorized: false, servername: 'kafka.internal' } },
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
  expectField(() => validateConfig({ kafka: { tls: { enabled: false, certFile: f['tls.crt'], keyFile: f['tls.key'] } } }), 'kafka.tls.certFile', /enabled is false/);
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
  await expectFieldAsync(kafkaSecurityOptions(validateConfig({ kafka: { tls: { enabled: true, certFile: f.cert, keyFile: missing } } }).kafka), 'kafka.tls.keyFile');
  if (process.getuid?.() !== 0) {
    await chmod(f.secret, 0o000);
    await expectFieldAsync(kafkaSecurityOptions(sasl(f.u, f.secret)), 'kafka.sasl.passwordFile', ['TOP-SECRET']);
  }
});

test('createKafka refuses a TLS/SASL config whose options were not resolved (no silent plain-text fallback)', async () => {
  const f = await tempFiles({ u: 'u', p: 'p' });
  expectField(() => createKafka(validateConfig({ kafka: { tls: { enabled: true } } }).kafka, silent), 'kafka.tls.enabled');
  expectField(() => createKafka(validateConfig({ kafka: { sasl: { mechanism: 'scram-sha-256', usernameFile: f.u, passwordFile: f.p } } }).kafka, silent), 'kafka.sasl');
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
    applyEnvironment({}, {
      BIONER_KAFKA_TLS_ENABLED: 'true',
      BIONER_KAFKA_TLS_CA_FILE: f['ca.crt'],
      BIONER_KAFKA_TLS_REJECT_UNAUTHORIZED: 'false',
      BIONER_KAFKA_SASL_MECHANISM: 'plain',
      BIONER_KAFKA_SASL_USERNAME_FILE: f.u,
      BIONER_KAFKA_SASL_PASSWORD_FILE: f.p,
    }),
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
    secure.push({ servername: (socket as TLSSocket & { servername?: string | false }).servername, authorized: socket.authorized, clientCN: typeof cn === 'string' ? cn : undefined });
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
      kafka: { ...base, brokers: [`127.0.0.1:${port}`], tls: { enabled: true, caFile: f['ca.crt'], certFile: f['tls.crt'], keyFile: f['tls.key'], servername: 'kafka.test' } },
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
