import { sha256Fingerprint } from '../ca/trusted-roots.ts';
import { parseDuration } from '../config/duration.ts';
import type { CaKeyType } from '../config/schema.ts';
import type { AppContext } from '../context.ts';
import type { IssuerRow } from '../db/schema.ts';
import { type CliCommand, defineCommand, type OptionValues, UsageError } from './command.ts';

/** One issuer as the issuer commands print it (and `--json` returns it). */
export interface IssuerView {
  id: string;
  kind: 'root' | 'intermediate';
  state: string;
  parentId: string | null;
  subject: string;
  keyType: string;
  keyProtection: string;
  notBefore: string;
  notAfter: string;
  /** Profiles it signs; empty: the default issuer. */
  profiles: string[];
  replaces: string | null;
  certificatesIssued?: number;
  certificatesLive?: number;
  sha256Fingerprint: string;
  /** Present when it is due for renewal (`ca.renewal`): what to run, and why the job left it. */
  expiryWarning?: { daysLeft: number; fix: string; message: string; why?: string };
}

const CA_KEY_TYPES: readonly CaKeyType[] = ['ecdsa-p256', 'ecdsa-p384', 'rsa-3072', 'rsa-4096'];

export function view(
  row: IssuerRow,
  extra: {
    keyAlg?: string | null;
    keyBackend?: string | null;
    certificatesIssued?: number;
    certificatesLive?: number;
  } = {},
): IssuerView {
  return {
    id: row.id,
    kind: row.kind,
    state: row.state,
    parentId: row.parent_id,
    subject: row.subject,
    keyType: extra.keyAlg ?? '',
    // A root trusted without its key (ca adopt --trust): its owner holds the key.
    keyProtection: row.key_id === null ? 'external' : (extra.keyBackend ?? ''),
    notBefore: row.not_before.toISOString(),
    notAfter: row.not_after.toISOString(),
    profiles: row.profiles,
    replaces: row.replaces,
    ...(extra.certificatesIssued !== undefined ? { certificatesIssued: extra.certificatesIssued } : {}),
    ...(extra.certificatesLive !== undefined ? { certificatesLive: extra.certificatesLive } : {}),
    sha256Fingerprint: sha256Fingerprint(row.certificate),
  };
}

export async function viewOf(ctx: AppContext, id: string): Promise<IssuerView> {
  const { issuerOverview } = await import('../ca/issuers.ts');
  const found = (await issuerOverview(ctx.database.db)).find((o) => o.row.id === id);
  if (!found) return view((await ctx.ca.issuers()).find((r) => r.id === id)!);
  return view(found.row, found);
}

export function line(i: IssuerView): string {
  const count =
    i.kind === 'intermediate' && i.certificatesIssued !== undefined
      ? `  ${i.certificatesIssued} issued (${i.certificatesLive} unexpired)`
      : '';
  const profiles =
    i.kind === 'intermediate' && i.keyProtection !== 'external'
      ? `  profiles: ${i.profiles.join(', ') || '(default)'}`
      : '';
  const key =
    i.keyProtection !== 'external'
      ? i.keyType
      : i.kind === 'root'
        ? 'trusted, key held elsewhere'
        : `key held elsewhere (keyward revoke ${i.id} withdraws it)`;
  const due = i.expiryWarning
    ? `\n    ! DUE FOR RENEWAL: ${i.expiryWarning.daysLeft} days left; ${i.expiryWarning.fix}${i.expiryWarning.why ? ` (not automatic: ${i.expiryWarning.why})` : ''}`
    : '';
  return `${i.kind} ${i.id}  ${i.state}${i.expiryWarning ? ' (due)' : ''}  ${key}${i.keyProtection === 'hsm' ? ' (hsm)' : ''}  until ${i.notAfter.slice(0, 10)}${count}${profiles}\n    ${i.subject}${due}\n`;
}

/** Roots, each followed by the intermediates it signed. */
export function issuerTree(list: IssuerView[]): string {
  if (list.length === 0) return 'No issuers.\n';
  const roots = list.filter((i) => i.kind === 'root');
  const orphans = list.filter((i) => i.kind !== 'root' && !roots.some((r) => r.id === i.parentId));
  let out = '';
  for (const root of roots) {
    out += line(root);
    for (const child of list.filter((i) => i.parentId === root.id && i.kind !== 'root'))
      out += `${line(child)
        .trimEnd()
        .replace(/^/gm, '  └ ')
        .replace(/\n {2}└ {5}/g, '\n        ')}\n`;
  }
  for (const o of orphans) out += line(o);
  return out;
}

const issuersCommand = defineCommand<object, IssuerView[]>({
  path: ['ca', 'issuers'],
  usage: 'ca issuers',
  summary: 'the CA certificates as a tree: state, key type, expiry, certificates issued, profiles',
  input: () => ({}),
  run: async (ctx) => {
    const { issuerOverview } = await import('../ca/issuers.ts');
    const { externalIntermediates } = await import('../ca/sign-intermediate.ts');
    const { x509 } = await import('../ca/x509.ts');
    const external = (await externalIntermediates(ctx.database.db)).map((x): IssuerView => ({
      id: x.serial,
      kind: 'intermediate',
      state: x.status === 'revoked' ? 'revoked' : 'external',
      parentId: x.rootId,
      subject: new x509.X509Certificate(new Uint8Array(x.der)).subject,
      keyType: '',
      keyProtection: 'external',
      notBefore: x.notBefore.toISOString(),
      notAfter: x.notAfter.toISOString(),
      profiles: [],
      replaces: null,
      sha256Fingerprint: sha256Fingerprint(x.der),
    }));
    const { dueWarnings } = await import('../ca/issuer-renewal.ts');
    const { renewalWindowOf } = await import('../ca/issuer-expiry.ts');
    const overview = await issuerOverview(ctx.database.db);
    const renewal = ctx.config.ca.renewal;
    const due = dueWarnings(
      overview.map((o) => o.row),
      new Date(),
      { window: renewalWindowOf(renewal), automatic: renewal.automatic },
    );
    const warningFor = (id: string): Pick<IssuerView, 'expiryWarning'> => {
      const w = due.find((d) => d.issuerId === id);
      return w
        ? { expiryWarning: { daysLeft: w.daysLeft, fix: w.fix, message: w.message, ...(w.why ? { why: w.why } : {}) } }
        : {};
    };
    return [...overview.map((o) => ({ ...view(o.row, o), ...warningFor(o.row.id) })), ...external];
  },
  format: issuerTree,
});

function keyTypeOf(v: OptionValues): CaKeyType | undefined {
  const t = v['key-type'];
  if (t === undefined) return undefined;
  if (typeof t !== 'string' || !CA_KEY_TYPES.includes(t as CaKeyType))
    throw new UsageError(`--key-type must be one of ${CA_KEY_TYPES.join(', ')}`);
  return t as CaKeyType;
}

export function lifetimeOf(v: OptionValues): number | undefined {
  if (v.lifetime === undefined) return undefined;
  try {
    return parseDuration(String(v.lifetime));
  } catch (err) {
    throw new UsageError(`--lifetime: ${(err as Error).message}`);
  }
}

function protectionOf(v: OptionValues): 'wrapped' | 'hsm' | undefined {
  const p = v.protection;
  if (p === undefined) return undefined;
  if (p !== 'wrapped' && p !== 'hsm') throw new UsageError('--protection must be wrapped or hsm');
  return p;
}

export function listOf(v: OptionValues, name: string): string[] {
  const raw = v[name];
  const items = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).map(String);
  return items
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
}

interface ConstraintsInput {
  permittedDns: string[];
  excludedDns: string[];
  permittedIp: string[];
  excludedIp: string[];
}

/** `dns:NAME`, `ip:CIDR`, and `!dns:…` / `!ip:…` for excluded subtrees (RFC 5280 4.2.1.10). */
export function parseNameConstraints(items: string[]): ConstraintsInput | undefined {
  if (items.length === 0) return undefined;
  const out: ConstraintsInput = { permittedDns: [], excludedDns: [], permittedIp: [], excludedIp: [] };
  for (const item of items) {
    const m = /^(!?)(dns|ip):(.+)$/.exec(item);
    if (!m) throw new UsageError(`--name-constraints: "${item}" is not dns:NAME, ip:CIDR, !dns:NAME or !ip:CIDR`);
    const excluded = m[1] === '!';
    if (m[2] === 'dns') (excluded ? out.excludedDns : out.permittedDns).push(m[3]!.toLowerCase());
    else {
      if (!/^[0-9a-fA-F.:]+\/\d{1,3}$/.test(m[3]!))
        throw new UsageError(`--name-constraints: "${m[3]}" is not a CIDR block`);
      (excluded ? out.excludedIp : out.permittedIp).push(m[3]!);
    }
  }
  return out;
}

export async function lifecycleDeps(ctx: AppContext) {
  return {
    db: ctx.database.db,
    kms: ctx.kms,
    registry: ctx.ca.registry,
    profiles: [...ctx.config.profiles.keys()],
    organization: ctx.config.ca.organization,
  };
}

function positionalId(positionals: string[], usage: string): { id: string } {
  const id = positionals[0];
  if (!id) throw new UsageError(`${usage} needs the issuer ID (see keyward ca issuers)`);
  if (!/^[0-9a-f]{16}$/.test(id))
    throw new UsageError(`"${id}" is not an issuer id (16 hex digits, see keyward ca issuers)`);
  return { id };
}

interface AddInput {
  keyType?: CaKeyType;
  lifetimeMs?: number;
  commonName?: string;
  nameConstraints?: ConstraintsInput;
  profiles: string[];
  protection?: 'wrapped' | 'hsm';
  parentId?: string;
  activate: boolean;
}

const addIntermediateCommand = defineCommand<AddInput, IssuerView>({
  path: ['ca', 'add-intermediate'],
  usage:
    'ca add-intermediate [--key-type T] [--lifetime D] [--common-name CN] [--name-constraints dns:N,!dns:N,ip:CIDR…] [--profiles P,…] [--protection wrapped|hsm] [--parent ROOT-ID] [--activate]',
  summary: 'make a new intermediate under a root (pending until ca activate, or --activate)',
  help: `Makes a key (in the key hierarchy, or in the HSM with --protection hsm) and an intermediate
certificate signed by the newest active root (or --parent). It signs nothing until activated.
--profiles names the profiles it signs; without it, it is a default issuer (signs any profile no
other active issuer names). Defaults: key type and lifetime from ca.intermediate in the settings.`,
  options: {
    'key-type': { type: 'string' },
    lifetime: { type: 'string' },
    'common-name': { type: 'string' },
    'name-constraints': { type: 'string', multiple: true },
    profiles: { type: 'string', multiple: true },
    protection: { type: 'string' },
    parent: { type: 'string' },
    activate: { type: 'boolean' },
  },
  input: (v) => {
    const parent = v.parent === undefined ? undefined : String(v.parent);
    if (parent !== undefined && !/^[0-9a-f]{16}$/.test(parent))
      throw new UsageError(`--parent: "${parent}" is not an issuer id (16 hex digits)`);
    return {
      keyType: keyTypeOf(v),
      lifetimeMs: lifetimeOf(v),
      commonName: v['common-name'] === undefined ? undefined : String(v['common-name']),
      nameConstraints: parseNameConstraints(listOf(v, 'name-constraints')),
      profiles: listOf(v, 'profiles'),
      protection: protectionOf(v),
      parentId: parent,
      activate: v.activate === true,
    };
  },
  run: async (ctx, input) => {
    const { addIntermediate } = await import('../ca/issuer-lifecycle.ts');
    const defaults = ctx.config.ca.intermediate;
    const row = await addIntermediate(
      await lifecycleDeps(ctx),
      {
        keyType: input.keyType ?? defaults.keyType,
        lifetimeMs: input.lifetimeMs ?? defaults.lifetime,
        commonName: input.commonName ?? defaults.commonName,
        nameConstraints: input.nameConstraints,
        profiles: input.profiles,
        ...(input.parentId ? { parentId: input.parentId } : {}),
        ...(input.protection ? { protection: input.protection } : {}),
      },
      input.principal,
      input.activate,
    );
    return viewOf(ctx, row.id);
  },
  format: (i) =>
    `Added intermediate ${i.id} (${i.state}${i.state === 'pending' ? `; keyward ca activate ${i.id} to sign with it` : ''}).\n${line(i)}`,
});

const activateCommand = defineCommand<{ id: string }, IssuerView>({
  path: ['ca', 'activate'],
  usage: 'ca activate ID',
  summary: 'an intermediate signs its profiles from now on (it takes over from any other for them)',
  input: (_v, p) => positionalId(p, 'ca activate'),
  run: async (ctx, input) => {
    const { activateIssuer } = await import('../ca/issuer-lifecycle.ts');
    await activateIssuer(await lifecycleDeps(ctx), input.id, input.principal);
    return viewOf(ctx, input.id);
  },
  format: (i) => `Issuer ${i.id} is ${i.state}.\n${line(i)}`,
});

const retireCommand = defineCommand<{ id: string }, IssuerView>({
  path: ['ca', 'retire'],
  usage: 'ca retire ID',
  summary: 'an intermediate signs nothing new; its CRLs and OCSP go on until its certificates expire',
  input: (_v, p) => positionalId(p, 'ca retire'),
  run: async (ctx, input) => {
    const { retireIssuer } = await import('../ca/issuer-lifecycle.ts');
    await retireIssuer(await lifecycleDeps(ctx), input.id, input.principal);
    return viewOf(ctx, input.id);
  },
  format: (i) =>
    `Issuer ${i.id} is ${i.state}${i.state === 'retiring' ? ` (CRL and OCSP answers continue for its ${i.certificatesLive} unexpired certificates)` : ''}.\n${line(i)}`,
});

interface RotateInput {
  id: string;
  keyType?: CaKeyType;
  lifetimeMs?: number;
  commonName?: string;
  protection?: 'wrapped' | 'hsm';
}

const rotateIntermediateCommand = defineCommand<RotateInput, { old: IssuerView; new: IssuerView }>({
  path: ['ca', 'rotate-intermediate'],
  usage: 'ca rotate-intermediate ID [--key-type T] [--lifetime D] [--common-name CN] [--protection wrapped|hsm]',
  summary: 'replace an intermediate: a new key and certificate under the same root take over its profiles',
  help: `The new intermediate copies the old one's profiles, name constraints, key type, protection and
lifetime (unless given) and signs from the moment this commits, on every replica. The old one turns
retiring: its certificates stay valid, and its CRLs and OCSP answers continue until they expire.`,
  options: {
    'key-type': { type: 'string' },
    lifetime: { type: 'string' },
    'common-name': { type: 'string' },
    protection: { type: 'string' },
  },
  input: (v, p) => ({
    ...positionalId(p, 'ca rotate-intermediate'),
    keyType: keyTypeOf(v),
    lifetimeMs: lifetimeOf(v),
    commonName: v['common-name'] === undefined ? undefined : String(v['common-name']),
    protection: protectionOf(v),
  }),
  run: async (ctx, input) => {
    const { rotateIntermediate } = await import('../ca/issuer-lifecycle.ts');
    const { id, principal, ...overrides } = input;
    const rotated = await rotateIntermediate(
      await lifecycleDeps(ctx),
      id,
      Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)),
      principal,
    );
    return { old: await viewOf(ctx, rotated.old.id), new: await viewOf(ctx, rotated.new.id) };
  },
  format: (r) => `Rotated ${r.old.id} → ${r.new.id}; ${r.old.id} is ${r.old.state}.\n${line(r.new)}${line(r.old)}`,
});

interface RootRotationView {
  old: IssuerView;
  new: IssuerView;
  crossCertificates: CrossView[];
}

interface CrossView {
  id: string;
  /** The root this certifies, and the root that signed it. */
  subjectIssuerId: string;
  signerIssuerId: string;
  notAfter: string;
  pem: string;
}

const rotateRootCommand = defineCommand<Omit<RotateInput, 'id'>, RootRotationView>({
  path: ['ca', 'rotate-root'],
  usage: 'ca rotate-root [--key-type T] [--lifetime D] [--common-name CN] [--protection wrapped|hsm]',
  summary: 'roll the root over: a new root, and the old and new roots cross-sign each other',
  help: `Makes a new root (key type, protection and lifetime of the old one unless given) and two
cross-certificates: the new root certified by the old, and the old by the new. Clients that trust
only one of the two roots keep validating every certificate. The new root becomes current: new
intermediates go under it (ca rotate-intermediate moves an intermediate over) and ACME serves the
chain to it first, with the chain to the old root as an alternate. /roots.pem and the trust bundle
list both, and running keyward agents rewrite bundle.pem with both within mesh.bundleRefreshHint:
wait that long before moving intermediates over. Hand the cross-certificates to relying parties
with ca export-cross-signed.`,
  options: {
    'key-type': { type: 'string' },
    lifetime: { type: 'string' },
    'common-name': { type: 'string' },
    protection: { type: 'string' },
  },
  input: (v) => ({
    keyType: keyTypeOf(v),
    lifetimeMs: lifetimeOf(v),
    commonName: v['common-name'] === undefined ? undefined : String(v['common-name']),
    protection: protectionOf(v),
  }),
  dualControl: (_ctx, input) =>
    Promise.resolve(
      `roll the root over to a new ${input.keyType ?? 'root'} key; the old and new roots cross-sign each other`,
    ),
  run: async (ctx, input) => {
    const { rotateRoot } = await import('../ca/root-rotation.ts');
    const { principal, ...spec } = input;
    const r = await rotateRoot(
      await lifecycleDeps(ctx),
      Object.fromEntries(Object.entries(spec).filter(([, v]) => v !== undefined)),
      principal,
    );
    return {
      old: await viewOf(ctx, r.old.id),
      new: await viewOf(ctx, r.new.id),
      crossCertificates: r.crossCertificates.map(crossView),
    };
  },
  format: (r) =>
    `Rolled the root over: ${r.new.id} is current, ${r.old.id} is ${r.old.state}; each certifies the other (ca export-cross-signed).\n${line(r.new)}${line(r.old)}`,
});

function crossView(x: {
  id: string;
  subject_issuer_id: string;
  signer_issuer_id: string;
  not_after: Date;
  certificate: Uint8Array;
}): CrossView {
  const b64 = Buffer.from(x.certificate)
    .toString('base64')
    .match(/.{1,64}/g)!
    .join('\n');
  return {
    id: x.id,
    subjectIssuerId: x.subject_issuer_id,
    signerIssuerId: x.signer_issuer_id,
    notAfter: x.not_after.toISOString(),
    pem: `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`,
  };
}

const exportCrossSignedCommand = defineCommand<object, CrossView[]>({
  path: ['ca', 'export-cross-signed'],
  usage: 'ca export-cross-signed',
  summary: 'print the cross-certificates between roots (PEM), for relying parties during a root rollover',
  input: () => ({}),
  run: async (ctx) => (await ctx.ca.registry.crossCertificates()).map(crossView),
  format: (list) =>
    list.length === 0
      ? 'No cross-certificates (there has been no root rollover).\n'
      : list
          .map(
            (x) => `# root ${x.subjectIssuerId} certified by root ${x.signerIssuerId}, until ${x.notAfter}\n${x.pem}`,
          )
          .join(''),
});

export const issuerCommands: CliCommand[] = [
  rotateRootCommand,
  exportCrossSignedCommand,
  issuersCommand,
  addIntermediateCommand,
  activateCommand,
  retireCommand,
  rotateIntermediateCommand,
];
