"""
The scikit-learn drop-in in a grid search
=========================================

``fastgd.sklearn.MLPClassifier`` takes every parameter of scikit-learn's ``MLPClassifier``
with its meaning, so a ``GridSearchCV`` written for scikit-learn runs unchanged with the one
import line swapped::

    # from sklearn.neural_network import MLPClassifier
    from fastgd.sklearn import MLPClassifier

Here both estimators run the same small search (activation x solver, 3 folds, on the digits);
the bar chart shows each search's time and the table each setting's mean cross-validated
accuracy. The search is kept small so that the documentation builds quickly: the times are
those of the machine that built this page, and of a handful of short fits.
"""

import time
import warnings

import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier

from fastgd.sklearn import MLPClassifier as FastgdMLPClassifier

X, y = load_digits(return_X_y=True)
grid = {"activation": ["relu", "tanh"], "solver": ["sgd", "adam"]}
searches, seconds = {}, {}
for name, estimator in (("scikit-learn", SklearnMLPClassifier), ("fastgd", FastgdMLPClassifier)):
    search = GridSearchCV(estimator(hidden_layer_sizes=(64,), max_iter=40, random_state=0), grid, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 40 epochs: the search is kept short
        start = time.perf_counter()
        search.fit(X, y)
        seconds[name] = time.perf_counter() - start
    searches[name] = search
    print(f"{name}: {seconds[name]:.2f} s")

# %%
# Each setting's mean accuracy over the folds, side by side. With the same ``random_state``
# both start from the same initial weights; fastgd shuffles the mini-batches with its own
# generator, so the trajectories (and the accuracies, a little) differ.

print(f"{'setting':<12} {'scikit-learn':>12} {'fastgd':>8}")
for index, params in enumerate(searches["fastgd"].cv_results_["params"]):
    label = f"{params['activation']}/{params['solver']}"
    sk, fg = (searches[name].cv_results_["mean_test_score"][index] for name in ("scikit-learn", "fastgd"))
    print(f"{label:<12} {sk:>12.4f} {fg:>8.4f}")

# %%
# The time of each search (its ``fit``: 4 settings x 3 folds, and the refit of the best).

figure, axis = plt.subplots(figsize=(6, 2.6))
names = list(seconds)
bars = axis.barh(names, [seconds[name] for name in names], color=["C7", "C0"])
for bar, name in zip(bars, names):
    axis.annotate(f" {seconds[name]:.2f} s", (bar.get_width(), bar.get_y() + bar.get_height() / 2), va="center")
axis.set_xlabel("GridSearchCV.fit, seconds (this build's machine)")
axis.set_xlim(right=max(seconds.values()) * 1.3)
axis.set_title(f"scikit-learn's time / fastgd's: {seconds['scikit-learn'] / seconds['fastgd']:.1f}x")
figure.tight_layout()
