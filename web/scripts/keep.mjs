// Re-creates internal/web/dist/.gitkeep after `vite build` empties the directory, so that
// `//go:embed all:dist` keeps compiling on a fresh clone without a front-end build.
import { writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'internal', 'web', 'dist');
mkdirSync(dist, { recursive: true });
writeFileSync(join(dist, '.gitkeep'), '');
