"""Accuracy protocols over real datasets, run through the same pipeline users get.

Public surface: :func:`run_lfw` (LFW view 2), :func:`read_pairs`, :func:`tar_at_far`.
"""

from facesearch.eval.lfw import VerificationResult, read_pairs, run_lfw, tar_at_far

__all__ = ["VerificationResult", "read_pairs", "run_lfw", "tar_at_far"]
