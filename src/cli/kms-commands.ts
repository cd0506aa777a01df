import type { CliCommand } from './command.ts';

export const kmsCommands: CliCommand[] = [];
