"""Annotation-free hyper-parameter search (issue #11, ALGORITHM.md §8): the one-pass maps
(``Backend.one_pass_token_maps``) and the CLIP weak reward (:mod:`pnp_ovss.search.reward`)."""
