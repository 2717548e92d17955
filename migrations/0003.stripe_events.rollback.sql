drop table stripe_events;
