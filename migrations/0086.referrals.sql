-- Referrals (issue 20 item 6): each verified user's referral code, who signed up through
-- whose link and what it earned, and the card fingerprints Stripe reports for the
-- self-referral check. Written only by the functions in sql/48_referrals.sql.
-- depends: 0085.customer_webhooks

/** A verified user's referral code (made on first use of their link). */
create table referral_codes (
  user_id      uuid primary key references users (id) on delete cascade,
  code         text not null unique check (code ~ '^[a-z0-9]{10}$'),
  created_at   timestamptz not null default now(),
  -- where the owner last fetched their link from: a signup from there soon after is theirs
  last_seen_ip inet,
  last_seen_at timestamptz
);

/** A signup through someone's link, once per referee, and what it earned each side. */
create table referrals (
  id                   uuid primary key default gen_random_uuid(),
  referrer_id          uuid not null references users (id) on delete cascade,
  referee_id           uuid not null unique references users (id) on delete cascade,
  created_at           timestamptz not null default now(),
  -- pending: rewards to come; rewarded: the referrer was paid; refused: the same person
  -- (refused_reason); capped: the referrer had 20 rewards that month already
  status               text not null default 'pending' check (status in ('pending', 'rewarded', 'refused', 'capped')),
  refused_reason       text check (refused_reason in ('same_email', 'same_device', 'same_network',
                                                      'same_payment_method')),
  referee_rewarded_at  timestamptz,
  referrer_rewarded_at timestamptz,
  -- the referee's first paid invoice, which pays the referrer once the hold has passed
  rewarded_invoice     text,
  -- when the referrer's reward is decided: an hour after that invoice, so Stripe's other
  -- events about the payment (the card's fingerprint) have arrived whatever their order
  reward_due_at        timestamptz
);
create index referrals_referrer_idx on referrals (referrer_id, referrer_rewarded_at);

/** Card fingerprints seen on a user's Stripe charges (one card, one fingerprint, whoever holds it). */
create table payment_fingerprints (
  user_id       uuid not null references users (id) on delete cascade,
  fingerprint   text not null check (length(fingerprint) between 1 and 100),
  first_seen_at timestamptz not null default now(),
  primary key (user_id, fingerprint)
);
create index payment_fingerprints_fingerprint_idx on payment_fingerprints (fingerprint);

-- referral credits are a ledger reason of their own (the credit buckets migration may
-- have added it already)
do $$
declare
  allowed text;
begin
  select pg_get_constraintdef(c.oid) into allowed from pg_constraint c
   where c.conrelid = 'credit_ledger'::regclass and c.conname = 'credit_ledger_reason_check';
  if allowed not like '%''referral_grant''%' then
    alter table credit_ledger drop constraint credit_ledger_reason_check;
    execute 'alter table credit_ledger add constraint credit_ledger_reason_check '
            || regexp_replace(allowed, '::text\]\)', '::text, ''referral_grant''::text])') || ' not valid';
    alter table credit_ledger validate constraint credit_ledger_reason_check;
  end if;
end
$$;
