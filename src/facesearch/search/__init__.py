"""Search results and their calibrated meaning (false-match estimates, thresholds).

Public surface: :class:`SearchResult`, :class:`Candidate`, :class:`ProbeFace`,
:func:`search_threshold`, :func:`false_match`, :func:`verify_faces` (1:1).
"""

from facesearch.search.results import Candidate, FalseMatchEstimate, ProbeFace, SearchResult
from facesearch.search.scoring import false_match, rate_words, search_threshold
from facesearch.search.verify import VerifyResult, pick_face, verify_faces, verify_threshold

__all__ = ["Candidate", "FalseMatchEstimate", "ProbeFace", "SearchResult", "VerifyResult",
           "false_match", "rate_words", "pick_face", "search_threshold", "verify_faces", "verify_threshold"]
