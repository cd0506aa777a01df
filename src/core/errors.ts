/**
 * The one error model. Every refusal Keyward makes is a KeywardError of one kind from a closed
 * set; each kind has one ACME problem type (RFC 8555 §6.7, RFC 9773 §5, the profiles draft), one
 * HTTP status and one CLI exit status. Each transport renders it in one place: `app.onError`
 * (src/http/problem.ts) for the HTTP APIs, the CLI's top level (src/cli/render-error.ts), and the
 * admin socket, which carries it to the CLI as JSON (`toJSON` / `KeywardError.fromJSON`).
 *
 * Anything that is not a KeywardError is a bug or an outage on our side: it renders as `internal`
 * and its message is never shown to a remote client (it may name tables, paths or keys).
 */

/** Exit statuses of the CLI: scripts can tell "refused" from "not there" from "try again later". */
export const EXIT = {
  ok: 0,
  refused: 1,
  usage: 2,
  notFound: 3,
  conflict: 4,
  tryLater: 5,
} as const;

interface KindSpec {
  /** The ACME error type, `urn:ietf:params:acme:error:<acme>`. */
  acme: string;
  status: number;
  exit: number;
}

const spec = (acme: string, status: number, exit: number = EXIT.refused): KindSpec => ({ acme, status, exit });

/** The closed set of kinds. Changing a row changes the wire protocol: add, never rename. */
const KINDS = {
  // Requests that are wrong in themselves.
  malformed: spec('malformed', 400),
  usage: spec('malformed', 400, EXIT.usage),
  configuration: spec('serverInternal', 500, EXIT.usage),
  payloadTooLarge: spec('malformed', 413),
  unsupportedMediaType: spec('malformed', 415),
  methodNotAllowed: spec('malformed', 405),
  badNonce: spec('badNonce', 400),
  badSignatureAlgorithm: spec('badSignatureAlgorithm', 400),
  badCSR: spec('badCSR', 400),
  badPublicKey: spec('badPublicKey', 400),
  badRevocationReason: spec('badRevocationReason', 400),
  invalidContact: spec('invalidContact', 400),
  unsupportedContact: spec('unsupportedContact', 400),
  unsupportedIdentifier: spec('unsupportedIdentifier', 400),
  invalidProfile: spec('invalidProfile', 400),
  // Who is asking, and what they may do.
  unauthenticated: spec('unauthorized', 401),
  unauthorized: spec('unauthorized', 403),
  externalAccountRequired: spec('externalAccountRequired', 403),
  userActionRequired: spec('userActionRequired', 403),
  rejectedIdentifier: spec('rejectedIdentifier', 400),
  caa: spec('caa', 403),
  compound: spec('compound', 400),
  // Proving control of an identifier (challenge and authorization errors).
  connection: spec('connection', 400),
  dns: spec('dns', 400),
  incorrectResponse: spec('incorrectResponse', 400),
  tls: spec('tls', 400),
  // State: the thing is missing, or not in a state that allows the request.
  notFound: spec('malformed', 404, EXIT.notFound),
  accountDoesNotExist: spec('accountDoesNotExist', 400, EXIT.notFound),
  notInitialized: spec('serverInternal', 503, EXIT.notFound),
  conflict: spec('malformed', 409, EXIT.conflict),
  alreadyRevoked: spec('alreadyRevoked', 400, EXIT.conflict),
  alreadyReplaced: spec('alreadyReplaced', 409, EXIT.conflict),
  orderNotReady: spec('orderNotReady', 403, EXIT.conflict),
  // Try again later.
  rateLimited: spec('rateLimited', 429, EXIT.tryLater),
  unavailable: spec('serverInternal', 503, EXIT.tryLater),
  internal: spec('serverInternal', 500),
} as const satisfies Record<string, KindSpec>;

export type ErrorKind = keyof typeof KINDS;

export const ERROR_KINDS = Object.keys(KINDS) as ErrorKind[];

export function isErrorKind(value: unknown): value is ErrorKind {
  return typeof value === 'string' && Object.hasOwn(KINDS, value);
}

export const ACME_ERROR_PREFIX = 'urn:ietf:params:acme:error:';

/** What the kind means on each transport. */
export function kindSpec(kind: ErrorKind): Readonly<KindSpec> {
  return KINDS[kind];
}

/** The identifier a subproblem is about (RFC 8555 §6.7.1). */
export interface ProblemIdentifier {
  type: string;
  value: string;
}

export interface Subproblem {
  kind: ErrorKind;
  detail: string;
  identifier: ProblemIdentifier;
}

/** An RFC 7807 problem document as ACME clients read it. */
export interface ProblemDocument {
  type: string;
  detail: string;
  status: number;
  /** The specific code, when it says more than `type` (e.g. notFound, KeyDisabled). */
  code?: string;
  subproblems?: { type: string; detail: string; identifier: ProblemIdentifier }[];
  [member: string]: unknown;
}

export interface KeywardErrorOptions {
  subproblems?: readonly Subproblem[];
  /** Seconds; rendered as Retry-After (RFC 8555 §6.6, RFC 9110 §10.2.3). */
  retryAfter?: number;
  /** HTTP headers that belong to this refusal (e.g. Allow on a 405). */
  headers?: Readonly<Record<string, string>>;
  /** Extra members of the problem document (e.g. `algorithms` for badSignatureAlgorithm). */
  extra?: Readonly<Record<string, unknown>>;
  /** A more specific stable code than the kind (the key hierarchy's codes, written to its audit log). */
  code?: string;
  cause?: unknown;
}

/** The JSON form the admin socket carries. */
export interface KeywardErrorJson {
  kind: ErrorKind;
  code: string;
  detail: string;
  subproblems?: Subproblem[];
  retryAfter?: number;
}

const INTERNAL_DETAIL = 'The server could not process the request';

export class KeywardError extends Error {
  override name = 'KeywardError';
  readonly kind: ErrorKind;
  /** Stable: the kind, or a more specific code of the same kind. */
  readonly code: string;
  readonly subproblems: readonly Subproblem[];
  readonly retryAfter: number | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly extra: Readonly<Record<string, unknown>>;

  constructor(kind: ErrorKind, detail: string, options: KeywardErrorOptions = {}) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.code = options.code ?? kind;
    this.subproblems = options.subproblems ?? [];
    this.retryAfter = options.retryAfter;
    this.headers = options.headers ?? {};
    this.extra = options.extra ?? {};
  }

  get detail(): string {
    return this.message;
  }

  get status(): number {
    return KINDS[this.kind].status;
  }

  get exitCode(): number {
    return KINDS[this.kind].exit;
  }

  toJSON(): KeywardErrorJson {
    return {
      kind: this.kind,
      code: this.code,
      detail: this.message,
      ...(this.subproblems.length > 0 ? { subproblems: [...this.subproblems] } : {}),
      ...(this.retryAfter !== undefined ? { retryAfter: this.retryAfter } : {}),
    };
  }

  /** Rebuilds an error sent as JSON; anything unrecognisable is `internal`. */
  static fromJSON(value: unknown): KeywardError {
    const v = (typeof value === 'object' && value !== null ? value : {}) as Partial<
      Record<keyof KeywardErrorJson, unknown>
    >;
    const kind = isErrorKind(v.kind) ? v.kind : 'internal';
    const detail = typeof v.detail === 'string' ? v.detail : 'the server answered with an unreadable error';
    const subproblems = Array.isArray(v.subproblems) ? (v.subproblems as unknown[]).filter(isSubproblem) : undefined;
    return new KeywardError(kind, detail, {
      ...(typeof v.code === 'string' ? { code: v.code } : {}),
      ...(subproblems ? { subproblems } : {}),
      ...(typeof v.retryAfter === 'number' ? { retryAfter: v.retryAfter } : {}),
    });
  }
}

function isSubproblem(v: unknown): v is Subproblem {
  const s = v as Partial<Subproblem> | null;
  return (
    typeof s === 'object' &&
    s !== null &&
    isErrorKind(s.kind) &&
    typeof s.detail === 'string' &&
    typeof s.identifier?.type === 'string' &&
    typeof s.identifier.value === 'string'
  );
}

const KIND_BY_STATUS: Readonly<Record<number, ErrorKind>> = {
  400: 'malformed',
  401: 'unauthenticated',
  403: 'unauthorized',
  404: 'notFound',
  405: 'methodNotAllowed',
  409: 'conflict',
  413: 'payloadTooLarge',
  415: 'unsupportedMediaType',
  429: 'rateLimited',
  503: 'unavailable',
};

/** The kind for an HTTP status alone (a refusal by a library or a peer that said no more). */
export function kindForStatus(status: number): ErrorKind {
  return KIND_BY_STATUS[status] ?? (status >= 500 ? 'internal' : 'malformed');
}

/** Any thrown value as a KeywardError: itself, or `internal` wrapping it. */
export function asKeywardError(err: unknown): KeywardError {
  if (err instanceof KeywardError) return err;
  return new KeywardError('internal', err instanceof Error ? err.message : String(err), { cause: err });
}

/**
 * One refusal per identifier (RFC 8555 §6.7.1): the top-level type is theirs when they agree,
 * else `compound`.
 */
export function refusalOf(subproblems: readonly Subproblem[], summary: string): KeywardError {
  const kinds = new Set(subproblems.map((s) => s.kind));
  const kind = kinds.size === 1 ? subproblems[0]!.kind : 'compound';
  return new KeywardError(kind, `${summary}: ${subproblems.map((s) => s.detail).join('; ')}`, { subproblems });
}

/** The problem document for an error; an internal error's detail stays on the server. */
export function problemDocument(err: KeywardError): ProblemDocument {
  const { acme, status } = KINDS[err.kind];
  const doc: ProblemDocument = {
    ...err.extra,
    type: ACME_ERROR_PREFIX + acme,
    detail: err.kind === 'internal' ? INTERNAL_DETAIL : err.message,
    status,
  };
  if (err.code !== acme) doc.code = err.code;
  if (err.subproblems.length > 0) {
    doc.subproblems = err.subproblems.map((s) => ({
      type: ACME_ERROR_PREFIX + KINDS[s.kind].acme,
      detail: s.detail,
      identifier: s.identifier,
    }));
  }
  return doc;
}
