-- credit_ledger keeps accepting 'referral_grant': the ledger is append-only, so rows with
-- that reason cannot be rewritten, and a check they fail could not be restored
drop table payment_fingerprints;
drop table referrals;
drop table referral_codes;
