"""Training: one shared loop (``loop.py``) and one module per stage."""
