"""A job's result in the languages hospitals speak: a DICOM Structured Report (sr.py, with an
optional Secondary Capture for viewers without SR) and a FHIR R4 DiagnosticReport (fhir.py).

Both read the same facts (findings.py): the 18 stored probabilities, whether each passes the
model's operating point, the algorithm's identity, and the return path of a DICOM-sourced job
(backend/dicomnet/returnpath.py), which files the result in the sender's study.
"""
