-- A spend changes only a bucket's `remaining`: leave room on each page so that change can
-- stay on the same page (a HOT update, with no new index entries; 0076 makes sure no index
-- covers or is predicated on `remaining`).
-- depends: 0074.credit_bucket_indexes

alter table credit_buckets set (fillfactor = 70);
