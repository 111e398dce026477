"""``GridSearchCV`` and ``RandomizedSearchCV``: scikit-learn's searches, with every candidate ×
fold of fastgd's estimators trained at once (``fastgd.fit_many``).

They are scikit-learn's classes (same signatures, attributes and ``cv_results_``); ``fit`` first
trains what it can in one go, then hands the search to scikit-learn, whose fits of those
candidates and folds take the trained estimators instead of training again:

1. The candidates (scikit-learn's ``ParameterGrid`` or ``ParameterSampler``) and the folds (its
   ``check_cv``) are drawn once; the search then runs on exactly those.
2. For each candidate × fold whose estimator is fastgd's ``MLPClassifier`` or ``MLPRegressor``
   with a stochastic solver (not ``lbfgs``), no callbacks, ``verbose=0`` and the numba backend,
   the estimator prepares its fit on the fold's rows as ``fit`` would (input checks, class
   weights, the initial weights, early stopping's split, the stopping rule of ``tol`` and
   ``n_iter_no_change``, ``invscaling``, the adaptive rate), without training.
3. Those fits train through ``fastgd.fit_many`` on the data once (each fit's rows, weights and
   validation rows of it), grouped by dtype, ``max_iter`` and ``shuffle``; with ``n_jobs`` the
   groups are cut into ``n_jobs`` parts run by joblib's active backend
   (``joblib.parallel_backend("dask")`` spreads them over a Dask cluster), each part one
   ``fit_many`` call.
4. scikit-learn's search runs (scoring, ``cv_results_``, ``refit``); its fit of a prepared
   candidate and fold finds the trained estimator (by its parameters and its rows' bytes) and
   takes it; a fit of fastgd's estimators it did not prepare (the refit on all rows, a fold set
   apart because its classes are encoded differently on rows another fold shares) trains through
   ``fit_many`` as it comes, whose kernel is compiled by then (so a cold search compiles no
   other training loop). Anything else (another estimator, ``lbfgs``, fit parameters other than
   ``groups``, sparse ``X``) is trained by scikit-learn's search itself, as before.

Each estimator ends as its own ``fit`` would leave it (to rounding: ``fit_many``'s products sum in
another order), so the scores are the same search's.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import warnings

import numpy as np
import scipy.sparse
from sklearn import model_selection
from sklearn.base import clone, is_classifier
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.utils import check_random_state

from ..training import DivergenceWarning

# While a search runs its scikit-learn part, in this thread: {key: fitted estimator}.
_PREFIT = threading.local()


def _fingerprint(array):
    array = np.ascontiguousarray(array)
    return array.shape, array.dtype.str, hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()


def _key(estimator, X, y):
    params = estimator.get_params(deep=False)
    return type(estimator), repr(sorted(params.items())), _fingerprint(X), _fingerprint(y)


def prefit(estimator, X, y, sample_weight) -> bool:
    """Called first by the estimators' ``fit``: while a search runs its scikit-learn part (in
    this thread), take the fit it trained already (same class, parameters, ``X`` and ``y``) into
    ``estimator``, or train a fit it did not prepare (the refit on all rows, a fold set apart)
    through ``fit_many`` too, whose kernel is compiled by then; returns True when it did either."""
    table = getattr(_PREFIT, "table", None)
    if table is None or sample_weight is not None or scipy.sparse.issparse(X) or y is None:
        return False
    try:
        X_array, y_array = np.asarray(X), np.asarray(y)
        found = table.get(_key(estimator, X_array, y_array))
    except (TypeError, ValueError):
        return False
    if found is not None:
        estimator.__dict__.update(copy.deepcopy(found.__dict__))
        return True
    if not _eligible(estimator) or X_array.ndim != 2 or X_array.dtype.kind not in "biuf":
        return False
    job = _prepare(estimator, X_array, y_array, np.arange(X_array.shape[0]))
    if job is None:
        return False
    X_shared = np.ascontiguousarray(X_array, dtype=job.prepared.net.dtype)
    Y_shared, kept = _shared_targets([job], X_array.shape[0])
    if not kept or not np.array_equal(job.prepared.X, X_shared[job.prepared.rows]):
        return False
    _train(kept, X_shared, Y_shared)  # (job.estimator is ``estimator``: trained in place)
    return True


def _eligible(estimator) -> bool:
    from ._estimators import _BaseMLP

    return (
        isinstance(estimator, _BaseMLP)
        and estimator.solver != "lbfgs"
        and estimator.callbacks is None
        and not estimator.verbose
        and estimator.backend == "numba"
    )


class _Job:
    """One candidate × fold prepared: its estimator, the estimator's prepared fit, its key."""

    def __init__(self, estimator, prepared, key):
        self.estimator, self.prepared, self.key = estimator, prepared, key


def _prepare(estimator, X, y, train):
    """The fit of ``estimator`` on rows ``train`` prepared as its ``fit`` would (nothing trained),
    its rows in ``X``; None where that fit cannot share the data (its converted rows differ)."""
    rows = np.asarray(train, dtype=np.int64)
    X_train, y_train = X[rows], y[rows]
    prepared = estimator._prepare_search_fit(X_train, y_train, rows)
    if prepared is None:
        return None
    return _Job(estimator, prepared, _key(estimator, X_train, y_train))


def _shared_targets(jobs, n):
    """Each group's ``Y`` over all rows, from its jobs' converted targets; the jobs whose targets
    disagree with the others' (another class encoding) are dropped."""
    first = jobs[0].prepared
    Y = np.zeros((n, first.Y.shape[1]), dtype=first.Y.dtype)
    seen = np.zeros(n, dtype=bool)
    kept = []
    for job in jobs:
        prepared = job.prepared
        parts = [(prepared.rows, prepared.Y)]
        if prepared.val_rows is not None:
            parts.append((prepared.val_rows, prepared.fit_options["validation_data"][1]))
        if any(Y_part.shape[1] != Y.shape[1] for _, Y_part in parts):
            continue
        if any(not np.array_equal(Y[rows][seen[rows]], Y_part[seen[rows]]) for rows, Y_part in parts):
            continue
        for rows, Y_part in parts:
            Y[rows] = Y_part
            seen[rows] = True
        kept.append(job)
    return Y, kept


def _train(jobs, X_shared, Y_shared):
    """Train ``jobs`` (one group) through ``fit_many``; returns ``[(key, fitted estimator)]``."""
    from ..many import fit_many

    networks, options = [], []
    for job in jobs:
        prepared = job.prepared
        networks.append(prepared.net)
        options.append(prepared.fit_options)
    stoppings = []
    for option in options:
        stopping = copy.copy(option["early_stopping"])
        stopping.resume = False  # (a fresh rule: the search's fits start from nothing)
        stoppings.append(stopping)
    weights = [job.prepared.sample_weight for job in jobs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DivergenceWarning)
        histories = fit_many(
            networks,
            X_shared,
            Y_shared,
            optimizers=[option["optimizer"] for option in options],
            epochs=options[0]["epochs"],
            batch_size=[option["batch_size"] for option in options],
            shuffle=options[0]["shuffle"],
            rows=[job.prepared.rows for job in jobs],
            sample_weights=None if all(w is None for w in weights) else weights,
            validation_rows=[job.prepared.val_rows for job in jobs],
            early_stopping=stoppings,
            lr_schedule=[option["lr_schedule"] for option in options],
            on_divergence="warn",
        )
    diverged = {getattr(w.message, "network", None) for w in caught if issubclass(w.category, DivergenceWarning)}
    for warning in caught:
        if not issubclass(warning.category, DivergenceWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    fitted = []
    for index, (job, history) in enumerate(zip(jobs, histories)):
        # The rule's state is what the estimator keeps (its next partial_fit resumes it).
        original = job.prepared.fit_options["early_stopping"]
        original.__dict__.update({k: v for k, v in stoppings[index].__dict__.items() if k != "resume"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (ConvergenceWarning: scikit-learn's search reports nothing either)
            job.estimator._stochastic_end(job.prepared, history, index in diverged)
        fitted.append((job.key, job.estimator))
    return fitted


def _parts(groups, n_jobs):
    # Each group cut into about n_jobs parts of consecutive jobs (at least one job a part).
    parts = []
    for X_shared, Y_shared, jobs in groups.values():
        count = max(1, min(len(jobs), n_jobs))
        for part in range(count):
            chunk = jobs[part * len(jobs) // count : (part + 1) * len(jobs) // count]
            if chunk:
                parts.append((chunk, X_shared, Y_shared))
    return parts


class _FitManySearch:
    """What both searches add to scikit-learn's: ``fit`` (see the module's docstring)."""

    def _candidates(self):
        raise NotImplementedError

    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters (scikit-learn's ``fit``): candidates × folds of
        fastgd's estimators trained at once first (see the module's docstring)."""
        saved = self.cv, self.n_jobs, getattr(self, "random_state", None)
        try:
            self._fix_candidates()
            plan = self._plan(X, y, params)
            if plan is None:
                return super().fit(X, y, **params)
            # The search on the folds drawn above, fitting in this thread (the fits it finds).
            self.cv, self.n_jobs = plan[0], None
            _PREFIT.table = plan[1]
            return super().fit(X, y, **params)
        finally:
            _PREFIT.table = None
            self.cv, self.n_jobs = saved[:2]
            if hasattr(self, "random_state"):
                self.random_state = saved[2]

    def _fix_candidates(self):
        """Make the candidates scikit-learn's search draws the ones ``_candidates`` draws."""

    def _plan(self, X, y, params):
        # (candidates, splits, {key: fitted}) or None: nothing to train at once here.
        unknown = set(params) - {"groups"}
        if unknown or y is None or scipy.sparse.issparse(X) or not _is_fastgd(self.estimator):
            return None
        X_array, y_array = np.asarray(X), np.asarray(y)
        if X_array.ndim != 2 or X_array.dtype.kind not in "biuf":
            return None
        candidates = list(self._candidates())
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = [(np.asarray(train), np.asarray(test)) for train, test in cv.split(X, y, params.get("groups"))]
        groups = {}
        for candidate in candidates:
            estimator = clone(self.estimator).set_params(**candidate)
            if not _eligible(estimator):
                continue
            for train, _ in splits:
                try:
                    job = _prepare(clone(estimator), X_array, y_array, train)
                except (ValueError, TypeError):
                    job = None  # scikit-learn's search fits it, and reports its error as it does
                if job is None:
                    continue
                prepared = job.prepared
                key = (prepared.net.dtype.str, prepared.fit_options["epochs"], prepared.fit_options["shuffle"])
                key += (prepared.net.layer_sizes[-1], prepared.net.loss_code)
                groups.setdefault(key, []).append(job)
        if not groups:
            return None
        shared = {}
        for key, jobs in groups.items():
            X_shared = np.ascontiguousarray(X_array, dtype=jobs[0].prepared.net.dtype)
            kept = [job for job in jobs if np.array_equal(job.prepared.X, X_shared[job.prepared.rows])]
            if kept:
                Y_shared, kept = _shared_targets(kept, X_array.shape[0])
                if kept:
                    shared[key] = (X_shared, Y_shared, kept)
        table = {}
        n_jobs = _job_count(self.n_jobs)
        parts = _parts(shared, n_jobs)
        if n_jobs == 1 or len(parts) == 1:
            results = [_train(*part) for part in parts]
        else:
            from joblib import Parallel, delayed

            results = Parallel(n_jobs=self.n_jobs, pre_dispatch=self.pre_dispatch)(
                delayed(_train)(*part) for part in parts
            )
        for result in results:
            table.update(result)
        return splits, table


def _job_count(n_jobs) -> int:
    from joblib import effective_n_jobs

    return max(1, int(effective_n_jobs(n_jobs)))


def _is_fastgd(estimator) -> bool:
    from ._estimators import _BaseMLP

    return isinstance(estimator, _BaseMLP)


class GridSearchCV(_FitManySearch, model_selection.GridSearchCV):
    """scikit-learn's ``sklearn.model_selection.GridSearchCV``, whose fits of fastgd's
    ``MLPClassifier`` and ``MLPRegressor`` train every candidate × fold at once
    (:func:`fastgd.fit_many`).

    The same parameters (``estimator``, ``param_grid``, ``scoring``, ``n_jobs``, ``refit``,
    ``cv``, ``verbose``, ``pre_dispatch``, ``error_score``, ``return_train_score``) and the same
    attributes (``cv_results_`` with scikit-learn's keys, ``best_estimator_``, ``best_score_``,
    ``best_params_``, ``best_index_``, ``scorer_``, ``n_splits_``, ``refit_time_``...) as
    scikit-learn's; see its documentation. What ``fit`` does first is in the user guide
    ("Many models at once") and in ``fastgd.sklearn._search``: fits it cannot train together
    (other estimators, ``solver="lbfgs"``, callbacks, sparse ``X``) are scikit-learn's search's,
    as before. ``n_jobs`` spreads the training over joblib's active backend (Dask's with
    ``joblib.parallel_backend("dask")``).
    """

    def _candidates(self):
        return ParameterGrid(self.param_grid)


class RandomizedSearchCV(_FitManySearch, model_selection.RandomizedSearchCV):
    """scikit-learn's ``sklearn.model_selection.RandomizedSearchCV``, whose fits of fastgd's
    ``MLPClassifier`` and ``MLPRegressor`` train every candidate × fold at once
    (:func:`fastgd.fit_many`).

    The same parameters (``param_distributions``, ``n_iter``, ``random_state`` and those of
    :class:`GridSearchCV`) and attributes as scikit-learn's. The candidates are drawn once from
    ``random_state`` (a ``RandomState`` or None gives one seed for the search, drawn from it).
    """

    def _candidates(self):
        return ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)

    def _fix_candidates(self):
        # A random_state that is not a number draws anew each time: one number drawn from it,
        # for both draws (as scikit-learn's search, the search consumes it once).
        if not isinstance(self.random_state, (int, np.integer)):
            self.random_state = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
