import { describe, expect, it } from 'vitest';

import type { Identifier } from '../../src/core/identifiers.ts';
import { decide } from '../../src/policy/names.ts';
import { matches, parsePattern, PatternError } from '../../src/policy/patterns.ts';
import type { PolicyRule } from '../../src/policy/rules.ts';
import type { Scope } from '../../src/policy/scopes.ts';

let n = 0;
function rule(scope: Scope, effect: 'allow' | 'deny', text: string): PolicyRule {
  return { id: `r${++n}`, scope, effect, ...parsePattern(text), source: 'database' };
}
const dns = (value: string): Identifier => ({ type: 'dns', value });
const ip = (value: string): Identifier => ({ type: 'ip', value });
const uri = (value: string): Identifier => ({ type: 'uri', value });
const email = (value: string): Identifier => ({ type: 'email', value });

function cover(text: string, id: Identifier): boolean {
  const p = parsePattern(text);
  return p.kind === id.type && matches(p.kind, p.pattern, id.value);
}

describe('rule patterns: each kind matches what it should and nothing else', () => {
  it('infers the kind and canonicalises', () => {
    expect(parsePattern('*.svc.cluster.local')).toEqual({ kind: 'dns', pattern: '*.svc.cluster.local' });
    expect(parsePattern('Payments.Internal.')).toEqual({ kind: 'dns', pattern: 'payments.internal' });
    expect(parsePattern('10.0.0.0/8')).toEqual({ kind: 'ip', pattern: '10.0.0.0/8' });
    expect(parsePattern('192.0.2.7')).toEqual({ kind: 'ip', pattern: '192.0.2.7/32' });
    expect(parsePattern('spiffe://prod.example/ns/*/sa/*').kind).toBe('uri');
    expect(parsePattern('@Example.COM')).toEqual({ kind: 'email', pattern: '@example.com' });
    expect(parsePattern('dns:*.internal')).toEqual({ kind: 'dns', pattern: '*.internal' });
    for (const bad of [
      '',
      'not a name',
      '10.0.0.0/33',
      'ip:foo',
      'uri:nope',
      '@',
      'a@b@',
      '*.',
      'email:x@*.example.com',
    ]) {
      expect(() => parsePattern(bad), bad).toThrow(PatternError);
    }
  });

  it('dns: exact names and *.suffix at any depth, never the bare suffix or look-alikes', () => {
    expect(cover('payments.internal', dns('payments.internal'))).toBe(true);
    expect(cover('payments.internal', dns('api.payments.internal'))).toBe(false);
    expect(cover('payments.internal', dns('payments.internal.evil'))).toBe(false);
    expect(cover('*.svc.cluster.local', dns('api.pay.svc.cluster.local'))).toBe(true);
    expect(cover('*.svc.cluster.local', dns('x.svc.cluster.local'))).toBe(true);
    expect(cover('*.svc.cluster.local', dns('svc.cluster.local'))).toBe(false);
    expect(cover('*.svc.cluster.local', dns('evilsvc.cluster.local'))).toBe(false);
  });

  it('ip: CIDR membership per family', () => {
    expect(cover('10.0.0.0/8', ip('10.20.30.40'))).toBe(true);
    expect(cover('10.0.0.0/8', ip('11.0.0.1'))).toBe(false);
    expect(cover('fd00::/8', ip('fd12::1'))).toBe(true);
    expect(cover('fd00::/8', ip('10.0.0.1'))).toBe(false);
    expect(cover('192.0.2.7', ip('192.0.2.7'))).toBe(true);
    expect(cover('192.0.2.7', ip('192.0.2.8'))).toBe(false);
  });

  it('uri: * is one path segment (never . or ..), ** anything', () => {
    const p = 'spiffe://prod.example/ns/*/sa/*';
    expect(cover(p, uri('spiffe://prod.example/ns/pay/sa/api'))).toBe(true);
    expect(cover(p, uri('spiffe://prod.example/ns/pay/extra/sa/api'))).toBe(false);
    expect(cover(p, uri('spiffe://prod.example/ns/../sa/api'))).toBe(false);
    expect(cover(p, uri('spiffe://staging.example/ns/pay/sa/api'))).toBe(false);
    expect(cover(p, uri('spiffe://prod.example/ns/pay/sa/api/more'))).toBe(false);
    expect(cover('spiffe://prod.example/**', uri('spiffe://prod.example/a/b/c'))).toBe(true);
    expect(cover('spiffe://prod.example/ns.x/*', uri('spiffe://prod.example/nsAx/y'))).toBe(false);
  });

  it('email: @domain, @*.domain and exact mailboxes', () => {
    expect(cover('@example.com', email('ops@example.com'))).toBe(true);
    expect(cover('@example.com', email('ops@sub.example.com'))).toBe(false);
    expect(cover('@*.example.com', email('ops@sub.example.com'))).toBe(true);
    expect(cover('ops@example.com', email('ops@EXAMPLE.com'))).toBe(true);
    expect(cover('ops@example.com', email('dev@example.com'))).toBe(false);
  });
});

describe('decide: deny wins, allow rules narrow per scope', () => {
  const rules = [
    rule('global', 'allow', '*.internal'),
    rule('global', 'allow', '*.svc.cluster.local'),
    rule('global', 'deny', 'secrets.internal'),
    rule('global', 'allow', '10.0.0.0/8'),
    rule('account:a1', 'allow', 'payments.internal'),
    rule('account:a1', 'deny', '10.9.0.0/16'),
    rule('eab:k1', 'deny', 'spiffe://prod.example/ns/kube-system/**'),
  ];

  it('reports one decision per identifier, naming the refusing rule', () => {
    const r = decide(
      rules,
      [dns('api.internal'), dns('secrets.internal'), dns('example.com'), ip('10.1.2.3')],
      {},
      'allow',
    );
    expect(r.allowed).toBe(false);
    expect(r.decisions.map((d) => d.allowed)).toEqual([true, false, false, true]);
    const denied = r.decisions[1]!;
    expect(!denied.allowed && denied.rule?.pattern).toBe('secrets.internal');
    expect(!denied.allowed && denied.reason).toContain('deny dns secrets.internal (global');
    const unmatched = r.decisions[2]!;
    expect(!unmatched.allowed && unmatched.rule).toBeUndefined();
    expect(!unmatched.allowed && unmatched.reason).toContain('no allow rule of scope global');
  });

  it('a deny reaches a wildcard that would cover the denied name', () => {
    const r = decide(rules, [dns('*.internal')], {}, 'allow');
    expect(r.decisions[0]!.allowed).toBe(false);
  });

  it('account rules narrow the global ones for that account only', () => {
    const a1 = decide(
      rules,
      [dns('payments.internal'), dns('api.internal'), ip('10.9.1.1'), ip('10.8.1.1')],
      { accountId: 'a1' },
      'allow',
    );
    expect(a1.decisions.map((d) => d.allowed)).toEqual([true, false, false, true]);
    const a2 = decide(
      rules,
      [dns('payments.internal'), dns('api.internal'), ip('10.9.1.1')],
      { accountId: 'a2' },
      'allow',
    );
    expect(a2.allowed).toBe(true);
  });

  it('EAB-scoped denies apply to that binding; deny wins over a matching allow', () => {
    const withAllow = [...rules, rule('global', 'allow', 'spiffe://prod.example/**')];
    const id = uri('spiffe://prod.example/ns/kube-system/sa/x');
    expect(decide(withAllow, [id], { eabKid: 'k1' }, 'allow').allowed).toBe(false);
    expect(decide(withAllow, [id], { eabKid: 'k2' }, 'allow').allowed).toBe(true);
  });

  it('types without allow rules follow the default action', () => {
    expect(decide(rules, [email('a@b.example')], {}, 'allow').allowed).toBe(true);
    const closed = decide(rules, [email('a@b.example')], {}, 'deny');
    expect(closed.allowed).toBe(false);
    expect(!closed.decisions[0]!.allowed && closed.decisions[0]!.scope).toBe('default');
  });
});
