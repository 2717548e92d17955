-- The video list skips deleted videos: newest-first keyset pages over the live ones.
-- depends: 0050.video_titles_and_deletion
-- transactional: false

create index concurrently if not exists jobs_user_live_created_idx
  on jobs (user_id, created_at desc, id desc) where deleted_at is null;
