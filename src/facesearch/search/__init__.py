"""Search results and their calibrated meaning (false-match estimates, thresholds).

Public surface: :class:`SearchResult`, :class:`Candidate`, :class:`ProbeFace`,
:func:`search_threshold`, :func:`false_match`.
"""

from facesearch.search.results import Candidate, FalseMatchEstimate, ProbeFace, SearchResult
from facesearch.search.scoring import DEFAULT_SEARCH_FMR, false_match, search_threshold

__all__ = ["DEFAULT_SEARCH_FMR", "Candidate", "FalseMatchEstimate", "ProbeFace", "SearchResult",
           "false_match", "search_threshold"]
