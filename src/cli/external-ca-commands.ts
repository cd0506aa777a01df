import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { fromPem } from '../ca/pem.ts';
import { type CliCommand, defineCommand, requireString, UsageError } from './command.ts';
import { type IssuerView, lifecycleDeps, line, listOf, viewOf } from './issuer-commands.ts';

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

export const externalCaCommands: CliCommand[] = [adoptCommand];
