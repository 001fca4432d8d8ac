"""Running calls at the same moment, each in its own thread with its own database
connection: how the tests make double clicks, duplicate deliveries and two workers race."""

import threading

from django.db import connection


def run_at_once(*calls, timeout: float = 120):
    """Start every call in its own thread behind a barrier; return their results in order,
    or raise the first error. Fails if a thread is still running after `timeout` seconds
    (a deadlock)."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list = []

    def run(index, call):
        try:
            barrier.wait(timeout=30)
            results[index] = call()
        except Exception as exc:  # collected and raised below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    if errors:
        raise errors[0]
    return results
