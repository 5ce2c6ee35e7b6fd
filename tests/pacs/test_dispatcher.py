"""A refusing PACS with the real dispatcher (`manage.py run_dispatcher`): each attempt recorded,
retried after a growing wait, and shown in the job's API answer."""

from __future__ import annotations

import itertools
import time

import pytest

from backend.pacs.models import PacsAttempt, PacsDelivery, PacsDeliveryStatus
from tests.pacs.factories import api_for, succeeded_dicom_job

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_refusing_destination_is_retried_with_backoff_by_the_dispatcher(
    hospital, destination, closed_port, start_dispatcher
):
    dispatcher = start_dispatcher(
        {
            "CXRQ_PACS_RETRY_BASE_SECONDS": "1",
            "CXRQ_PACS_TIMEOUT_SECONDS": "2",
            "CXRQ_PACS_GIVE_UP_SECONDS": "10",
        }
    )
    dispatcher.wait_ready()
    destination(closed_port)
    job, _ = succeeded_dicom_job(hospital)  # its wake-up goes to the dispatcher at commit
    delivery = PacsDelivery.objects.get(job=job)

    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        delivery.refresh_from_db()
        if delivery.status != PacsDeliveryStatus.PENDING:
            break
        time.sleep(0.2)
    assert delivery.status == PacsDeliveryStatus.GAVE_UP, dispatcher.log[-3000:]
    attempts = list(PacsAttempt.objects.filter(delivery=delivery))
    # Waits of 1, 2, 4 s (+-10%): the attempt whose next wait would pass 10 s after the job ended gives up.
    assert len(attempts) >= 3, dispatcher.log[-3000:]
    # The wait between one attempt's end and the next one's start (the first attempt also builds the SR).
    waits = [
        (b.started_at - a.started_at).total_seconds() - a.duration_ms / 1000
        for a, b in itertools.pairwise(attempts)
    ]
    assert waits[0] >= 0.85 and waits[1] >= 1.75 and waits[1] > 1.4 * waits[0], (
        waits,
        dispatcher.log[-3000:],
    )
    assert all(a.error.startswith("connect_error") for a in attempts)
    assert "event=pacs_attempt" in dispatcher.log and "error=connect_error" in dispatcher.log

    (shown,) = api_for(hospital).get(f"/api/v1/jobs/{job.id}").json()["pacs"]
    assert shown["status"] == "gave_up"
    assert [a["number"] for a in shown["attempts"]] == list(range(1, len(attempts) + 1))
    assert all(
        a["dimse_status"] is None and a["error"].startswith("connect_error") for a in shown["attempts"]
    )
