"""Writes, by concern. Import the module you need: `from backend.jobs.services import claims`.

intake.py       upload -> job: validation, dedup, Idempotency-Key, backpressure
claims.py       a worker claims a batch, then stores, fails, retries later or releases it
leases.py       lease renewal, the reaper of lost workers' jobs, the sweeper of lost wake-ups
operators.py    requeue and fail by hand
workers.py      worker heartbeats and sign-off
transitions.py  the two guarded moves every service uses: back to the queue, or to an end
"""
