import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { fromPem } from '../ca/pem.ts';
import { type CliCommand, defineCommand, requireString, UsageError } from './command.ts';
import {
  type IssuerView,
  lifecycleDeps,
  lifetimeOf,
  line,
  listOf,
  parseNameConstraints,
  viewOf,
} from './issuer-commands.ts';

/** The first certificate of a PEM file, as base64 DER (inputs cross the admin socket as JSON). */
function certificateFile(file: string, option: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--${option}: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
  }
  const [der] = fromPem(text);
  if (!der) throw new UsageError(`--${option}: ${file} holds no PEM certificate`);
  return Buffer.from(der).toString('base64');
}

interface AdoptInput {
  keyId: string;
  certificate: string;
  trust?: string;
  profiles: string[];
  activate: boolean;
}

interface AdoptOutput {
  issuer: IssuerView;
  trustedRoot?: IssuerView;
}

const adoptCommand = defineCommand<AdoptInput, AdoptOutput>({
  path: ['ca', 'adopt'],
  usage: 'ca adopt --key-id K --cert FILE [--trust ROOT-FILE] [--profiles P,…] [--activate]',
  summary: 'a key imported with kms import and its CA certificate become an intermediate issuer',
  help: `The certificate (the first in FILE) must be a CA certificate (basicConstraints cA, keyUsage
keyCertSign) for the key K (kms import), signed by a root this CA holds, or by the root certificate in
--trust ROOT-FILE, which is then recorded as a trusted root: listed in /roots.pem and the trust
bundle, signing nothing here. The issuer is pending until keyward ca activate (or --activate);
--profiles names the profiles it signs, without it it is a default issuer. A refusal changes nothing.
With kms.dualControl on, adopting with --trust only proposes it.`,
  options: {
    'key-id': { type: 'string' },
    cert: { type: 'string' },
    trust: { type: 'string' },
    profiles: { type: 'string', multiple: true },
    activate: { type: 'boolean' },
  },
  input: (v) => ({
    keyId: requireString(v, 'key-id', 'ca adopt'),
    certificate: certificateFile(requireString(v, 'cert', 'ca adopt'), 'cert'),
    ...(typeof v.trust === 'string' ? { trust: certificateFile(v.trust, 'trust') } : {}),
    profiles: listOf(v, 'profiles'),
    activate: v.activate === true,
  }),
  // A new root in /roots.pem changes what relying parties trust.
  dualControl: (_ctx, input) =>
    Promise.resolve(
      input.trust
        ? `adopt key ${input.keyId} as an issuer and trust a new root (SHA-256 ${createHash('sha256').update(Buffer.from(input.trust, 'base64')).digest('hex')})`
        : null,
    ),
  run: async (ctx, input) => {
    const { adoptIssuer } = await import('../ca/adopt.ts');
    const adopted = await adoptIssuer(
      await lifecycleDeps(ctx),
      {
        keyId: input.keyId,
        certificate: new Uint8Array(Buffer.from(input.certificate, 'base64')),
        ...(input.trust ? { trust: new Uint8Array(Buffer.from(input.trust, 'base64')) } : {}),
        profiles: input.profiles,
        activate: input.activate,
      },
      input.principal,
    );
    return {
      issuer: await viewOf(ctx, adopted.issuer.id),
      ...(adopted.trustedRoot ? { trustedRoot: await viewOf(ctx, adopted.trustedRoot.id) } : {}),
    };
  },
  format: (out) =>
    `${out.trustedRoot ? `Trusting root ${out.trustedRoot.id} (${out.trustedRoot.subject}); it is now in /roots.pem.\n` : ''}` +
    `Adopted intermediate ${out.issuer.id} (${out.issuer.state}${out.issuer.state === 'pending' ? `; keyward ca activate ${out.issuer.id} to sign with it` : ''}).\n${line(out.issuer)}`,
});

interface SignIntermediateInput {
  csr: string;
  lifetimeMs?: number;
  nameConstraints?: ReturnType<typeof parseNameConstraints>;
  pathLength?: number;
}

interface SignIntermediateOutput {
  serial: string;
  rootId: string;
  subject: string;
  notBefore: string;
  notAfter: string;
  pem: string;
}

const signIntermediateCommand = defineCommand<SignIntermediateInput, SignIntermediateOutput>({
  path: ['ca', 'sign-intermediate'],
  usage: 'ca sign-intermediate --csr FILE [--lifetime D] [--name-constraints dns:N,!dns:N,ip:CIDR…] [--path-len N]',
  summary: 'the current root certifies a CA key held elsewhere (an HSM, another CA); prints the certificate',
  help: `Signs the CSR's key as an intermediate CA under the current root: subject CN from the CSR,
organization from ca.organization, path length 0 unless --path-len, lifetime ca.intermediate.lifetime
unless --lifetime (never past the root), with the root's CRL and certificate URLs. It is recorded under
the root, so keyward ca issuers lists it and keyward revoke SERIAL puts it on the root's CRL; it
issues nothing here, since its key is not ours. With kms.dualControl on, it only proposes.`,
  options: {
    csr: { type: 'string' },
    lifetime: { type: 'string' },
    'name-constraints': { type: 'string', multiple: true },
    'path-len': { type: 'string' },
  },
  input: (v) => {
    const file = requireString(v, 'csr', 'ca sign-intermediate');
    let csr: string;
    try {
      csr = readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`--csr: cannot read ${file} (${(err as NodeJS.ErrnoException).code})`);
    }
    const raw = v['path-len'];
    const pathLength = raw === undefined ? undefined : Number(raw);
    if (pathLength !== undefined && (!Number.isInteger(pathLength) || pathLength < 0))
      throw new UsageError('--path-len must be a whole number, 0 or more');
    return {
      csr,
      lifetimeMs: lifetimeOf(v),
      nameConstraints: parseNameConstraints(listOf(v, 'name-constraints')),
      ...(pathLength !== undefined ? { pathLength } : {}),
    };
  },
  // Whoever holds the new intermediate's key can issue anything our roots' relying parties trust.
  dualControl: (_ctx, input) =>
    Promise.resolve(
      `certify a CA key held elsewhere as an intermediate under the current root (path length ${input.pathLength ?? 0}${input.nameConstraints ? ', name-constrained' : ''}); CSR SHA-256 ${createHash('sha256').update(input.csr).digest('hex').slice(0, 16)}…`,
    ),
  run: async (ctx, input) => {
    const { signIntermediate } = await import('../ca/sign-intermediate.ts');
    const { toPem } = await import('../ca/pem.ts');
    const signed = await signIntermediate(
      await lifecycleDeps(ctx),
      {
        csr: input.csr,
        lifetimeMs: input.lifetimeMs ?? ctx.config.ca.intermediate.lifetime,
        ...(input.nameConstraints ? { nameConstraints: input.nameConstraints } : {}),
        ...(input.pathLength !== undefined ? { pathLength: input.pathLength } : {}),
      },
      input.principal,
      ctx.config.httpBaseUrl,
    );
    return {
      serial: signed.serial,
      rootId: signed.rootId,
      subject: signed.subject,
      notBefore: signed.notBefore.toISOString(),
      notAfter: signed.notAfter.toISOString(),
      pem: toPem(signed.der),
    };
  },
  format: (out) => {
    process.stderr.write(
      `Root ${out.rootId} certified ${out.subject} (serial ${out.serial}) until ${out.notAfter}; keyward revoke ${out.serial} withdraws it.\n`,
    );
    return out.pem;
  },
});

export const externalCaCommands: CliCommand[] = [adoptCommand, signIntermediateCommand];
