"""scikit-learn estimators backed by fastgd: ``MLPClassifier`` and ``MLPRegressor``.

A drop-in for scikit-learn's: ``from fastgd.sklearn import MLPClassifier, MLPRegressor`` in place
of ``from sklearn.neural_network import ...``, nothing else changed (see
``fastgd.sklearn._estimators`` and the user guide's "The scikit-learn drop-in",
``docs/user_guide/sklearn.rst``). Importing this module imports scikit-learn (an optional extra:
``pip install "fastgd[sklearn]"``); ``import fastgd`` alone does not.
"""

from ._estimators import MLPClassifier, MLPRegressor
from ._search import GridSearchCV, RandomizedSearchCV

__all__ = ["MLPClassifier", "MLPRegressor", "GridSearchCV", "RandomizedSearchCV"]
