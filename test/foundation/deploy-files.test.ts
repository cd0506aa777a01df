import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';

import { configSchema } from '../../src/config/schema.ts';

// The example deployment files, checked the way the tools that read them would.
describe('deployment examples', () => {
  it('the Kubernetes manifest is valid against the Kubernetes schemas and runs two replicas on one Secret', () => {
    const docs = parseAllDocuments(readFileSync('docs/deploy/kubernetes.yaml', 'utf8')).map(
      (d) => d.toJS() as { kind: string },
    );
    const models = { ConfigMap, Secret, Deployment, Service } as const;
    expect(docs.map((d) => d.kind)).toEqual(['ConfigMap', 'Secret', 'Deployment', 'Service']);
    for (const doc of docs) new models[doc.kind as keyof typeof models](doc as never).validate();

    const deployment = docs[2] as unknown as Deployment;
    expect(deployment.spec!.replicas).toBe(2);
    const pod = deployment.spec!.template.spec!;
    expect(pod.securityContext?.runAsNonRoot).toBe(true);
    expect(pod.volumes!.find((v) => v.name === 'secrets')!.secret!.secretName).toBe('keyward-secrets');
    expect(Object.keys((docs[1] as unknown as Secret).stringData!)).toEqual(['database-url', 'root-key']);

    // The configuration it mounts is one Keyward accepts.
    const settings = parse((docs[0] as unknown as ConfigMap).data!['keyward.yaml']!);
    const parsed = configSchema.safeParse(settings);
    expect(parsed.error?.issues ?? []).toEqual([]);
    expect(parsed.data!.database.urlFile).toBe('/run/secrets/keyward/database-url');
  });

  it('a broken manifest is refused (the check can fail)', () => {
    const docs = parseAllDocuments(readFileSync('docs/deploy/kubernetes.yaml', 'utf8')).map((d) => d.toJS());
    const broken = { ...docs[2], spec: { ...docs[2].spec, replicas: 'two' } };
    expect(() => new Deployment(broken).validate()).toThrow(/replicas/);
  });

  it('the systemd unit passes systemd-analyze verify, and a broken one does not', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kw-unit-'));
    try {
      // Warnings (an unknown value, an unknown key) go to stderr with exit 0; errors exit non-zero.
      const verify = (text: string) => {
        const file = join(dir, 'keyward.service');
        writeFileSync(file, text);
        const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
        return { status: r.status, output: `${r.stdout}${r.stderr}` };
      };
      const unit = readFileSync('docs/deploy/keyward.service', 'utf8');
      expect(verify(unit)).toEqual({ status: 0, output: '' });
      expect(verify(unit.replace('Restart=on-failure', 'Restart=sometimes')).output).toMatch(/restart specifier/);
      expect(verify(unit.replace('/usr/bin/node ', '/usr/bin/no-such-node ')).status).not.toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
