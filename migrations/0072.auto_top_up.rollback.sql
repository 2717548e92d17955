alter table credit_buckets drop column expiry_noticed;
drop table auto_top_up_attempts;
drop table auto_top_up;
