import { X509Certificate } from 'node:crypto';
import { request } from 'node:https';

/**
 * The agent's side of `GET /v1/bundle`: the roots it should trust now, and how soon to ask again.
 * A root rollover adds a root long before any certificate chains to it, so an agent that asks at
 * the CA's refresh hint trusts the new root before a peer presents it, whenever its own
 * certificate is due.
 */

export interface FetchedBundle {
  /** The roots as PEM, in the CA's order. */
  pem: string;
  /** spiffe_refresh_hint, in milliseconds. */
  refreshHintMs: number;
  sequence: number;
}

const MAX_BUNDLE_BYTES = 256 * 1024;

function toPem(der: Buffer): string {
  const b64 = der
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}

/**
 * The X.509 authorities of a SPIFFE bundle (SPIFFE Trust Domain and Bundle §4.2: `use` is
 * `x509-svid` and `x5c` holds exactly one certificate). Refuses a bundle without one CA
 * certificate: writing it would leave the workload trusting nobody.
 */
export function bundlePem(json: unknown): FetchedBundle {
  const b = json as { keys?: unknown; spiffe_refresh_hint?: unknown; spiffe_sequence?: unknown } | null;
  if (typeof b !== 'object' || b === null || !Array.isArray(b.keys)) throw new Error('the bundle has no "keys"');
  const pems: string[] = [];
  for (const key of b.keys as Array<{ use?: unknown; x5c?: unknown }>) {
    if (key?.use !== 'x509-svid') continue;
    if (!Array.isArray(key.x5c) || key.x5c.length !== 1 || typeof key.x5c[0] !== 'string')
      throw new Error('an x509-svid key of the bundle does not carry exactly one certificate in "x5c"');
    const der = Buffer.from(key.x5c[0], 'base64');
    const cert = new X509Certificate(der);
    if (!cert.ca) throw new Error(`the bundle's certificate ${cert.subject} is not a CA certificate`);
    pems.push(toPem(der));
  }
  if (pems.length === 0) throw new Error('the bundle holds no X.509 authority');
  const hint = typeof b.spiffe_refresh_hint === 'number' && b.spiffe_refresh_hint > 0 ? b.spiffe_refresh_hint : 300;
  return {
    pem: pems.join(''),
    refreshHintMs: hint * 1000,
    sequence: typeof b.spiffe_sequence === 'number' ? b.spiffe_sequence : 0,
  };
}

/** GET <server>/v1/bundle over TLS that trusts only `ca` (the roots the agent holds). */
export function fetchBundle(server: string, ca: string): Promise<FetchedBundle> {
  const url = `${server}/v1/bundle`;
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', ca, timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        text += d;
        if (text.length > MAX_BUNDLE_BYTES) req.destroy(new Error(`${url}: more than ${MAX_BUNDLE_BYTES} bytes`));
      });
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`${url}: ${res.statusCode} ${text.slice(0, 200)}`));
        try {
          resolve(bundlePem(JSON.parse(text)));
        } catch (err) {
          reject(new Error(`${url}: ${(err as Error).message}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: timed out`)));
    req.on('error', (err) => reject(err.message.startsWith(url) ? err : new Error(`${url}: ${err.message}`)));
    req.end();
  });
}

/** The same set of certificates, whatever their order or PEM line breaks. */
export function sameCertificates(a: string, b: string): boolean {
  const set = (pem: string) =>
    (pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [])
      .map((p) => new X509Certificate(p).fingerprint256)
      .sort()
      .join(',');
  return set(a) === set(b);
}
