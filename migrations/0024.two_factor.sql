-- Two-factor sign-in: a TOTP secret per user who turns it on, ten single-use recovery
-- codes (hashed), and the sign-ins whose password checked out and which wait for the
-- second factor. Read only by the identity functions; the web role reads none of it.
-- depends: 0023.safe_mail

/** A user's TOTP second factor. */
create table two_factor (
  user_id    uuid primary key references users (id) on delete cascade,
  -- base32 shared secret, as the authenticator app holds it
  secret     text not null check (secret ~ '^[A-Z2-7]{32}$'),
  created_at timestamptz not null default now(),
  -- null while enrolment waits for a first code from the app; sign-in asks for codes once set
  enabled_at timestamptz,
  -- the newest 30-second time step whose code was accepted: each code works once
  last_step  bigint
);

/** Single-use recovery codes for when the authenticator is lost. Only a SHA-256 is kept. */
create table recovery_codes (
  id        uuid primary key default gen_random_uuid(),
  user_id   uuid not null references users (id) on delete cascade,
  code_hash bytea not null unique,
  used_at   timestamptz
);
create index recovery_codes_user_id_idx on recovery_codes (user_id);

/** A sign-in whose password checked out, waiting (5 minutes, 5 tries) for the second factor. */
create table login_challenges (
  id                uuid primary key default gen_random_uuid(),
  user_id           uuid not null references users (id) on delete cascade,
  token_hash        bytea not null unique,
  -- the login attempt it finishes, and what login_succeeded needs to finish it
  attempt_id        bigint not null,
  session_version   integer not null,
  new_password_hash text,
  new_device_hash   bytea,
  created_at        timestamptz not null default now(),
  expires_at        timestamptz not null default now() + interval '5 minutes',
  failures          integer not null default 0,
  used_at           timestamptz
);
create index login_challenges_user_id_idx on login_challenges (user_id);
