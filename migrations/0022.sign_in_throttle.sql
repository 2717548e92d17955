-- Throttles that stop abuse without locking the owner out: devices that signed in
-- before (OWASP's device cookie) are counted on their own, each attempt names the
-- account it was for, and signups are counted per client network.
-- depends: 0021.refresh_families

/**
 * Devices that signed in to an account before: the device keeps a random token (a
 * cookie, or the API's device_token), only its SHA-256 is kept here. Failures from a
 * known device count against that device alone, never against the account's other
 * clients. Read only by the sign-in functions.
 */
create table trusted_devices (
  id           uuid primary key default gen_random_uuid(),
  user_id      uuid not null references users (id) on delete cascade,
  token_hash   bytea not null unique,
  created_at   timestamptz not null default now(),
  last_used_at timestamptz not null default now(),
  -- a device not seen for this long is forgotten (app.purge_login_attempts)
  expires_at   timestamptz not null default now() + interval '1 year'
);
create index trusted_devices_user_id_idx on trusted_devices (user_id);

-- the account an attempt was checked against (null for an unknown address): only that
-- account's sign-in can finish it
alter table login_attempts add column user_id uuid references users (id) on delete set null;
-- the known device the attempt came from; null for a client that proved nothing
alter table login_attempts add column device_id uuid references trusted_devices (id) on delete set null;
-- signups are counted here too, keyed by the client's network (/32, or /64 for IPv6)
alter table login_attempts drop constraint login_attempts_kind_check;
alter table login_attempts add constraint login_attempts_kind_check check (kind in ('login', 'reset', 'signup'));
create index login_attempts_device_failures_idx on login_attempts (device_id, attempted_at)
  where kind = 'login' and device_id is not null;
create index login_attempts_signup_ip_idx on login_attempts (client_ip, attempted_at) where kind = 'signup';
