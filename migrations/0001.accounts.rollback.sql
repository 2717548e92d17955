drop table login_attempts;
drop table refresh_tokens;
drop table api_keys;
drop table subscriptions;
drop table users;
drop table plans;
