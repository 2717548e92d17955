-- A note the renderer leaves for the user on a finished job (e.g. "no narration voice
-- speaks Japanese yet"), shown with the job.
-- depends: 0012.login_attempts_hold_failures

alter table jobs add column note text check (length(note) <= 1000);
