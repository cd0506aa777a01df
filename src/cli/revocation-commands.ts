import type { CliCommand } from './command.ts';

export const revocationCommands: CliCommand[] = [];
