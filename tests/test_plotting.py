"""plot_history writes a PNG of the loss curves."""

import numpy as np
import pytest
from _helpers import regression_data

import fastgd

pytest.importorskip("matplotlib")


def test_plot_history_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    labels = (X[:, 0] > 0).astype(int)
    net = fastgd.Network([4, 6, 2], loss="crossentropy", random_state=0)
    history = net.fit(X, labels, optimizer=fastgd.Adam(0.05), epochs=8, validation_split=0.25, early_stopping=True)
    figure = fastgd.plot_history(history, tmp_path / "curve.png", title="test")
    data = (tmp_path / "curve.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert len(figure.axes) == 2  # loss and validation accuracy
    line = figure.axes[0].lines[0]
    np.testing.assert_array_equal(line.get_ydata(), history.loss)


def test_plot_history_checks_its_input():
    with pytest.raises(TypeError, match="history must be"):
        fastgd.plot_history([1, 2, 3])
    with pytest.raises(ValueError, match="no epochs"):
        fastgd.plot_history(fastgd.History())
    X, y = regression_data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    figure = fastgd.plot_history(net.fit(X, y, epochs=3))
    assert len(figure.axes) == 1
