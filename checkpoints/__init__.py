"""Trained worlds that ship with worldplay, installed as the package ``worldplay.worlds``.

``worldplay play`` with no checkpoint opens ``boxing/``; see docs/evaluation.md for how it was trained.
"""
