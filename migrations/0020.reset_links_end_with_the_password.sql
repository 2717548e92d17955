-- A password reset or change ends the user's other reset links: a link still unused is
-- revoked, and a reset mail still waiting in the outbox is canceled (never sent).
-- depends: 0012.login_attempts_hold_failures

-- set when a newer password made the link pointless; a revoked link no longer works
alter table email_tokens add column revoked_at timestamptz;
-- set when the mail became pointless before the worker sent it; it is never sent
alter table email_outbox add column canceled_at timestamptz;
