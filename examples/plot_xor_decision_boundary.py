"""
XOR's decision boundary as it trains
====================================

The four XOR points cannot be separated by one line; a network with a hidden layer of four
units learns a boundary that bends around them. A callback records the parameters every few
epochs while the whole fit runs as one compiled call (the callback is visited from inside it),
and the boundary of each recorded epoch is drawn afterwards.
"""

import matplotlib.pyplot as plt
import numpy as np

import fastgd
from fastgd.datasets import xor

X, y = xor()
net = fastgd.Network(
    [2, 4, 1], activation="tanh", output_activation="sigmoid", loss="binary_crossentropy", random_state=0
)

# %%
# A callback is a function ``f(epoch, history, network)``; ``f.every`` says how often it runs.
# It copies the flat parameter buffer (the network's own buffer changes as training goes on).

snapshots = {0: net.flat_parameters.copy()}


def record(epoch, history, network):
    snapshots[epoch] = network.flat_parameters.copy()


record.every = 25
history = net.fit(X, y, optimizer=fastgd.Adam(lr=0.05), epochs=300, callbacks=[record])
print(history)
print("outputs:", net.predict(X).ravel().round(3))

# %%
# Draw the network's output over the plane for a few of the recorded epochs. A copy of the
# network takes each snapshot's parameters (``flat_parameters`` is writable).

grid = np.linspace(-0.5, 1.5, 121)
xx, yy = np.meshgrid(grid, grid)
points = np.column_stack([xx.ravel(), yy.ravel()])
shown = [0, 25, 75, 150, 300]
figure, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.3), sharey=True)
probe = net.copy()
for axis, epoch in zip(axes, shown):
    probe.flat_parameters[...] = snapshots[epoch]
    surface = probe.predict(points).reshape(xx.shape)
    axis.contourf(xx, yy, surface, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
    axis.contour(xx, yy, surface, levels=[0.5], colors="black", linewidths=1.5)
    axis.scatter(X[:, 0], X[:, 1], c=y.ravel(), cmap="RdBu_r", edgecolors="black", s=80, vmin=0, vmax=1)
    loss = probe.loss(X, y)
    axis.set_title(f"epoch {epoch}\nloss {loss:.3f}")
    axis.set_xlabel("x1")
axes[0].set_ylabel("x2")
figure.tight_layout()
