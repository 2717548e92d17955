-- Checks the existing rows against 0050's title constraint, in a transaction of its own:
-- VALIDATE takes a lock that lets reads and writes go on (0050 added it NOT VALID).
-- depends: 0050.video_titles_and_deletion

alter table jobs validate constraint jobs_title_length;
