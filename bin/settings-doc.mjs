#!/usr/bin/env node
// Writes docs/settings.md from the configuration schema (npm run docs:settings).
import { writeFileSync } from 'node:fs';

import { build } from './build.mjs';

await build({ quiet: true });
const { settingsMarkdown } = await import('../dist/src/config/settings-doc.js');
writeFileSync(new URL('../docs/settings.md', import.meta.url), settingsMarkdown());
process.stdout.write('wrote docs/settings.md\n');
