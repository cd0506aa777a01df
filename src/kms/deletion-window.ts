/** How long a scheduled deletion waits (days): long enough to notice a mistake, short enough to finish. */
export const MIN_DELETION_DAYS = 7;
export const MAX_DELETION_DAYS = 30;
