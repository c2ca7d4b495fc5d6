// Build the map component into ONE self-contained ES module: assets/scatter/scatter.js (no CDN, no runtime
// network), and the standalone HTML map's script: assets/scatter/standalone.js. SOURCE_HASH next to them
// records the sha256 of the sources they were built from (tests/unit/test_scatter_bundle.py recomputes it and
// fails when the bundles are stale).
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', '..', 'assets', 'scatter');

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

// the files that decide the bundle, in a fixed order (the Python test lists them the same way)
export function sourceHash() {
  const files = ['package.json', 'package-lock.json', 'build.mjs', ...walk(join(here, 'src')).map((p) => relative(here, p))]
    .map((p) => p.split('\\').join('/'));
  const sorted = [...new Set(files)].sort();
  const h = createHash('sha256');
  for (const rel of sorted) {
    h.update(`${rel}\0`);
    h.update(readFileSync(join(here, rel)));
    h.update('\0');
  }
  return h.digest('hex');
}

mkdirSync(out, { recursive: true });
const result = await build({
  entryPoints: [join(here, 'src', 'index.js')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  legalComments: 'eof',
  outfile: join(out, 'scatter.js'),
  metafile: true,
  logLevel: 'warning',
});
// the standalone HTML map (core/export.py view_html) inlines the same map as one classic script (an IIFE that
// sets window.jointscopeMap), since a file:// page cannot import a module
const standalone = await build({
  entryPoints: [join(here, 'src', 'standalone.js')],
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2020'],
  minify: true,
  legalComments: 'eof',
  outfile: join(out, 'standalone.js'),
  metafile: true,
  logLevel: 'warning',
});
writeFileSync(join(out, 'SOURCE_HASH'), `${sourceHash()}\n`);
for (const [name, res] of [['scatter.js', result], ['standalone.js', standalone]]) {
  const bytes = statSync(join(out, name)).size;
  console.log(`assets/scatter/${name}: ${bytes} bytes from ${Object.keys(res.metafile.inputs).length} modules`);
}
