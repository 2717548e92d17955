drop table browser_sessions;
