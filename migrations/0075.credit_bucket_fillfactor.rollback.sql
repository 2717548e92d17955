alter table credit_buckets reset (fillfactor);
