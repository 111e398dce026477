"""
Gradient health of a deep sigmoid network
=========================================

Ten hidden layers of 32 units on the digits. Each sigmoid's derivative is at most 1/4, so the
gradient shrinks about fourfold per layer on its way back and the first layers barely learn;
tanh (derivative 1 at 0) with Xavier's scaling and relu with He's keep it level.

``fit(..., track_gradients=True)`` records, inside the compiled loop, per epoch and layer: the
weight gradient's 2-norm (mean over the epoch's steps), the weights' norm, the update ratio and
the share of saturated units; and a ``fastgd.GradientWarning`` names a layer whose gradient is
below 1e-4 times the output layer's (vanishing) or above 1e4 times it (exploding).
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np

import fastgd
from fastgd.datasets import load_digits

X_train, X_test, y_train, y_test = load_digits()
results = {}
for activation, init in (("sigmoid", "xavier_uniform"), ("tanh", "xavier_uniform"), ("relu", "he_uniform")):
    net = fastgd.Network(
        [64] + [32] * 10 + [10],
        activation=activation,
        output_activation="softmax",
        loss="crossentropy",
        init=init,
        random_state=0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fastgd.GradientWarning)
        history = net.fit(
            X_train, y_train, optimizer=fastgd.Adam(lr=1e-3), epochs=30, batch_size=32, track_gradients=True
        )
    accuracy = np.mean(net.predict(X_test).argmax(axis=1) == y_test)
    results[activation] = history, accuracy
    print(
        f"{activation:<8} loss after 30 epochs {history.loss[-1]:.3f}, test accuracy {accuracy:.3f}, "
        f"{len(caught)} gradient warnings"
    )
    for warning in caught[:2]:
        print("   ", warning.message)

# %%
# Each layer's gradient norm in the first epoch, over the output layer's (input layer first),
# and the training loss per epoch.

figure, (norms_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
for activation, (history, accuracy) in results.items():
    first = history.grad_norm[0]
    norms_axis.plot(np.arange(len(first)), first / first[-1], marker="o", label=activation)
    loss_axis.plot(
        np.arange(1, len(history.loss) + 1), history.loss, label=f"{activation} (test accuracy {accuracy:.2f})"
    )
norms_axis.set_yscale("log")
norms_axis.axhline(1e-4, color="grey", linestyle=":", label="vanishing threshold (1e-4)")
norms_axis.set_xlabel("layer (0 = input layer)")
norms_axis.set_ylabel("gradient norm / output layer's, epoch 1")
norms_axis.legend(fontsize="small")
loss_axis.set_yscale("log")
loss_axis.set_xlabel("epoch")
loss_axis.set_ylabel("training loss")
loss_axis.legend(fontsize="small")
figure.tight_layout()

# %%
# ``fastgd.plot_history`` draws the recorded norms too: every layer of the sigmoid network, per
# epoch, on a log scale beside the loss.

figure = fastgd.plot_history(results["sigmoid"][0], title="10 sigmoid hidden layers")
