"""Integer codes shared by the compiled kernels and the Python tables in :mod:`fastgd.registry`.

Numba folds these module-level integers into the compiled code as constants, so a branch on an
activation or loss code costs nothing per element once LLVM has hoisted it out of the loop.
"""

# Activations (per layer).
IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4
SOFTMAX = 5  # output layer only

# Negative-side slope of leaky_relu (PyTorch's default).
LEAKY_SLOPE = 0.01

# Losses.
SSE = 0  # 1/2 sum_rows ||a - y||^2
MSE = 1  # 1/(2n) sum_rows ||a - y||^2
BINARY_CROSSENTROPY = 2  # sigmoid outputs, mean over rows, summed over outputs
CROSSENTROPY = 3  # softmax outputs, mean over rows

# Optimizers.
OPT_SGD = 0
OPT_MOMENTUM = 1
OPT_ADAGRAD = 2
OPT_RMSPROP = 3
OPT_ADAM = 4
OPT_ADAMW = 5

# Learning-rate schedules (per optimizer step).
SCHEDULE_CONSTANT = 0
SCHEDULE_STEP = 1
SCHEDULE_EXPONENTIAL = 2
SCHEDULE_INVERSE_SCALING = 3
SCHEDULE_COSINE = 4

# Rows of the per-layer description array ``meta`` (shape (n_layers, META_WIDTH), int64).
META_N_IN = 0
META_N_OUT = 1
META_W_OFFSET = 2
META_B_OFFSET = 3
META_ACTIVATION = 4
META_WIDTH = 5

# The ``control`` array of ``train_epochs`` (int64, shape (2,)): slot CONTROL_STOP is a stop
# request that another thread may set while the kernel runs (fit's Ctrl-C handler); the kernel
# writes how the call ended into slot CONTROL_OUTCOME.
CONTROL_STOP = 0
CONTROL_OUTCOME = 1
CONTROL_WIDTH = 2
OUTCOME_FINISHED = 0
OUTCOME_DIVERGED = 1  # a loss or a parameter became NaN or infinite
OUTCOME_INTERRUPTED = 2  # a stop was requested
