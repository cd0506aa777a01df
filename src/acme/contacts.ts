import { KeywardError } from '../core/errors.ts';

const MAX_CONTACTS = 10;
// RFC 5321 §4.5.3.1: a local part of at most 64 octets, a path of at most 256 (an address of 254).
const MAX_LOCAL = 64;
const MAX_ADDRESS = 254;
// One addr-spec, dot-atom domain; RFC 8555 §7.3 lets servers refuse what they don't support.
const ADDR =
  /^[A-Za-z0-9.!#$%&'*+/=^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;

/** Validates a `contact` array: mailto: only, one plain address each, no hfields, as RFC 8555 §7.3 asks for mailto. */
export function checkContacts(value: unknown): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string'))
    throw new KeywardError('malformed', '"contact" must be an array of strings');
  const contacts = value as string[];
  if (contacts.length > MAX_CONTACTS)
    throw new KeywardError('invalidContact', `At most ${MAX_CONTACTS} contacts are accepted`);
  for (const c of contacts) {
    const m = /^mailto:(.*)$/i.exec(c);
    if (!m)
      throw new KeywardError(
        'unsupportedContact',
        `Contact ${JSON.stringify(c)} is not supported; only mailto: URLs are`,
      );
    const addr = m[1]!;
    if (addr.length > MAX_ADDRESS || addr.indexOf('@') > MAX_LOCAL)
      throw new KeywardError(
        'invalidContact',
        `Contact ${JSON.stringify(c.slice(0, 80))}… is too long (an address has at most ${MAX_ADDRESS} characters, ${MAX_LOCAL} before the @)`,
      );
    if (addr.includes('?'))
      throw new KeywardError('invalidContact', `Contact ${JSON.stringify(c)} must not have header fields`);
    if (addr.includes(',') || addr.includes('%2C') || addr.includes('%2c'))
      throw new KeywardError('invalidContact', `Contact ${JSON.stringify(c)} must hold a single address`);
    if (!ADDR.test(addr))
      throw new KeywardError('invalidContact', `Contact ${JSON.stringify(c)} is not a valid email address`);
  }
  return contacts;
}
