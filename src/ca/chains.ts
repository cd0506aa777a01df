import type { CrossCertificateRow, IssuerRow } from '../db/schema.ts';
import { parseIssuerCertificate } from './issuer-certificate.ts';
import { toPem } from './pem.ts';

/** The certificates a client is sent after the leaf: one path per root it might trust. */
export interface IssuerChains {
  /** The path to the current root (the newest active one), or else to the issuer's own root. */
  primary: Uint8Array[];
  /** Paths to the other roots still trusted, through cross-certificates (RFC 8555 §7.4.2 alternates). */
  alternates: Uint8Array[][];
}

/**
 * The newest active root whose key we hold: the one new intermediates are made under and clients
 * are steered to (a root trusted only for an adopted intermediate is neither).
 */
export function currentRoot(rows: readonly IssuerRow[]): IssuerRow | undefined {
  return rows.filter((r) => r.kind === 'root' && r.state === 'active' && r.key_id !== null).at(-1);
}

/**
 * Every path from an issuer to a root we hold: directly to its parent, and through each
 * cross-certificate that another (not retired) root made for that parent. Roots are trust
 * anchors and are not sent (RFC 8446 §4.4.2 lets the server omit them).
 */
export function chainsFrom(
  issuer: IssuerRow,
  rows: readonly IssuerRow[],
  crosses: readonly CrossCertificateRow[],
): IssuerChains {
  const paths: { anchor: string | null; certs: Uint8Array[] }[] = [
    { anchor: issuer.parent_id, certs: [issuer.certificate] },
  ];
  const usable = (x: CrossCertificateRow) => {
    const signer = rows.find((r) => r.id === x.signer_issuer_id);
    return signer !== undefined && signer.state !== 'retired' && x.not_after.getTime() > Date.now();
  };
  // The intermediate certified by another root: the shortest path to that root.
  for (const x of crosses)
    if (x.subject_issuer_id === issuer.id && usable(x))
      paths.push({ anchor: x.signer_issuer_id, certs: [x.certificate] });
  // Else through the parent root certified by another root (that root must allow two CAs below it).
  for (const x of crosses) {
    if (x.subject_issuer_id !== issuer.parent_id || !usable(x)) continue;
    if (paths.some((p) => p.anchor === x.signer_issuer_id)) continue;
    const signer = rows.find((r) => r.id === x.signer_issuer_id)!;
    const limit = parseIssuerCertificate(signer.certificate).pathLength;
    if (limit !== undefined && limit < 2) continue;
    paths.push({ anchor: signer.id, certs: [issuer.certificate, x.certificate] });
  }
  const current = currentRoot(rows)?.id;
  const primary = paths.find((p) => p.anchor === current) ?? paths[0]!;
  return { primary: primary.certs, alternates: paths.filter((p) => p !== primary).map((p) => p.certs) };
}

export function chainPem(leaf: Uint8Array, certs: readonly Uint8Array[]): string {
  return toPem(leaf) + certs.map((c) => toPem(c)).join('');
}
