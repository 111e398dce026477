"""
Twenty-five models in one call: a learning-rate x weight-decay map
===================================================================

:func:`fastgd.fit_many` trains many networks at once on one dataset, each with its own
optimizer, rows and validation rows. Here 25 copies of a small digits classifier, one per
(learning rate, weight decay) pair of a 5 x 5 grid, train side by side on the same training
rows in a single call, each validated on the same held-out rows; the heatmap shows each model's
best validation loss. Each model ends as its own ``Network.fit`` would leave it.
"""

import time

import matplotlib.pyplot as plt
import numpy as np

import fastgd
from fastgd.datasets import load_digits

X_train, X_test, y_train, y_test = load_digits()
X, y = np.concatenate([X_train, X_test]).astype(np.float32), np.concatenate([y_train, y_test])
train, held_out = np.arange(len(y_train)), np.arange(len(y_train), len(y))  # rows of X

rates = np.array([3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
decays = np.array([0.0, 1e-4, 1e-3, 1e-2, 1e-1])
pairs = [(rate, decay) for rate in rates for decay in decays]
networks = [
    fastgd.Network([64, 32, 10], activation="relu", loss="crossentropy", dtype="float32", random_state=0) for _ in pairs
]

start = time.perf_counter()
histories = fastgd.fit_many(
    networks,
    X,
    y,
    optimizers=[fastgd.AdamW(lr=rate, weight_decay=decay) for rate, decay in pairs],
    epochs=40,
    batch_size=64,
    rows=[train] * len(pairs),
    validation_rows=[held_out] * len(pairs),
)
seconds = time.perf_counter() - start
best = np.array([min(history.val_loss) for history in histories]).reshape(len(rates), len(decays))

fig, ax = plt.subplots(figsize=(6, 4.5))
image = ax.imshow(best, cmap="viridis_r")
ax.set_xticks(range(len(decays)), [f"{d:g}" for d in decays])
ax.set_yticks(range(len(rates)), [f"{r:g}" for r in rates])
ax.set_xlabel("AdamW weight_decay")
ax.set_ylabel("learning rate")
for i in range(len(rates)):
    for j in range(len(decays)):
        ax.text(j, i, f"{best[i, j]:.3f}", ha="center", va="center", color="white", fontsize=8)
fig.colorbar(image, label="best validation loss")
ax.set_title(f"{len(pairs)} models, one fit_many call ({seconds:.1f} s here)")
fig.tight_layout()
plt.show()

i, j = np.unravel_index(best.argmin(), best.shape)
print(f"best: lr={rates[i]:g}, weight_decay={decays[j]:g}, validation loss {best[i, j]:.4f}")
