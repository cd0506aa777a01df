// The issuance policy API for the ACME front end and the mesh flows.
export { evaluateNames, decide, identifiersOf, refusalSummary, type Identifier, type NameDecision, type PolicyEvaluation, type PolicySettings } from './names.ts';
export { addRule, removeRule, listRules, configRules, describeRule, type PolicyRule } from './rules.ts';
export { parseScope, scopesOf, type PolicySubject, type Scope } from './scopes.ts';
export { parsePattern, PatternError } from './patterns.ts';
export { consume, peek, pruneRateLimits, RateLimiter, type RateLimitName, type RateLimitResult, type RateLimitRule, type RateLimitSettings } from './rate-limits.ts';
