"""Per-buyer stamping of delivered files: PDF (prepared base + incremental update), EPUB
and ZIP (source bytes + a new central directory), and the markers that trace a leak.

media.downloads is the service that uses it; see media/stamping/pdf.py for the design.
"""
