-- The buckets go; the ledger keeps every row (it is append-only, and its opening pairs sum
-- to zero), so each balance is what it was. The reason check stays wide: rows written
-- with the new reasons remain history.
-- depends: 0040.job_notes

alter table credit_ledger drop column bucket_id;
drop table credit_buckets;
