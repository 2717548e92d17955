-- A spend changes only a bucket's `remaining`. No index may cover or be predicated on it,
-- so that change is a HOT update (the same page, no new index entries; 0075 left room on
-- each page). The buckets' indexes are keyed on what changes once, at expiry:
-- expired_at. One per-account index serves the spend's pick (soonest expiry, then oldest),
-- the read-time expiry sum and a renewal's expiries; one by expiry serves the job.
-- depends: 0075.credit_bucket_fillfactor
-- transactional: false

create index concurrently if not exists credit_buckets_open_idx on credit_buckets (user_id, expires_at, created_at, id)
  where expired_at is null;
create index concurrently if not exists credit_buckets_open_due_idx on credit_buckets (expires_at)
  where expired_at is null and expires_at is not null;
create index concurrently if not exists credit_buckets_unnoticed_idx on credit_buckets (expires_at)
  where not expiry_noticed and expired_at is null and expires_at is not null;
drop index concurrently if exists credit_buckets_spend_order_idx;
drop index concurrently if exists credit_buckets_due_idx;
drop index concurrently if exists credit_buckets_notice_idx;
