"""
Digits: validation and early stopping
=====================================

A 64-64-10 network on the 8x8 handwritten digits that ship with fastgd. The last 10 % of the
training rows are held out (``validation_split``, as Keras does); after every epoch the compiled
loop computes the validation loss and accuracy and applies the early-stopping rule, and at the
end the parameters of the best epoch are put back. The whole fit is one compiled call.
"""

import matplotlib.pyplot as plt
import numpy as np

import fastgd
from fastgd.datasets import load_digits

X_train, X_test, y_train, y_test = load_digits()
net = fastgd.Network([64, 64, 10], activation="tanh", loss="crossentropy", random_state=0)
history = net.fit(
    X_train,
    y_train,
    optimizer=fastgd.Adam(lr=1e-3),
    epochs=300,
    batch_size=32,
    validation_split=0.1,
    early_stopping=True,
    patience=15,
)

accuracy = np.mean(net.predict(X_test).argmax(axis=1) == y_test)
print(f"stopped after epoch {history.stopped_epoch}, best epoch {history.best_epoch}; test accuracy {accuracy:.3f}")

# %%
# ``fastgd.plot_history`` draws the curves a ``History`` holds: training and validation loss
# (the best epoch marked) and the validation accuracy.

figure = fastgd.plot_history(history, title=f"digits 64-64-10, test accuracy {accuracy:.3f}")

# %%
# The same early stopping with its options spelled out: ``fastgd.callbacks.EarlyStopping`` here
# monitors the validation accuracy (higher is better) instead of the loss, and counts epochs
# without an improvement of at least ``min_delta`` as scikit-learn's ``tol`` and
# ``n_iter_no_change`` do (``rule="no_improvement"``).

net = fastgd.Network([64, 64, 10], activation="tanh", loss="crossentropy", random_state=0)
rule = fastgd.callbacks.EarlyStopping(patience=10, min_delta=1e-4, monitor="val_accuracy", rule="no_improvement")
by_accuracy = net.fit(
    X_train,
    y_train,
    optimizer=fastgd.Adam(lr=1e-3),
    epochs=300,
    batch_size=32,
    validation_split=0.1,
    early_stopping=rule,
)
figure, axis = plt.subplots(figsize=(6, 3.5))
axis.plot(np.arange(1, len(by_accuracy.val_accuracy) + 1), by_accuracy.val_accuracy, label="validation accuracy")
axis.axvline(by_accuracy.best_epoch, color="grey", linestyle=":", label=f"best epoch {by_accuracy.best_epoch}")
axis.set_xlabel("epoch")
axis.set_ylabel("accuracy")
axis.legend()
figure.tight_layout()
print(
    f"monitoring val_accuracy: stopped after epoch {by_accuracy.stopped_epoch}, best "
    f"{max(by_accuracy.val_accuracy):.3f}"
)
