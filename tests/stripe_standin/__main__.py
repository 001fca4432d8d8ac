"""Run a stand-in by itself: ``python -m tests.stripe_standin --port 12111``."""

from __future__ import annotations

import argparse
import signal
import threading

from .handle import start_stripe_standin


def main() -> None:
    ap = argparse.ArgumentParser(description="Stripe API stand-in for tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=12111)
    ap.add_argument("--api-key", default=None, help="accept only this key (default: sk_test_*)")
    ap.add_argument("--public-url", default=None, help="base URL of the hosted pages")
    ap.add_argument("--manual-delivery", action="store_true", help="no automatic webhooks")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    standin = start_stripe_standin(
        args.port,
        host=args.host,
        api_key=args.api_key,
        public_url=args.public_url,
        auto_deliver=not args.manual_delivery,
        verbose=args.verbose,
    )
    print(f"Stripe stand-in at {standin.url} (control API under /_control/)", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
