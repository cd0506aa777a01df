/** The structured logger every layer writes to (pino; created in src/http/log.ts). */
export type { Logger } from 'pino';
