/** Tables of the ACME front end (migration 0003 and later); merged into Database. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface AcmeTables {}
