-- Top-up packs: credits bought once (Checkout in payment mode, or an off-session
-- PaymentIntent for auto top-up), granted in a bucket that expires 12 months after the
-- purchase, and taken back (what is left of it) when the charge is refunded or disputed.
-- depends: 0070.credit_buckets

/** The packs on sale, like `plans`. Everyone may read them; prices come from the environment (STRIPE_PRICE_PACK_<N>). */
create table credit_packs (
  pack            text primary key check (pack ~ '^[a-z0-9_]{1,40}$'),
  name            text not null,
  credits         integer not null check (credits > 0),
  price_cents     integer not null check (price_cents > 0),
  -- Stripe's one-time price; a pack without one is not on sale
  stripe_price_id text unique,
  sort_order      integer not null default 0
);
insert into credit_packs (pack, name, credits, price_cents, sort_order) values
  ('pack_10', '10 credits', 10, 500, 1),
  ('pack_50', '50 credits', 50, 2000, 2),
  ('pack_200', '200 credits', 200, 7000, 3);

/** One paid pack: what was bought, the payment behind it, and the bucket it filled. Each user sees only their own; written only by service functions. */
create table pack_purchases (
  id                  uuid primary key default gen_random_uuid(),
  user_id             uuid not null references users (id),
  pack                text not null references credit_packs (pack),
  credits             integer not null check (credits > 0),
  amount_cents        integer not null check (amount_cents >= 0),
  -- the Checkout Session that sold it (null for an auto top-up)
  checkout_session_id text unique,
  payment_intent_id   text unique,
  bucket_id           uuid not null references credit_buckets (id),
  -- the charge's refunded total so far, and the credits those refunds asked back
  refunded_cents      integer not null default 0,
  refund_credits      integer not null default 0,
  disputed_at         timestamptz,
  created_at          timestamptz not null default now(),
  check (checkout_session_id is not null or payment_intent_id is not null)
);
create index pack_purchases_user_idx on pack_purchases (user_id, created_at);
create index pack_purchases_bucket_idx on pack_purchases (bucket_id);
create index pack_purchases_pack_idx on pack_purchases (pack);
