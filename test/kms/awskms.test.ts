import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';

import type { RotateRootResult } from '../../src/kms/rotate-root.ts';
import { startTestCa } from '../support/ca.ts';
import { issueLeaf, kmsCli, restart } from './helpers.ts';

// Runs only where a real AWS KMS key is available: set KEYWARD_TEST_AWS_KMS_KEY_ARN to a symmetric
// key's full ARN, with credentials in the SDK's default chain (AWS_PROFILE, role, environment).
const keyArn = process.env.KEYWARD_TEST_AWS_KMS_KEY_ARN;

describe.runIf(Boolean(keyArn))('awskms root of trust (real AWS KMS)', () => {
  it('file → awskms: KEKs wrapped by KMS with the header bound in the encryption context', async () => {
    const ca = await startTestCa({ serve: false });
    let ctx = ca.ctx;
    try {
      const out = await kmsCli<RotateRootResult>(ctx, ['kms', 'rotate-root'], { to: 'awskms', 'key-arn': keyArn! });
      expect(out.provider).toBe('awskms');
      const v = await ctx.database.db.selectFrom('kms_kek_versions').select('wrapped').executeTakeFirstOrThrow();
      expect(Buffer.from(v.wrapped)[4]).toBe(0x03);
      ctx = await restart(ctx, ca.configFile, ca.env);
      await issueLeaf(ctx);
      await sql`UPDATE kms_kek_versions SET wrapped = overlay(wrapped placing '\\x02'::bytea from 23 for 4)`.execute(
        ctx.database.db,
      );
      ctx = await restart(ctx, ca.configFile, ca.env);
      await expect(issueLeaf(ctx)).rejects.toThrow(/AWS KMS refused the ciphertext|names version/);
    } finally {
      await ctx.close().catch(() => undefined);
      await ca.store.cleanup();
    }
  });
});
