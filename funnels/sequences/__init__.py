"""Drip sequences and broadcasts: enrolment, scheduling, sending, tracking.

services (writes), selectors (reads), windows (send-window arithmetic), scheduler (finds
and claims due sends), sending (renders and delivers a claimed batch), rendering,
limits (rate limits and warm-up), tracking (signed click and open links), esp (bounce
and complaint webhooks), receivers (signal connections).
"""
