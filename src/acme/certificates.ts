import type { Context } from 'hono';

import { KeywardError } from '../core/errors.ts';
import type { AcmeDeps } from './deps.ts';
import { requireAccount, verifyRequest } from './jws.ts';
import { owned } from './owned.ts';
import { link, rawResponse } from './respond.ts';

/**
 * RFC 8555 §7.4.2: POST-as-GET by the ordering account; leaf first, then the intermediate, LF line
 * endings and a trailing newline, under exactly `application/pem-certificate-chain`. The chain is
 * the one to the current root; during a root rollover the others (through cross-certificates) are
 * at `/cert/<serial>/<n>`, each offered with `Link: <…>;rel="alternate"`.
 */
export async function getCertificate(c: Context, deps: AcmeDeps): Promise<Response> {
  const serial = c.req.param('serial')!;
  // Issued here moments ago, or read with the nonce's spend: a download is one statement.
  const remembered = deps.recentCertificates.get(serial);
  const req = await verifyRequest(c, deps, 'kid', remembered ? {} : { certificateSerial: serial });
  const account = requireAccount(req);
  const row = owned(remembered ?? req.certificate, account, 'certificate');
  const chains = await deps.certificates.chainsFor(row);
  const index = chainIndex(c.req.param('n'));
  if (index === undefined || index >= chains.length) throw new KeywardError('notFound', 'No such certificate chain');
  const url = (i: number) => (i === 0 ? deps.urls.certificate(serial) : `${deps.urls.certificate(serial)}/${i}`);
  const alternates = chains.map((_, i) => i).filter((i) => i !== index);
  return rawResponse(chains[index]!, 'application/pem-certificate-chain', {
    Link: alternates.map((i) => link(url(i), 'alternate')),
  });
}

function chainIndex(n: string | undefined): number | undefined {
  if (n === undefined) return 0;
  return /^[1-9][0-9]?$/.test(n) ? Number(n) : undefined;
}
