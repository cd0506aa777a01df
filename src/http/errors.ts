import { CsrError } from '../ca/csr.ts';
import { CaError } from '../ca/errors.ts';
import { KmsError } from '../kms/errors.ts';

/** Maps an internal error onto a status and a message safe to show to the caller. */
export function describeError(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof CaError)
    return { status: err.code === 'notFound' ? 404 : 400, code: err.code, message: err.message };
  if (err instanceof CsrError) return { status: 400, code: err.code, message: err.message };
  if (err instanceof KmsError) {
    const status = { NotFound: 404, Sealed: 503, InvalidShare: 400 }[err.code as string] ?? 409;
    return { status, code: err.code, message: err.message };
  }
  return { status: 500, code: 'InternalError', message: err instanceof Error ? err.message : String(err) };
}
