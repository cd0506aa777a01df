import { caCommands } from './ca-commands.ts';
import { commandName, type CliCommand } from './command.ts';

/** Every command that runs against the CA (in-process or through the admin socket). */
export const commands: readonly CliCommand[] = [...caCommands];

export const commandsByName: ReadonlyMap<string, CliCommand> = new Map(commands.map((c) => [commandName(c), c]));
