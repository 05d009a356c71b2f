"""Commission rules (issue 6): partner tiers, per-partner payout overrides, performance
bonuses, recruiters, vanity coupon requests and the tracking-number pool."""
