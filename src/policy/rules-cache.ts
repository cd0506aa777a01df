import type { Feature } from '../core/feature.ts';
import type { Logger } from '../core/log.ts';
import type { Listen } from '../db/notifications.ts';
import type { Executor } from '../db/schema.ts';
import { listRules, localRuleChanges, POLICY_RULES_CHANNEL, type PolicyRule } from './rules.ts';
import type { Scope } from './scopes.ts';

/** Scopes kept in memory; past this the copy is emptied and refilled on demand. */
const MAX_SCOPES = 10_000;

/**
 * The database's name-policy rules, per scope, kept in this process while it follows the
 * database's notifications: every change to policy_rules notifies (see rules.ts), and a replica
 * that hears one drops its copy. While the listening connection is down nothing is kept, so a
 * replica never decides on rules it may have missed a change to.
 */
class RulesCache {
  private readonly byScope = new Map<Scope, PolicyRule[]>();
  private following = false;
  // Bumped by every change heard: a read that started before it must not fill the copy.
  private generation = 0;

  async rules(db: Executor, scopes: readonly Scope[]): Promise<PolicyRule[]> {
    if (!this.following) return listRules(db, scopes);
    const missing = scopes.filter((s) => !this.byScope.has(s));
    if (missing.length > 0) {
      const generation = this.generation;
      const read = await listRules(db, missing);
      if (generation === this.generation && this.following) {
        if (this.byScope.size + missing.length > MAX_SCOPES) this.byScope.clear();
        for (const s of missing) this.byScope.set(s, []);
        for (const r of read) this.byScope.get(r.scope)?.push(r);
      } else {
        return listRules(db, scopes);
      }
    }
    // listRules orders by scope, then age: the same order, per scope.
    return [...scopes].sort().flatMap((s) => this.byScope.get(s) ?? []);
  }

  changed(): void {
    this.generation++;
    this.byScope.clear();
  }

  async follow(listen: Listen): Promise<() => Promise<void>> {
    const stop = await listen(POLICY_RULES_CHANNEL, {
      message: () => this.changed(),
      ready: () => {
        this.changed();
        this.following = true;
      },
      lost: () => {
        this.following = false;
        this.changed();
      },
    });
    return async () => {
      this.following = false;
      this.changed();
      await stop();
    };
  }
}

const caches = new WeakMap<Executor, RulesCache>();
const cacheFor = (db: Executor): RulesCache => {
  let cache = caches.get(db);
  if (!cache) {
    const created = new RulesCache();
    caches.set(db, created);
    // A change written through this database object applies here at once, before its NOTIFY.
    localRuleChanges.set(db, () => created.changed());
    cache = created;
  }
  return cache;
};

/** Database rules of the given scopes: from memory while this process follows changes, else read. */
export function rulesOf(db: Executor, scopes: readonly Scope[]): Promise<PolicyRule[]> {
  return db.isTransaction ? listRules(db, scopes) : cacheFor(db).rules(db, scopes);
}

/** `keyward serve`: keeps name-policy rules in memory, dropped on every change on any replica. */
export function policyRulesFeature(db: Executor, listen: Listen, log: Logger): Feature {
  return {
    name: 'policy-rules',
    start: () => {
      const following = cacheFor(db)
        .follow(listen)
        .catch((err: unknown) => {
          log.error({ err: (err as Error).message }, 'cannot follow policy rule changes; rules are read per request');
          return async () => {};
        });
      return async () => {
        await (
          await following
        )();
      };
    },
  };
}
