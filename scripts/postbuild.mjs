// tsc keeps file modes; the bin entry must be executable after every build.
import { chmodSync } from 'node:fs';
chmodSync(new URL('../dist/cli/main.js', import.meta.url), 0o755);
