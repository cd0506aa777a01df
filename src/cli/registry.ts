import { acmeCommands } from './acme-commands.ts';
import { adminCertCommands } from './admin-cert-commands.ts';
import { caCommands } from './ca-commands.ts';
import { type CliCommand, commandName } from './command.ts';
import { gated, proposalCommands } from './dual-control.ts';
import { externalCaCommands } from './external-ca-commands.ts';
import { issuerCommands } from './issuer-commands.ts';
import { kmsCommands } from './kms-commands.ts';
import { meshCommands } from './mesh-commands.ts';
import { revocationCommands } from './revocation-commands.ts';
import { sharesCommands } from './shares-commands.ts';

/** Every command that runs against the CA (in-process or through the admin socket). */
export const commands: readonly CliCommand[] = [
  ...caCommands,
  ...issuerCommands,
  ...externalCaCommands,
  ...revocationCommands,
  ...kmsCommands,
  ...acmeCommands,
  ...adminCertCommands,
  ...meshCommands,
  ...sharesCommands,
  ...proposalCommands,
].map(gated);

export const commandsByName: ReadonlyMap<string, CliCommand> = new Map(commands.map((c) => [commandName(c), c]));
