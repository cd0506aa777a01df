/** tls-alpn-01 (RFC 8737; IP identifiers RFC 8738 §6). */
import 'reflect-metadata';

import { createHash, timingSafeEqual } from 'node:crypto';
import tls from 'node:tls';

import { SubjectAlternativeNameExtension, X509Certificate } from '@peculiar/x509';
import * as asn1js from 'asn1js';

import { normalizeDnsName } from '../core/dns-name.ts';
import type { AcmeIdentifier } from '../core/identifiers.ts';
import { canonicalIp } from '../core/ip.ts';
import { type AttemptError, startAttempt } from './attempt.ts';
import { beforeDeadline, truncate } from './deadline.ts';
import { describeSocketError } from './http01.ts';
import { connectAddresses, identifierProblem, reverseDnsName, urlHost } from './identifier.ts';
import type { DnsResolver } from './resolver.ts';
import { type ValidationConfig, type ValidationOutcome, type ValidationProblem } from './types.ts';

export const ACME_TLS_ALPN = 'acme-tls/1';
/** id-pe-acmeIdentifier (RFC 8737 §6.1). */
export const ACME_IDENTIFIER_OID = '1.3.6.1.5.5.7.1.31';

type Handshake = { kind: 'cert'; address: string; der: Buffer } | AttemptError;

export async function checkTlsAlpn01(
  id: AcmeIdentifier,
  keyAuthorization: string,
  cfg: ValidationConfig,
  resolver: DnsResolver,
): Promise<ValidationOutcome> {
  const bad = identifierProblem(id, false);
  if (bad) return { ok: false, problem: bad };
  const deadline = Date.now() + cfg.timeoutMs;
  const host = id.type === 'dns' ? normalizeDnsName(id.value) : id.value;
  const sni = id.type === 'dns' ? host : reverseDnsName(host);

  const targets = await beforeDeadline(connectAddresses(host, resolver), deadline, () => ({
    problem: { type: 'dns' as const, detail: `Timeout looking up A/AAAA for ${host}` },
  }));
  if ('problem' in targets) return { ok: false, problem: targets.problem };

  const used: string[] = [];
  let hs: Handshake | undefined;
  for (const address of targets.addresses) {
    used.push(address);
    hs = await handshake(address, cfg.tlsAlpnPort, sni, deadline);
    if (hs.kind === 'cert' || !hs.beforeConnect || Date.now() >= deadline) break;
  }
  if (!hs) throw new Error('no addresses to try');
  if (hs.kind === 'error') return { ok: false, problem: hs.problem };

  const problem = verifyAcmeTlsCertificate(hs.der, id, keyAuthorization);
  if (problem) {
    return { ok: false, problem: { ...problem, detail: `${hs.address}:${cfg.tlsAlpnPort}: ${problem.detail}` } };
  }
  return { ok: true, addressesUsed: used };
}

function handshake(address: string, port: number, sni: string, deadline: number): Promise<Handshake> {
  return new Promise<Handshake>((resolve) => {
    const { finish, error, connected, markConnected } = startAttempt<Handshake>({
      address,
      where: `${urlHost(address)}:${port}`,
      deadline,
      timeoutAfterConnect: 'Timeout during TLS handshake (your server may be slow or overloaded)',
      resolve,
      close: () => socket.destroy(),
    });

    const socket = tls.connect({
      host: address,
      port,
      servername: sni,
      ALPNProtocols: [ACME_TLS_ALPN],
      // The validation certificate is self-signed by design (RFC 8737 §3); its content is what counts.
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    });
    socket.once('connect', markConnected);
    socket.once('secureConnect', () => {
      if (socket.alpnProtocol !== ACME_TLS_ALPN) {
        error('tls', `Cannot negotiate ALPN protocol "${ACME_TLS_ALPN}" for tls-alpn-01 challenge`, false);
        return;
      }
      const cert = socket.getPeerCertificate(false);
      if (!cert || !Buffer.isBuffer(cert.raw)) {
        error('tls', 'No certificate presented for tls-alpn-01 challenge', false);
        return;
      }
      finish({ kind: 'cert', address, der: cert.raw });
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected()) {
        error('connection', describeSocketError(err), true);
      } else if (
        /no.application.protocol/i.test(err.message) ||
        err.code === 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL'
      ) {
        error('tls', `Cannot negotiate ALPN protocol "${ACME_TLS_ALPN}" for tls-alpn-01 challenge`, false);
      } else {
        error('tls', `TLS handshake failed: ${truncate(err.message, 128)}`, false);
      }
    });
  });
}

/**
 * The certificate checks of RFC 8737 §3, on their own so that they can be reasoned about apart
 * from the network: exactly one SAN equal to the identifier, and a critical acmeIdentifier
 * extension holding OCTET STRING(SHA-256(keyAuthorization)). Returns null when all hold.
 */
export function verifyAcmeTlsCertificate(
  der: Uint8Array,
  id: AcmeIdentifier,
  keyAuthorization: string,
): ValidationProblem | null {
  const incorrect = (why: string): ValidationProblem => ({
    type: 'incorrectResponse',
    detail: `Incorrect validation certificate for tls-alpn-01 challenge: ${why}`,
  });
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(Buffer.from(der));
  } catch {
    return { type: 'tls', detail: 'Unparseable certificate presented for tls-alpn-01 challenge' };
  }

  const oids = cert.extensions.map((e) => e.type);
  const duplicate = oids.find((oid, i) => oids.indexOf(oid) !== i);
  if (duplicate !== undefined) return incorrect(`extension ${duplicate} appears more than once`);

  let names: { type: string; value: string }[];
  try {
    const san = cert.getExtension(SubjectAlternativeNameExtension);
    if (!san) return incorrect('no subjectAltName extension');
    names = san.names.items.map((n) => ({ type: n.type, value: n.value }));
  } catch {
    // @peculiar/x509 refuses GeneralName kinds it cannot render; any such entry is a SAN that is
    // not the identifier, so the certificate fails either way.
    return incorrect('subjectAltName contains an entry other than a DNS name or IP address');
  }
  const shown = names.map((n) => truncate(n.value, 64)).join(', ');
  if (names.length !== 1 || !sanMatches(names[0]!, id)) {
    return incorrect(`requested ${id.value}, certificate names ${shown === '' ? 'nothing' : shown}`);
  }

  const ext = cert.extensions.find((e) => e.type === ACME_IDENTIFIER_OID);
  if (!ext) return { type: 'unauthorized', detail: 'Validation certificate has no acmeIdentifier extension' };
  if (!ext.critical) return incorrect('acmeIdentifier extension is not critical');
  const digest = octetStringContents(new Uint8Array(ext.value));
  const expected = createHash('sha256').update(keyAuthorization, 'utf8').digest();
  if (!digest || digest.length !== expected.length || !timingSafeEqual(digest, expected)) {
    return incorrect('acmeIdentifier extension value does not match the key authorization');
  }
  return null;
}

function sanMatches(name: { type: string; value: string }, id: AcmeIdentifier): boolean {
  if (id.type === 'dns') return name.type === 'dns' && normalizeDnsName(name.value) === normalizeDnsName(id.value);
  if (name.type !== 'ip') return false;
  const got = canonicalIp(name.value);
  return got !== null && got === canonicalIp(id.value);
}

/** The contents of a DER OCTET STRING that fills `der` exactly, or null. */
function octetStringContents(der: Uint8Array): Buffer | null {
  const parsed = asn1js.fromBER(der);
  if (parsed.offset !== der.byteLength || !(parsed.result instanceof asn1js.OctetString)) return null;
  if (parsed.result.idBlock.isConstructed) return null;
  return Buffer.from(parsed.result.valueBlock.valueHexView);
}
