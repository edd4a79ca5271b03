"""Speculative decoding: proposers (prompt lookup, a draft model, the target's first layers), exact verification.

The strategy is `strategy.speculative_decode`; this package imports nothing eagerly, because params.py's
validation imports `checks` from here (the strategy imports params.py).
"""
