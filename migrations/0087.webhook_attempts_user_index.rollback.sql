-- transactional: false
drop index concurrently if exists webhook_attempts_user_id_idx;
