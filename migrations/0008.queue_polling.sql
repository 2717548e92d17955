-- depends: 0007.email
-- Workers find queued jobs by polling (python -m worker --poll-interval), not by a NOTIFY
-- per enqueue. pgqueuer's statement trigger sent one NOTIFY from every transaction that
-- touched the queue, and Postgres serialises the commits of NOTIFYing transactions
-- cluster-wide (one lock held across each commit's WAL flush), so every generate request
-- queued behind every other one and behind the workers' own status updates. Polling
-- costs each idle worker a couple of index lookups a second; under load pgqueuer keeps
-- dequeuing without waiting. (Oban's `insert_trigger: false` makes the same trade.)
drop trigger if exists tg_pgqueuer_changed on pgqueuer;
