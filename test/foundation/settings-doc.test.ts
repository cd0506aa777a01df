import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { configSchema, profileSchema } from '../../src/config/schema.ts';
import { settingRows, settingsMarkdown } from '../../src/config/settings-doc.ts';

describe('docs/settings.md', () => {
  it('describes every setting of the schema', () => {
    const undocumented = [...settingRows(configSchema), ...settingRows(profileSchema, 'profile')]
      .filter((r) => !r.description)
      .map((r) => r.path);
    expect(undocumented, 'add .describe(…) to these settings in src/config/schema.ts').toEqual([]);
  });

  it('is what the schema generates (run `npm run docs:settings` after changing a setting)', () => {
    expect(readFileSync('docs/settings.md', 'utf8')).toBe(settingsMarkdown());
  });

  it('lists defaults as the loader applies them', () => {
    const rows = new Map(settingRows(configSchema).map((r) => [r.path, r]));
    expect(rows.get('http.listen')).toMatchObject({ type: 'string', default: '`127.0.0.1:8080`' });
    expect(rows.get('validation.httpPort')).toMatchObject({ type: 'integer (1–65535)', default: '`80`' });
    expect(rows.get('acme.nonceLifetime')).toMatchObject({ type: 'duration', default: '`30m`' });
  });
});
