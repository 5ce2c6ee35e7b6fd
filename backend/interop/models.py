"""A job's report as it was built once: the encoded bytes, sealed like the return path's PHI.

Building a DICOM SR takes a few hundred milliseconds of CPU in highdicom; serving it again from
here takes a read and an AES-GCM open (store.py). The row hangs off what it was built from, so it
goes when they go, whichever path deletes them:
- the result (a deleted job's result row is deleted: the report with it);
- the return path, for a report of a DICOM-sourced job (it carries the patient's name, ID and
  accession: when the return path's PHI is forgotten, after delivery or with the image, so is
  every copy of it here).
"""

from __future__ import annotations

import uuid

from django.db import models


class ReportKind(models.TextChoices):
    SR = "sr", "DICOM SR"
    FHIR = "fhir", "FHIR DiagnosticReport"


class StoredReport(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    result = models.ForeignKey("jobs.JobResult", on_delete=models.CASCADE, related_name="stored_reports")
    return_path = models.ForeignKey(
        "dicomnet.ReturnPath",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="stored_reports",
    )
    kind = models.CharField(max_length=8, choices=ReportKind.choices)
    # What it was built from (store.py `_inputs`): another value means another report.
    inputs = models.CharField(max_length=64)
    # phi.py's layout (version, key id, nonce, ciphertext and tag), bound to the job and kind.
    sealed = models.BinaryField()
    key_id = models.CharField(max_length=16, help_text="Which CXRQ_PHI_KEY sealed it (rotation).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["result", "kind"], name="interop_one_report_per_kind")]

    def __str__(self) -> str:
        return f"{self.kind} of {self.result_id}"
