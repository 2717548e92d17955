drop index concurrently if exists jobs_user_live_created_idx;
