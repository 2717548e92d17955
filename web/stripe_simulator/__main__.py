"""`python -m web.stripe_simulator`: the simulator as its own process (local test mode).

    python -m web.stripe_simulator --port 12111 --state-file .data/stripe-simulator.json \\
        --price price_starter_local:900:Starter --one-time-price price_pack_10_local:500:"10 credits" --webhook http://127.0.0.1:8000/v1/billing/webhook=whsec_…

It listens on loopback only (it accepts any `sk_test_` key, so it must not be reachable
from elsewhere), prints its base URL on the first line of output, and runs until
SIGINT/SIGTERM. Test hooks are under `/_sim/` (see server.py).
"""
from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import threading

from . import StripeSimulator


def _loopback(host: str) -> str:
    if host == "localhost":
        return host
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{host} is not a loopback address")


def _price(spec: str) -> tuple[str, int, str]:
    try:
        price_id, amount, name = spec.split(":", 2)
        return price_id, int(amount), name
    except ValueError:
        raise argparse.ArgumentTypeError(f"--price wants ID:AMOUNT_IN_CENTS:PRODUCT_NAME, not {spec!r}") from None


def _webhook(spec: str) -> tuple[str, str]:
    url, _, secret = spec.rpartition("=")
    if not url.startswith(("http://", "https://")) or not secret.startswith("whsec_"):
        raise argparse.ArgumentTypeError(f"--webhook wants URL=whsec_SECRET, not {spec!r}")
    return url, secret


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m web.stripe_simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", type=_loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--state-file", help="load state from and save it to this JSON file")
    parser.add_argument("--price", type=_price, action="append", default=[], metavar="ID:AMOUNT:NAME",
                        help="a monthly usd price with this id (repeatable)")
    parser.add_argument("--one-time-price", type=_price, action="append", default=[], metavar="ID:AMOUNT:NAME",
                        help="a one-time usd price with this id, e.g. a credit pack (repeatable)")
    parser.add_argument("--webhook", type=_webhook, action="append", default=[], metavar="URL=SECRET",
                        help="POST every event there, signed with SECRET (repeatable)")
    args = parser.parse_args(argv)
    sim = StripeSimulator(state_file=args.state_file)
    base_url = sim.start(args.host, args.port)
    for price_id, amount, name in args.price:
        sim.ensure_price(price_id, unit_amount=amount, product_name=name)
    for price_id, amount, name in args.one_time_price:
        sim.ensure_price(price_id, unit_amount=amount, product_name=name, interval=None)
    known = {e["url"] for e in sim.objects["webhook_endpoint"].values()}
    for url, secret in args.webhook:
        if url not in known:  # a restart with the same state file keeps its endpoints
            sim.add_webhook_endpoint(url, secret)
    print(base_url, flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    sim.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
