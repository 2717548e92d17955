-- The indexes 0070 and 0072 left out of their transactions, built concurrently so spends
-- and grants go on while they build: the ledger's rows by bucket (a bucket's history, the
-- statement) and the buckets the expiring-soon notice has yet to look at.
-- depends: 0073.credit_bucket_validation
-- transactional: false

create index concurrently if not exists credit_ledger_bucket_id_idx on credit_ledger (bucket_id)
  where bucket_id is not null;
create index concurrently if not exists credit_buckets_notice_idx on credit_buckets (expires_at)
  where remaining > 0 and not expiry_noticed and expires_at is not null;
