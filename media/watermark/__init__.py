"""Forensic A/B watermarking of HLS video (the DASH-IF / ETSI TS 104 002 scheme).

- mark.py: the B variant's encode (same segments and init segment as A, plus a +2 luma
  shift in one cell of the picture, chosen per file) and the tracer's reference features.
- code.py: each delivery's codeword, Reed–Solomon over GF(16), one bit (A or B) per segment.
- detect.py: align a leaked recording to the lesson, decide A or B per segment.
- trace.py: from a leaked file to a delivery in the ledger, or "cannot decide"/"no match".

The design and its numbers: docs/forensic-watermark.md.
"""
