import { z } from 'zod';

import { configSchema, profileSchema } from './schema.ts';

// Writes docs/settings.md from the zod schema itself (npm run docs:settings), so the page can't
// drift from what the loader accepts: test/foundation/settings-doc.test.ts fails when it is stale
// or when a setting has no description.

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, JsonSchema>;
  additionalProperties?: JsonSchema | boolean;
  items?: JsonSchema;
  oneOf?: JsonSchema[];
  anyOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
  format?: string;
}

export interface SettingRow {
  path: string;
  type: string;
  default: string;
  description: string | undefined;
}

const json = (schema: z.ZodType) =>
  z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as unknown as JsonSchema;

function typeOf(s: JsonSchema): string {
  if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``;
  if (s.enum) return s.enum.map((v) => `\`${String(v)}\``).join(' \\| ');
  const variants = s.oneOf ?? s.anyOf;
  if (variants) return variants.map(typeOf).join(' \\| ');
  if (s.type === 'array') return `list of ${s.items ? typeOf(s.items) : 'values'}`;
  if (s.type === 'object') {
    if (s.properties)
      return `{ ${Object.entries(s.properties)
        .map(([k, v]) => `${k}: ${typeOf(v)}`)
        .join(', ')} }`;
    return 'map';
  }
  const range = s.minimum !== undefined || s.maximum !== undefined ? ` (${s.minimum ?? ''}–${s.maximum ?? ''})` : '';
  const named = s.format === 'uri' ? 'URL' : s.format === 'duration' ? 'duration' : String(s.type ?? 'any');
  return `${named}${range}`;
}

function defaultOf(s: JsonSchema): string {
  if (s.default === undefined) return '';
  if (s.type === 'object' && s.properties && JSON.stringify(s.default) === '{}') return '';
  return `\`${typeof s.default === 'string' ? s.default : JSON.stringify(s.default)}\``;
}

/** Every leaf setting of a schema (objects with named properties are walked, not listed). */
export function settingRows(schema: z.ZodType, prefix = ''): SettingRow[] {
  const rows: SettingRow[] = [];
  const walk = (s: JsonSchema, path: string) => {
    if (s.type === 'object' && s.properties && !s.oneOf) {
      for (const [key, child] of Object.entries(s.properties)) walk(child, path ? `${path}.${key}` : key);
      return;
    }
    rows.push({ path, type: typeOf(s), default: defaultOf(s), description: s.description });
  };
  walk(json(schema), prefix);
  return rows;
}

const table = (rows: SettingRow[]) =>
  [
    '| Setting | Type | Default | What it does |',
    '| --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| \`${r.path}\` | ${r.type.replace(/\|(?!\|)/g, '\\|').replace(/\\\\\|/g, '\\|')} | ${r.default} | ${(r.description ?? '').replace(/</g, '&lt;').replace(/>/g, '&gt;')} |`,
    ),
  ].join('\n');

export function settingsMarkdown(): string {
  return `# Settings

<!-- Generated from src/config/schema.ts by \`npm run docs:settings\`; do not edit by hand. -->

One YAML file: \`ca-config/keyward.yaml\` by default, or \`--config FILE\` / \`KEYWARD_CONFIG\`. Every
setting has a default, so an empty file works. Durations are written \`90s\`, \`15m\`, \`24h\`,
\`7d\`. Environment variables: \`DATABASE_URL\` (when \`database.url\` and \`database.urlFile\` are
unset), \`KEYWARD_DATA_DIR\` (over \`dataDir\`; \`--data-dir\` wins over both), \`KEYWARD_CONFIG\`, and
the passphrase variable named by \`rootOfTrust.env\`.

${table(settingRows(configSchema))}

## Profiles

A profile is one YAML file in \`profilesDir\` (its name is the file name), or an entry under
\`profiles\`. Built in: \`tls-server\`, \`mtls\` (the shipped \`ca-config/profiles\` override them and
add \`shortlived\`).

${table(settingRows(profileSchema))}
`;
}
