"""
Optimizers and schedules on one problem
=======================================

The same network (64-32-10, tanh, cross-entropy on the digits) from the same initial weights,
trained with each of fastgd's optimizers for 40 epochs of mini-batches of 32. The optimizers
follow PyTorch's update rules and defaults (``torch.optim``), so the same hyper-parameters give
the same trajectory as there. A learning-rate schedule (``fastgd.schedules``) scales the rate
per step inside the compiled loop; here a cosine decay is added to Adam.
"""

import matplotlib.pyplot as plt
import numpy as np

import fastgd
from fastgd import schedules
from fastgd.datasets import load_digits

X_train, X_test, y_train, y_test = load_digits()
start = fastgd.Network([64, 32, 10], activation="tanh", loss="crossentropy", random_state=0)
epochs, batch_size = 40, 32
steps = epochs * -(-len(y_train) // batch_size)

runs = {
    "SGD(lr=0.05)": (fastgd.SGD(lr=0.05), None),
    "SGD(lr=0.05, momentum=0.9, nesterov=True)": (fastgd.SGD(lr=0.05, momentum=0.9, nesterov=True), None),
    "Momentum(lr=0.1)": (fastgd.Momentum(lr=0.1), None),
    "Adagrad(lr=0.05)": (fastgd.Adagrad(lr=0.05), None),
    "RMSprop(lr=1e-3)": (fastgd.RMSprop(lr=1e-3), None),
    "Adam(lr=1e-3)": (fastgd.Adam(lr=1e-3), None),
    "AdamW(lr=1e-3, weight_decay=0.01)": (fastgd.AdamW(lr=1e-3, weight_decay=0.01), None),
    "Adam(lr=3e-3) + Cosine": (fastgd.Adam(lr=3e-3), schedules.Cosine(total_steps=steps)),
}
histories = {}
for label, (optimizer, schedule) in runs.items():
    net = start.copy()  # the same initial weights for every optimizer
    histories[label] = net.fit(
        X_train, y_train, optimizer=optimizer, epochs=epochs, batch_size=batch_size, lr_schedule=schedule
    )
    accuracy = np.mean(net.predict(X_test).argmax(axis=1) == y_test)
    print(f"{label:<44} final loss {histories[label].loss[-1]:.4f}  test accuracy {accuracy:.3f}")

# %%
# The training loss per epoch (each epoch's loss is the mean of its batches' losses, each
# taken before its batch's update).

figure, axis = plt.subplots(figsize=(8, 4.5))
for label, history in histories.items():
    axis.plot(np.arange(1, epochs + 1), history.loss, label=label, linestyle="--" if "Cosine" in label else "-")
axis.set_yscale("log")
axis.set_xlabel("epoch")
axis.set_ylabel("training loss")
axis.legend(fontsize="small")
figure.tight_layout()
