import { x509 } from '../ca/x509.ts';
import { UsageError } from './command.ts';

// What `keyward kms …` and `keyward audit …` run, imported only when one of them runs (the command
// definitions in kms-commands.ts load with every CLI start, so they keep to parsing and printing).

export { keyStatesWithCaChecks } from '../ca/key-dependants.ts';
export { listAudit } from '../kms/audit-query.ts';
export {
  createCheckpoint,
  exportCheckpoint,
  listCheckpoints,
  parseCheckpointLines,
  verifyAuditWithCheckpoints,
} from '../kms/checkpoints.ts';
export { DataKeys } from '../kms/data-keys.ts';
export { createImportJob, importJobUsage, importPlainKey, importWrapped, parsePrivateKeyPem } from '../kms/import.ts';
export { keyUsageOf, listKeys, showKey } from '../kms/inventory.ts';
export { putKeyPolicy } from '../kms/put-policy.ts';
export { resolveKey } from '../kms/refs.ts';
export { rewrap } from '../kms/rewrap.ts';
export { rotateRoot } from '../kms/rotate-root.ts';
export { rotateKek, setAutoRotate } from '../kms/rotation.ts';

/** The public key of `kms import --cert`, which the imported private key must match. */
export function certificateSpki(pem: string): Uint8Array {
  try {
    return new Uint8Array(new x509.X509Certificate(pem).publicKey.rawData);
  } catch {
    throw new UsageError('--cert is not a PEM certificate');
  }
}
