drop index concurrently if exists jobs_batch_position_key;
drop index concurrently if exists jobs_api_key_created_idx;
