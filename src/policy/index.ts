// The issuance policy API for the ACME front end and the mesh flows.
export {
  decide,
  evaluateNames,
  type NameDecision,
  type PolicyEvaluation,
  policyRefusal,
  type PolicySettings,
} from './names.ts';
export { parsePattern, PatternError } from './patterns.ts';
export {
  consume,
  type CounterReading,
  countersOf,
  countHit,
  countHits,
  countHitsOf,
  type HitsOfRule,
  judgeCounters,
  parseCounters,
  peek,
  pruneRateLimits,
  RateLimiter,
  type RateLimitName,
  type RateLimitResult,
  type RateLimitRule,
  type RateLimitSettings,
  readCounters,
  underLimit,
} from './rate-limits.ts';
export { addRule, configRules, describeRule, listRules, type PolicyRule, removeRule } from './rules.ts';
export { parseScope, type PolicySubject, type Scope, scopesOf } from './scopes.ts';
