"""Every private scikit-learn name fastgd's estimators use, in one place.

scikit-learn's own estimators validate their parameters with ``sklearn.utils._param_validation``
and their sample weights with ``_check_sample_weight``; fastgd's estimators use the same, so
that the same bad input gets the same error. These names are private to scikit-learn: when a
release moves one, this module is the one place to change, and ``tests/test_sklearn.py``
checks each of them on the installed scikit-learn.
"""

from __future__ import annotations

from sklearn.utils._param_validation import Interval, Options, StrOptions  # noqa: F401
from sklearn.utils.validation import _check_sample_weight

__all__ = ["Interval", "Options", "StrOptions", "check_sample_weight", "validate_parameters"]


def validate_parameters(estimator) -> None:
    """Check ``estimator``'s parameters against its ``_parameter_constraints`` (scikit-learn's
    ``BaseEstimator._validate_params``): an InvalidParameterError (a ValueError and TypeError)
    naming the parameter."""
    estimator._validate_params()


def check_sample_weight(sample_weight, X):
    """``sample_weight`` as scikit-learn checks it (1-D, one per row, finite; None stays None)."""
    if sample_weight is None:
        return None
    return _check_sample_weight(sample_weight, X, ensure_non_negative=True)
