"""Trained networks to and from other tools: scikit-learn, PyTorch and ONNX.

Each conversion maps layer for layer (a dense layer, then its activation) and refuses, with a
ValueError or TypeError saying what, anything it cannot represent exactly: another layer kind,
an activation fastgd does not have, hidden layers with different activations (fastgd has one
hidden activation), a softmax that is not the last layer. Neither scikit-learn, PyTorch nor onnx
is imported unless its conversion is called.

Weights keep their dtype (float32 or float64). A fastgd weight matrix is ``(n_in, n_out)``, as
scikit-learn's ``coefs_`` and ONNX's ``Gemm`` B; PyTorch's ``Linear.weight`` is its transpose.
"""

from __future__ import annotations

import numpy as np

from .kernels.mathfn import ERF_T, ERF_U, ERFC_P, ERFC_Q, ERFC_R, ERFC_S
from .registry import ACTIVATIONS, LOSSES

__all__ = ["from_sklearn", "from_torch", "to_onnx", "to_torch"]

# Every name below comes from each activation's declaration (kernels.activations.SPECS: its
# ``sklearn``, ``torch`` and ``onnx`` entries), so a new activation converts as soon as it is
# declared, and one a tool has no equivalent for is refused by name.
_SKLEARN_ACTIVATIONS = {spec.sklearn: spec.name for spec in ACTIVATIONS.values() if spec.sklearn}
# fastgd's output activation -> the loss a converted network trains with by default: the loss
# that requires it (crossentropy for softmax, binary_crossentropy for sigmoid, poisson for exp).
_DEFAULT_LOSS = {spec.required_output: spec.name for spec in LOSSES.values() if spec.required_output}


def _exportable(name, tool):
    spec = ACTIVATIONS[name]
    if not spec.exportable or (spec.name != "identity" and getattr(spec, tool) is None):
        raise ValueError(f"activation {name!r} has no {tool} equivalent, so this network cannot be converted")
    return spec


# ONNX opset of the exported graphs (Gemm, Sigmoid, Tanh, Relu, Mul, Max, Softmax on the last axis).
ONNX_OPSET = 17


def _build(layer_sizes, activation, output_activation, weights, biases, dtype, loss, **options):
    from .network import Network

    output_loss = loss or _DEFAULT_LOSS.get(output_activation, "mse")
    net = Network(
        list(layer_sizes),
        activation=activation,
        output_activation=output_activation,
        loss=output_loss,
        dtype=dtype,
        **options,
    )
    for k, (W, b) in enumerate(zip(weights, biases)):
        net.weights[k] = np.asarray(W, dtype=net.dtype)
        net.biases[k] = np.asarray(b, dtype=net.dtype)
    # The converted weights are where this network starts (restart(), warm_start=False).
    state = net.state_dict()
    state["initial_parameters"] = state["parameters"].copy()
    net.load_state_dict(state)
    return net


def from_sklearn(mlp, loss=None, **options):
    """A :class:`fastgd.Network` with the weights of a fitted scikit-learn ``MLPClassifier`` or
    ``MLPRegressor``.

    Parameters
    ----------
    mlp : sklearn.neural_network.MLPClassifier or MLPRegressor
        Fitted (``coefs_`` set).
    loss : str, optional
        The network's loss (for further training). Default: ``crossentropy`` for a softmax output
        (multi-class), ``binary_crossentropy`` for a logistic one (binary, multi-label), else ``mse``.
    **options
        Other :class:`fastgd.Network` arguments (``backend``, ``n_threads``, ``random_state``...).

    Returns
    -------
    Network
        ``net.predict(X)`` equals ``mlp.predict_proba(X)`` for a multi-class classifier and
        ``mlp.predict_proba(X)[:, 1:]`` for a binary one (scikit-learn has one output unit there
        and adds the complement), and ``mlp.predict(X)`` (as a column when 1-D) for a regressor.
        scikit-learn's ``alpha`` is not carried over (fastgd's ``l2`` is scaled differently: pass
        ``l2=`` for further training).
    """
    kind = type(mlp).__name__
    if kind not in ("MLPClassifier", "MLPRegressor") or not type(mlp).__module__.startswith("sklearn."):
        raise TypeError(f"mlp must be a scikit-learn MLPClassifier or MLPRegressor, got {type(mlp).__module__}.{kind}")
    if not hasattr(mlp, "coefs_"):
        raise ValueError("mlp is not fitted (it has no coefs_): fit it first")
    if mlp.activation not in _SKLEARN_ACTIVATIONS:
        raise ValueError(f"mlp.activation {mlp.activation!r} has no fastgd equivalent")
    coefs, intercepts = list(mlp.coefs_), list(mlp.intercepts_)
    sizes = [coefs[0].shape[0]] + [W.shape[1] for W in coefs]
    dtype = np.result_type(*coefs)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"mlp's weights are {dtype}; fastgd networks are float32 or float64")
    return _build(
        sizes,
        _SKLEARN_ACTIVATIONS[mlp.activation],
        _SKLEARN_ACTIVATIONS[mlp.out_activation_],
        coefs,
        intercepts,
        dtype.name,
        loss,
        **options,
    )


def _torch_activations():
    # torch.nn module class -> [(fastgd activation name, the arguments it must have)]: one
    # module may stand for several activations told apart by an argument (GELU's approximate).
    import torch.nn as nn

    found = {nn.Identity: [("identity", {})]}
    for spec in ACTIVATIONS.values():
        if spec.torch is not None:
            found.setdefault(getattr(nn, spec.torch[0]), []).append((spec.name, spec.torch[1]))
    return found


def to_torch(net):
    """The network as a PyTorch ``nn.Sequential`` of ``Linear`` and activation modules (in the
    network's dtype), whose outputs equal ``net.predict`` (a softmax output becomes
    ``nn.Softmax(dim=-1)``; an identity activation adds no module)."""
    import torch
    import torch.nn as nn

    config = net.get_config()
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[np.dtype(net.dtype)]
    layers = []
    count = len(net.weights)
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        linear = nn.Linear(W.shape[0], W.shape[1], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            linear.bias.copy_(torch.from_numpy(np.array(b)))
        layers.append(linear)
        spec = _exportable(config["activation"] if k < count - 1 else config["output_activation"], "torch")
        if spec.torch is not None:
            layers.append(getattr(nn, spec.torch[0])(**spec.torch[1]))
    return nn.Sequential(*layers)


def from_torch(module, loss=None, **options):
    """A :class:`fastgd.Network` from a PyTorch ``nn.Sequential`` of ``Linear`` layers, each
    followed by at most one activation (``Sigmoid``, ``Tanh``, ``ReLU``, ``LeakyReLU`` with
    slope 0.01, ``Identity``; ``Softmax`` over the last dimension after the last layer only).
    Every hidden layer must have the same activation. A ``Linear`` without bias gets zero biases.

    Parameters
    ----------
    module : torch.nn.Sequential
    loss : str, optional
        Default: ``crossentropy`` after a softmax, ``binary_crossentropy`` after a sigmoid output,
        else ``mse``.
    **options
        Other :class:`fastgd.Network` arguments.
    """
    import torch
    import torch.nn as nn

    if not isinstance(module, nn.Sequential):
        raise TypeError(
            f"module must be a torch.nn.Sequential of Linear and activation modules, got {type(module).__name__}"
        )
    names = _torch_activations()
    linears, activations = [], []
    for index, layer in enumerate(module):
        if isinstance(layer, nn.Linear):
            linears.append(layer)
            activations.append("identity")
            continue
        candidates = names.get(type(layer))
        if candidates is None:
            raise ValueError(
                f"module[{index}] is a {type(layer).__name__}: only Linear layers and the activations "
                f"{sorted(t.__name__ for t in names)} can be converted"
            )
        # The activation whose arguments the module has (else the first, for the message below).
        name, arguments = next(
            (
                candidate
                for candidate in candidates
                if all(getattr(layer, key, value) == value for key, value in candidate[1].items())
            ),
            candidates[0],
        )
        if not linears:
            raise ValueError(f"module[{index}] ({type(layer).__name__}) comes before any Linear layer")
        if isinstance(layer, nn.Softmax):
            if layer.dim not in (-1, 1):
                raise ValueError(
                    f"module[{index}] is Softmax(dim={layer.dim}); only a softmax over each row (dim=-1) converts"
                )
        else:
            for key, value in arguments.items():
                if getattr(layer, key, value) != value:
                    raise ValueError(
                        f"module[{index}] is {type(layer).__name__}({key}={getattr(layer, key)}); fastgd's {name} "
                        f"has {key} {value}"
                    )
        if name == "identity":
            continue
        if activations[-1] != "identity":
            raise ValueError(f"module[{index}] ({type(layer).__name__}) follows another activation: one per layer")
        activations[-1] = name
    if not linears:
        raise ValueError("module has no Linear layer")
    for k in range(1, len(linears)):
        if linears[k].in_features != linears[k - 1].out_features:
            raise ValueError(
                f"Linear layer {k} takes {linears[k].in_features} inputs but layer {k - 1} gives "
                f"{linears[k - 1].out_features}"
            )
    hidden = set(activations[:-1])
    if "softmax" in hidden:
        raise ValueError("softmax is allowed only after the last Linear layer")
    if len(hidden) > 1:
        raise ValueError(f"the hidden layers have different activations {activations[:-1]}; a fastgd network has one")
    dtypes = {linear.weight.dtype for linear in linears}
    if len(dtypes) != 1 or dtypes.pop() not in (torch.float32, torch.float64):
        raise ValueError("the Linear layers must all be float32 or all float64")
    dtype = "float32" if linears[0].weight.dtype == torch.float32 else "float64"
    weights = [linear.weight.detach().cpu().numpy().T for linear in linears]
    biases = [
        np.zeros(linear.out_features) if linear.bias is None else linear.bias.detach().cpu().numpy()
        for linear in linears
    ]
    sizes = [linears[0].in_features] + [linear.out_features for linear in linears]
    hidden_activation = hidden.pop() if hidden else "identity"
    return _build(sizes, hidden_activation, activations[-1], weights, biases, dtype, loss, **options)


def _decomposition(steps, z, out, k, initializers, dtype, helper, numpy_helper):
    # An activation's ONNX decomposition (kernels.activations: steps (operator, inputs, output)
    # from the pre-activation "z" to "out"), for layer k: names get the layer's number, numbers
    # become constants of the network's dtype (ONNX's own attributes are float32: LeakyRelu's
    # alpha is 2e-10 off 0.01 in float64), shared by every layer that uses them.
    nodes = []

    def constant(value):
        name = f"const_{np.dtype(dtype).name}_{value!r}"
        if not any(tensor.name == name for tensor in initializers):
            initializers.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    for op, inputs, output in steps:
        names = [
            (z if value == "z" else f"{value}{k}") if isinstance(value, str) else constant(value) for value in inputs
        ]
        target = out if output == "out" else f"{output}{k}"
        if op == "Erf" and np.dtype(dtype) == np.float64:
            nodes += _erf_float64(names[0], target, f"{output}{k}", constant, helper)
        else:
            nodes.append(helper.make_node(op, names, [target], name=f"{output}{k}"))
    return nodes


# erf in float64 from operators onnxruntime has for doubles (its Erf is float32 only), as the
# kernels compute it (``fastgd.kernels.mathfn.erf64``: Cephes' rational approximations, within
# 3 ulp of libm's erf): x·T(x²)/U(x²) for |x| <= 1, else sign(x)·(1 − erfc(|x|)) with
# erfc = e^(−x²)·P(|x|)/Q(|x|) below 8 and e^(−x²)·R(|x|)/S(|x|) from 8 on.


def _erf_float64(x, out, prefix, constant, helper):
    nodes = []

    def node(op, inputs, name):
        nodes.append(helper.make_node(op, inputs, [f"{prefix}_{name}"], name=f"{prefix}_{name}"))
        return f"{prefix}_{name}"

    def polynomial(coefficients, at, name):
        value = constant(coefficients[0])
        for degree, coefficient in enumerate(coefficients[1:]):
            value = node(
                "Add", [node("Mul", [value, at], f"{name}m{degree}"), constant(coefficient)], f"{name}a{degree}"
            )
        return value

    ax, square = node("Abs", [x], "abs"), node("Mul", [x, x], "square")
    small = node(
        "Mul", [x, node("Div", [polynomial(ERF_T, square, "t"), polynomial(ERF_U, square, "u")], "tu")], "small"
    )
    decay = node("Exp", [node("Neg", [square], "negsq")], "decay")
    middle = node(
        "Mul", [decay, node("Div", [polynomial(ERFC_P, ax, "p"), polynomial(ERFC_Q, ax, "q")], "pq")], "middle"
    )
    tail = node("Mul", [decay, node("Div", [polynomial(ERFC_R, ax, "r"), polynomial(ERFC_S, ax, "s")], "rs")], "tail")
    erfc = node("Where", [node("Less", [ax, constant(8.0)], "below8"), middle, tail], "erfc")
    large = node("Mul", [node("Sign", [x], "sign"), node("Sub", [constant(1.0), erfc], "one_minus")], "large")
    nodes.append(
        helper.make_node(
            "Where", [node("LessOrEqual", [ax, constant(1.0)], "below1"), small, large], [out], name=f"{prefix}_erf"
        )
    )
    return nodes


def to_onnx(net, path=None):
    """The network as an ONNX model (``onnx`` extra): input ``X`` ``(batch, n_in)``, output ``Y``
    ``(batch, n_out)`` equal to ``net.predict(X)``; per layer a ``Gemm`` (the weights and biases as
    initializers, in the network's dtype) and its activation, as each activation declares it
    (``kernels.activations.SPECS``): one node (``Sigmoid``, ``Tanh``, ``Relu``, ``Softmax`` on
    the last axis) or a few (leaky_relu as ``Max(z, Mul(z, 0.01))``, softplus, gelu with
    ``Erf``, gelu_tanh, silu); none for identity. Opset ``ONNX_OPSET``.

    Parameters
    ----------
    path : str or path-like, optional
        Where to write the model; it is returned either way (an ``onnx.ModelProto``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config = net.get_config()
    element = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(net.dtype)]
    nodes, initializers = [], []
    current = "X"
    count = len(net.weights)
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        initializers += [numpy_helper.from_array(np.array(W), f"W{k}"), numpy_helper.from_array(np.array(b), f"b{k}")]
        activation = config["activation"] if k < count - 1 else config["output_activation"]
        spec = _exportable(activation, "onnx")
        gemm_out = "Y" if (k == count - 1 and spec.onnx is None) else f"z{k}"
        nodes.append(helper.make_node("Gemm", [current, f"W{k}", f"b{k}"], [gemm_out], name=f"dense{k}"))
        current = gemm_out
        if spec.onnx is None:
            continue
        out = "Y" if k == count - 1 else f"a{k}"
        if isinstance(spec.onnx[0], str):  # one operator and its attributes
            op, attributes = spec.onnx
            nodes.append(helper.make_node(op, [current], [out], name=f"{activation}{k}", **attributes))
        else:
            nodes += _decomposition(spec.onnx, current, out, k, initializers, net.dtype, helper, numpy_helper)
        current = out
    graph = helper.make_graph(
        nodes,
        "fastgd_mlp",
        [helper.make_tensor_value_info("X", element, ["batch", net.layer_sizes[0]])],
        [helper.make_tensor_value_info("Y", element, ["batch", net.layer_sizes[-1]])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="fastgd")
    model.ir_version = min(model.ir_version, 9)  # readable by runtimes of the last two years
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, path)
    return model
