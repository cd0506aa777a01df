import type { CliCommand } from './command.ts';

export const acmeCommands: CliCommand[] = [];
