-- transactional: false
drop index concurrently if exists credit_buckets_notice_idx;
drop index concurrently if exists credit_ledger_bucket_id_idx;
