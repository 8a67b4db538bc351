/**
 * A node:test reporter that ends the run with two short lists: the tests that
 * failed (name, file:line, first line of the error) and the tests that were
 * skipped, with why (most need ../shared/data beside the repository). It runs
 * beside the `spec` reporter, whose full failure details come above it.
 */
export default async function* summary(source) {
  const failed = [];
  const skipped = [];
  const path = []; // names of the enclosing suites, by nesting level
  for await (const event of source) {
    const data = event.data;
    if (event.type === 'test:start') path.splice(data.nesting, Infinity, data.name);
    if (event.type === 'test:fail' || event.type === 'test:pass') data.name = [...path.slice(0, data.nesting), data.name].join(' > ');
    if (event.type === 'test:fail' && data.details?.type !== 'suite') failed.push({ where: place(data), name: data.name, why: firstLine(data.details?.error) });
    else if (event.type === 'test:pass' && data.skip !== undefined)
      skipped.push({ where: place(data), name: data.name, why: data.skip === true ? '(no reason given)' : String(data.skip) });
  }
  let out = '\n';
  out +=
    failed.length === 0
      ? 'summary: no test failed\n'
      : `summary: ${failed.length} failed test(s)\n${failed.map((f) => `  FAIL ${f.name} (${f.where})\n       ${f.why}`).join('\n')}\n`;
  if (skipped.length > 0) {
    const reasons = new Map();
    for (const s of skipped) reasons.set(s.why, (reasons.get(s.why) ?? 0) + 1);
    out += `summary: ${skipped.length} skipped test(s): ${[...reasons].map(([why, n]) => `${n} x ${why}`).join('; ')}\n`;
    out += skipped.map((s) => `  SKIP ${s.name} (${s.where}): ${s.why}`).join('\n') + '\n';
  } else out += 'summary: no test skipped\n';
  yield out;
}

function place(data) {
  const file = typeof data.file === 'string' ? data.file.replace(/^.*?\/test\//, 'test/') : '?';
  return data.line === undefined ? file : `${file}:${data.line}`;
}

/** The assertion's own message (node:test wraps it in ERR_TEST_FAILURE), on one line. */
function firstLine(error) {
  const inner = error?.cause ?? error;
  const message = inner instanceof Error ? inner.message : String(inner ?? 'failed');
  return message.split('\n').find((l) => l.trim() !== '') ?? message;
}
