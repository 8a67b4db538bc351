import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { validateConfig } from '../../src/config/load.js';

/**
 * No Docker engine exists where this project is developed, so the image is
 * checked statically: the Dockerfile is parsed and held against the repository.
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (p: string): string => readFileSync(join(root, p), 'utf8');

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  image: string;
  name: string | undefined;
  instructions: Instruction[];
}

function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue; // comment inside a continued instruction
    if (line.endsWith('\\')) {
      current += line.slice(0, -1) + ' ';
      continue;
    }
    logical.push((current + line).trim());
    current = '';
  }
  if (current.trim() !== '') logical.push(current.trim());
  const stages: Stage[] = [];
  for (const line of logical) {
    const m = /^(\S+)\s*(.*)$/.exec(line);
    assert.ok(m, `unparsable line: ${line}`);
    const op = m[1].toUpperCase();
    const args = m[2];
    if (op === 'FROM') {
      const f = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      assert.ok(f, `bad FROM: ${args}`);
      stages.push({ image: f[1], name: f[2], instructions: [] });
    } else {
      assert.ok(stages.length > 0, `${op} before the first FROM`);
      stages[stages.length - 1].instructions.push({ op, args });
    }
  }
  return stages;
}

interface Copy {
  from: string | undefined;
  sources: string[];
  dest: string;
}
function copies(stage: Stage): Copy[] {
  return stage.instructions
    .filter((i) => i.op === 'COPY')
    .map((i) => {
      const words = i.args.split(/\s+/);
      const flags = words.filter((w) => w.startsWith('--'));
      const paths = words.filter((w) => !w.startsWith('--'));
      const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
      return { from, sources: paths.slice(0, -1), dest: paths[paths.length - 1] };
    });
}

function jsonForm(stage: Stage, op: string): string[] {
  const found = stage.instructions.filter((i) => i.op === op);
  assert.equal(found.length, 1, `exactly one ${op} in the runtime stage`);
  const parsed: unknown = JSON.parse(found[0].args);
  assert.ok(Array.isArray(parsed) && parsed.every((s) => typeof s === 'string'), `${op} uses the JSON (exec) form`);
  return parsed as string[];
}

/** .dockerignore semantics that this repository uses: path prefixes, `*` globs, `!` exceptions, last match wins. */
function dockerIgnored(path: string): boolean {
  const patterns = read('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  let ignored = false;
  for (const p of patterns) {
    const negate = p.startsWith('!');
    const pattern = posix.normalize(negate ? p.slice(1) : p).replace(/^\//, '');
    const re = new RegExp(
      '^' +
        pattern
          .split('*')
          .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
          .join('[^/]*') +
        '(/.*)?$',
    );
    if (re.test(path)) ignored = !negate;
  }
  return ignored;
}

const stages = parseDockerfile(read('Dockerfile'));
const build = stages[0];
const runtime = stages[stages.length - 1];
const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string>; main: string };

test('two stages on the Node LTS that package.json pins (node:24-bookworm-slim); the runtime stage copies from the build stage', () => {
  assert.equal(stages.length, 2);
  const manifest = JSON.parse(read('package.json')) as { engines: { node: string }; devDependencies: Record<string, string> };
  const major = /^(\d+)\./.exec(manifest.devDependencies.node)?.[1];
  assert.equal(manifest.engines.node, `>=${major}`, 'engines and the pinned node package agree');
  for (const s of stages) assert.equal(s.image, `node:${major}-bookworm-slim`);
  assert.ok(build.name !== undefined, 'the build stage is named');
  assert.ok(
    copies(runtime).some((c) => c.from === build.name),
    'runtime copies from the build stage',
  );
});

test('build stage: npm ci with .npmrc (onnxruntime-node-install=skip), npm run build, npm prune --omit=dev', () => {
  const runs = build.instructions.filter((i) => i.op === 'RUN').map((i) => i.args);
  const all = build.instructions.map((i) => `${i.op} ${i.args}`);
  const ci = all.findIndex((l) => /^RUN .*\bnpm ci\b/.test(l));
  const npmrc = all.findIndex((l) => /^COPY .*\.npmrc/.test(l));
  assert.ok(ci >= 0, 'npm ci');
  assert.ok(npmrc >= 0 && npmrc < ci, '.npmrc is copied before npm ci');
  assert.match(read('.npmrc'), /^onnxruntime-node-install=skip$/m);
  const buildIdx = all.findIndex((l) => /^RUN .*\bnpm run build\b/.test(l));
  const pruneIdx = all.findIndex((l) => /^RUN .*\bnpm prune --omit=dev\b/.test(l));
  assert.ok(buildIdx > ci && pruneIdx >= buildIdx, 'build after ci, prune after build');
  assert.ok(runs.length > 0);
  // Every file the build script reads is copied into the build stage.
  const sources = copies(build).flatMap((c) => c.sources);
  for (const needed of ['package.json', 'package-lock.json', '.npmrc', 'tsconfig.json', 'src', 'scripts/postbuild.mjs']) {
    assert.ok(sources.includes(needed), `build stage copies ${needed}`);
  }
});

test('every COPY source from the build context exists in the repository and is not excluded by .dockerignore', () => {
  for (const stage of stages) {
    for (const c of copies(stage).filter((x) => x.from === undefined)) {
      for (const src of c.sources) {
        assert.ok(existsSync(join(root, src)), `${src} exists`);
        assert.equal(dockerIgnored(src), false, `${src} is not excluded by .dockerignore`);
      }
    }
  }
});

test('runtime COPY --from=build sources are build-stage outputs', () => {
  const workdirs = build.instructions.filter((i) => i.op === 'WORKDIR').map((i) => i.args);
  assert.equal(workdirs.length, 1);
  const buildRoot = workdirs[0].replace(/\/$/, '');
  // A destination ending in / (or several sources) is a directory: each source keeps its base name there.
  const copiedIntoBuild = new Set(
    copies(build).flatMap((c) =>
      c.sources.map((src) =>
        c.dest.endsWith('/') || c.sources.length > 1 ? posix.join(buildRoot, c.dest, posix.basename(src)) : posix.join(buildRoot, c.dest),
      ),
    ),
  );
  const fromBuild = copies(runtime).filter((c) => c.from === build.name);
  const outputs = new Set<string>();
  for (const c of fromBuild) {
    for (const src of c.sources) {
      assert.ok(src.startsWith(buildRoot + '/'), `${src} lies under the build WORKDIR ${buildRoot}`);
      const rel = src.slice(buildRoot.length + 1);
      outputs.add(rel);
      if (rel === 'node_modules') continue; // made by npm ci, pruned by npm prune
      if (rel === 'dist') {
        // made by `npm run build` (tsc outDir); checked against a local build when one exists.
        const tsconfig = JSON.parse(read('tsconfig.json')) as { compilerOptions: { outDir: string } };
        assert.equal(tsconfig.compilerOptions.outDir, 'dist');
        for (const target of [...Object.values(pkg.bin), pkg.main]) assert.ok(target.startsWith('dist/'), `${target} lies in dist`);
        if (existsSync(join(root, 'dist'))) assert.ok(existsSync(join(root, 'dist/cli/main.js')), 'npm run build wrote dist/cli/main.js');
        continue;
      }
      assert.ok(copiedIntoBuild.has(posix.join(buildRoot, rel)), `${rel} was copied into the build stage`);
    }
  }
  for (const needed of ['dist', 'node_modules', 'package.json']) assert.ok(outputs.has(needed), `runtime gets ${needed} from the build stage`);
});

test('runtime: tini as PID 1, entrypoint is the package bin, non-root numeric user, production env, port', () => {
  const apt = runtime.instructions
    .filter((i) => i.op === 'RUN')
    .map((i) => i.args)
    .join(' && ');
  assert.match(apt, /apt-get install -y --no-install-recommends tini/);
  assert.match(apt, /rm -rf \/var\/lib\/apt\/lists/);

  const workdir = runtime.instructions.filter((i) => i.op === 'WORKDIR').map((i) => i.args);
  assert.deepEqual(workdir, ['/app']);
  const entrypoint = jsonForm(runtime, 'ENTRYPOINT');
  assert.deepEqual(entrypoint.slice(0, 3), ['/usr/bin/tini', '--', 'node']);
  assert.equal(entrypoint.length, 4);
  assert.equal(entrypoint[3], posix.join('/app', pkg.bin['bioner-router']), 'the entrypoint script is package.json bin');
  assert.deepEqual(jsonForm(runtime, 'CMD'), ['run', '--config', '/etc/bioner-router/config.yaml']);

  const users = runtime.instructions.filter((i) => i.op === 'USER').map((i) => i.args);
  assert.equal(users.length, 1);
  const m = /^(\d+)(?::(\d+))?$/.exec(users[0]);
  assert.ok(m, `USER is numeric (Kubernetes runAsNonRoot can verify it): ${users[0]}`);
  assert.notEqual(Number(m[1]), 0, 'USER is not root');
  if (m[2] !== undefined) assert.notEqual(Number(m[2]), 0, 'group is not root');
  // The user switch comes after every RUN (apt needs root) and before the entrypoint.
  const ops = runtime.instructions.map((i) => i.op);
  assert.ok(ops.lastIndexOf('RUN') < ops.indexOf('USER'));

  const env = runtime.instructions.filter((i) => i.op === 'ENV').map((i) => i.args);
  assert.ok(env.includes('NODE_ENV=production'));
  const exposed = runtime.instructions.filter((i) => i.op === 'EXPOSE').map((i) => i.args);
  assert.deepEqual(exposed, [String(validateConfig({}).telemetry.port)]);
});

test('runtime copies schemas and the model bundles that exist, including every default the config points at', () => {
  const ctx = copies(runtime).filter((c) => c.from === undefined);
  const sources = ctx.flatMap((c) => c.sources);
  assert.ok(sources.includes('schemas'));
  for (const c of ctx) {
    for (const src of c.sources) {
      assert.equal(c.dest, './' + src, `${src} keeps its repository path under /app (models resolve against the package root)`);
    }
  }
  const models = sources.filter((s) => s.startsWith('models/'));
  for (const m of models) assert.ok(existsSync(join(root, m)), `${m} exists`);
  const bundles = readdirSync(join(root, 'models')).filter((d) => /-(encoder|generative)$/.test(d) && statSync(join(root, 'models', d)).isDirectory());
  assert.ok(bundles.length > 0);
  for (const b of bundles) {
    assert.ok(models.includes(`models/${b}`), `models/${b} is copied`);
    for (const f of ['config.json', 'tokenizer.json', 'model.onnx']) assert.ok(existsSync(join(root, 'models', b, f)), `models/${b}/${f} exists`);
  }
  assert.ok(models.includes('models/calibration.json'));
  assert.ok(models.includes('models/length-estimator'));
  assert.ok(!models.some((m) => m.startsWith('models/frontier')), 'evaluation plots stay out of the image');
  const d = validateConfig({});
  for (const path of [d.encoder.modelDir, d.llm.modelDir, d.routing.calibrationFile, `models/length-estimator/${d.routing.domain}.json`]) {
    assert.ok(
      models.some((m) => path === m || path.startsWith(m + '/')),
      `default ${path} is in the image`,
    );
  }
});

test('.dockerignore keeps node_modules, .git, dist and test data out of the build context', () => {
  for (const p of ['node_modules', 'node_modules/kafkajs/package.json', '.git', 'dist', 'test', 'training', 'debug.log', 'scripts/mock-kafka']) {
    assert.equal(dockerIgnored(p), true, `${p} is excluded`);
  }
  for (const p of ['src/cli/main.ts', 'package.json', 'package-lock.json', '.npmrc', 'scripts/postbuild.mjs', 'schemas', 'models/bc5cdr-encoder/model.onnx']) {
    assert.equal(dockerIgnored(p), false, `${p} stays in the context`);
  }
});

test('the build stage keeps only the target platform of the onnxruntime-node binaries (run on a copy of the layout)', () => {
  const prune = build.instructions.find((i) => i.op === 'RUN' && i.args.includes('onnxruntime-node/bin'));
  assert.ok(prune !== undefined, 'a RUN step prunes onnxruntime-node/bin');
  const arg = build.instructions.find((i) => i.op === 'ARG' && i.args.startsWith('TARGETARCH'));
  assert.ok(arg !== undefined, 'TARGETARCH is declared in the build stage');
  for (const [targetArch, kept] of [
    ['amd64', 'x64'],
    ['arm64', 'arm64'],
  ] as const) {
    const dir = mkdtempSync(join(tmpdir(), 'bioner-ort-'));
    const ort = join(dir, 'node_modules/onnxruntime-node/bin/napi-v6');
    for (const p of ['darwin/arm64', 'darwin/x64', 'win32/x64', 'win32/arm64', 'linux/x64', 'linux/arm64']) {
      mkdirSync(join(ort, p), { recursive: true });
      writeFileSync(join(ort, p, 'onnxruntime_binding.node'), '');
    }
    execFileSync('sh', ['-ec', prune.args.replace(/^RUN\s+/, '')], { cwd: dir, env: { ...process.env, TARGETARCH: targetArch } });
    assert.deepEqual(readdirSync(ort), ['linux'], `${targetArch}: other operating systems removed`);
    assert.deepEqual(readdirSync(join(ort, 'linux')), [kept], `${targetArch}: only linux/${kept} kept`);
  }
});
