"""save / load: identical predictions, bitwise-identical resumed training, clear errors."""

import json
import zipfile

import numpy as np
import pytest
from _helpers import regression_data

import fastgd
from fastgd.optimizers import OPTIMIZERS_UNDER_TEST


@pytest.mark.parametrize("cls, options", [OPTIMIZERS_UNDER_TEST[i] for i in (1, 3, 8, 12, 14, 17)], ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_resume_equals_uninterrupted_training(tmp_path, cls, options, dtype):
    X, y = regression_data(n=60)
    uninterrupted = fastgd.Network([3, 7, 2], activation="tanh", dtype=dtype, random_state=4)
    interrupted = uninterrupted.copy()
    uninterrupted.fit(X, y, optimizer=cls(**options), epochs=5, batch_size=16)

    interrupted.fit(X, y, optimizer=cls(**options), epochs=2, batch_size=16)
    interrupted.save(tmp_path / "net.npz")
    loaded = fastgd.load(tmp_path / "net.npz")
    np.testing.assert_array_equal(loaded.predict(X), interrupted.predict(X))
    assert loaded.optimizer == interrupted.optimizer and loaded.optimizer is not interrupted.optimizer
    loaded.fit(X, y, epochs=3, batch_size=16)  # optimizer=None continues the loaded one

    np.testing.assert_array_equal(loaded.flat_parameters, uninterrupted.flat_parameters)
    for name, state in uninterrupted.optimizer_state.items():
        np.testing.assert_array_equal(loaded.optimizer_state[name], state)
    assert loaded.history.loss == uninterrupted.history.loss
    assert loaded.epochs_trained == 5 and loaded.dtype == np.dtype(dtype)


def test_a_fresh_network_round_trips_and_can_change_backend(tmp_path):
    net = fastgd.Network([4, 3, 3], loss="crossentropy", random_state=1)
    net.save(tmp_path / "fresh.npz")
    loaded = fastgd.load(tmp_path / "fresh.npz", backend="numpy")
    assert loaded.backend == "numpy" and loaded.optimizer is None and loaded.loss_name == "crossentropy"
    np.testing.assert_array_equal(loaded.flat_parameters, net.flat_parameters)


def test_the_file_holds_no_pickles(tmp_path):
    net = fastgd.Network([2, 2, 1], random_state=0)
    net.fit(np.eye(2), np.ones((2, 1)), optimizer=fastgd.Adam(), epochs=2, validation_split=0.5)
    net.save(tmp_path / "net.npz")
    with np.load(tmp_path / "net.npz", allow_pickle=False) as data:
        assert all(data[key].dtype != object for key in data.files)
        description = json.loads(data["description"].tobytes())
    assert description["optimizer"]["name"] == "adam" and description["format_version"] == 1
    assert len(description["history"]["val_loss"]) == 2


def corrupt(tmp_path, edit):
    net = fastgd.Network([3, 4, 2], random_state=0)
    net.fit(*regression_data(), optimizer=fastgd.Adam(), epochs=1)
    path = tmp_path / "net.npz"
    net.save(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    edit(arrays)
    np.savez(path, **arrays)
    return path


def set_description(arrays, **changes):
    description = json.loads(arrays["description"].tobytes())
    description.update(changes)
    arrays["description"] = np.frombuffer(json.dumps(description).encode(), dtype=np.uint8)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda a: a.pop("optimizer_state"), r"missing \['optimizer_state'\]"),
        (lambda a: set_description(a, format_version=99), "format version 99"),
        (lambda a: set_description(a, format="something-else"), "not a fastgd network file"),
        (lambda a: a.update(parameters=a["parameters"][:-1]), "parameters has shape"),
        (lambda a: a.update(optimizer_state=a["optimizer_state"][:1]), "optimizer_state has shape"),
        (lambda a: a.update(description=np.frombuffer(b"{not json", dtype=np.uint8)), "unreadable description"),
    ],
)
def test_damaged_files_give_clear_errors(tmp_path, edit, words):
    with pytest.raises(ValueError, match=words):
        fastgd.load(corrupt(tmp_path, edit))


def test_a_truncated_file_gives_a_clear_error(tmp_path):
    net = fastgd.Network([3, 4, 2], random_state=0)
    path = tmp_path / "net.npz"
    net.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        fastgd.load(path)
    assert zipfile.is_zipfile(path) is False


def test_save_replaces_the_file_atomically(tmp_path):
    net = fastgd.Network([3, 4, 2], random_state=0)
    path = tmp_path / "net.npz"
    net.save(path)
    net.save(path)  # over an existing file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]  # no temporary left behind


def test_partial_fit_is_one_epoch_and_warm_start_false_starts_over():
    X, y = regression_data()
    net = fastgd.Network([3, 4, 2], random_state=0)
    initial = net.flat_parameters.copy()
    adam = fastgd.Adam(0.01)
    net.partial_fit(X, y, optimizer=adam, batch_size=10)
    net.partial_fit(X, y, batch_size=10)
    assert net.epochs_trained == 2 and net.optimizer_steps == 10 and len(net.history.loss) == 2
    twice = net.flat_parameters.copy()

    net.fit(X, y, optimizer=adam, epochs=2, batch_size=10, warm_start=False)
    assert net.epochs_trained == 2 and len(net.history.loss) == 2
    np.testing.assert_array_equal(net.flat_parameters, twice)  # same start, same shuffles
    net.fit(X, y, epochs=0, warm_start=False)
    np.testing.assert_array_equal(net.flat_parameters, initial)
