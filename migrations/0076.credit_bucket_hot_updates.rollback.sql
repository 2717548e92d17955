-- transactional: false
create index concurrently if not exists credit_buckets_spend_order_idx on credit_buckets (user_id, expires_at, created_at, id)
  where remaining > 0;
create index concurrently if not exists credit_buckets_due_idx on credit_buckets (expires_at)
  where remaining > 0 and expires_at is not null;
create index concurrently if not exists credit_buckets_notice_idx on credit_buckets (expires_at)
  where remaining > 0 and not expiry_noticed and expires_at is not null;
drop index concurrently if exists credit_buckets_unnoticed_idx;
drop index concurrently if exists credit_buckets_open_due_idx;
drop index concurrently if exists credit_buckets_open_idx;
