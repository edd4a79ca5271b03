"""Strategies beyond greedy / sampling / beam: contrastive search, DoLa, contrastive decoding, MBR.

Each module is one strategy `(model, input_ids, attention_mask, params, *, generator, tokenizer) ->
GenerationResult`, built on loop.py's and cache.py's primitives; generate.py is the only dispatch.
"""
