update plans set features = features - 'rate_limit_per_minute';
drop table if exists rate_limit_windows;
