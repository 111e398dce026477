"""``Trainer``: the kernels' bundles of one fit, and the compiled calls that train it.

It builds them once (``kernels.layout``): the network's live ``TrainState``, the ``Data``, the
``Work`` buffers (for ``capacity`` epochs per call), the ``Settings`` and, for in-memory fits in
one process, the ``EpochEnd`` (validation rows, the stopping rule, visits to Python). ``run``
trains up to a number of epochs in one compiled call (streamed data: a call per chunk of rows).
"""

from __future__ import annotations

import numpy as np

from .. import streaming
from .._threads import team_size
from ..kernels import epoch_end, layout
from ..kernels.exchange import call_channel
from ..kernels.train import PythonCall
from . import interrupt


class Trainer:
    """Runs the compiled training loop over a fit's data, a chunk of epochs per call (see the
    module's docstring); ``end``: the fit's ``EpochEnd``, or None."""

    def __init__(self, net, plan, capacity, end=None):
        self.net = net
        n = plan.X.shape[0]
        architecture = net.architecture
        shards, solo = layout.shard_plan(architecture, plan.batch, plan.grad_shards or 0)
        optimizer = plan.optimizer
        session = self.session = plan.session
        rank, ranks, channel, threads = 0, 1, 0, net.n_threads
        local_rows = plan.batch  # rows of a batch this process computes
        seed = net.shuffle_seed
        if session is not None:
            from ..distributed import local_threads

            rank, ranks = session.rank, session.size
            channel = session.open_channel(net.dtype, net.n_params)
            threads = local_threads(session.node_size) if threads is None else threads
            if plan.partitioned:  # each rank its own permutations of its own rows
                seed = (seed + rank * 0x9E3779B97F4A7C15) % (1 << 63)
            else:
                local_rows = -(-plan.batch // ranks)
        self.stream = None
        if plan.stream is not None:
            # Streamed: the loop trains one chunk of whole batches per call, in the order the
            # chunk was read in; the epoch's row order is drawn here.
            options, convert_x, convert_y = plan.stream
            rows = streaming.chunk_rows(options, plan.batch, net.layer_sizes[0], net.layer_sizes[-1], net.dtype)
            rows = min(rows, -(-n // plan.batch) * plan.batch)
            self.chunks = streaming.ChunkPlan(
                plan.batch, rows, rank, ranks, replicated_share=session is not None and not plan.partitioned
            )
            self.loader = streaming.ChunkLoader(
                streaming.RowReader(plan.X),
                streaming.RowReader(plan.Y),
                convert_x,
                convert_y,
                plan.weight,
                net.layer_sizes[0],
                net.layer_sizes[-1],
                net.dtype,
                self.chunks.chunk_rows,
                options.prefetch,
            )
            self.stream = options
            self.order, self.keys = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint64)
            x, y, w = self.loader.buffers[0]
            self.data = layout.Data(x, y, w)
            work_rows, capacity = self.chunks.chunk_rows, 1
        else:
            self.data = layout.Data(plan.X, plan.Y, plan.weight)
            work_rows = n
        self.plan = plan
        self.work = layout.make_work(
            architecture,
            work_rows,
            plan.batch,
            max(len(optimizer.state_names), 1),
            capacity,
            net.dtype,
            shards,
            plan.partitioned,
        )
        clip_norm, clip_value = plan.clip
        self.settings = layout.make_settings(
            loss=net.loss_code,
            optimizer=optimizer.code,
            batch_size=plan.batch,
            lr=float(optimizer.lr),
            hyper=optimizer.hyper_vector(),
            schedule_kind=plan.schedule.code,
            schedule=plan.schedule.parameters(),
            shuffle=plan.shuffle is True and plan.batch < n and self.stream is None,
            seed=seed,
            l1=net.l1 * plan.penalty_scale,
            l2=net.l2 * plan.penalty_scale,
            penalty_per_weight=net.penalty_per_sample,
            shards=shards,
            solo=solo,
            rank=rank,
            ranks=ranks,
            partitioned=plan.partitioned,
            channel=channel,
            clip_norm=clip_norm,
            clip_value=clip_value,
            track=plan.tracking is not None,
            dropout_seed=seed,
            loss_parameter=net.loss_parameter,
        )
        self.end = end
        self.channel = channel
        # The fit's calls into Python from the compiled loop: visits (``visitor``, set by the
        # run that has callbacks) and the exchange between ranks.
        self.visitor = None
        self.python = PythonCall(self._python_call)
        self.control = layout.make_control()
        self.threads = (
            layout.useful_threads(architecture, local_rows, shards, solo, team_size(threads))
            if net.backend == "numba"
            else 1
        )
        self.macs_per_epoch = (
            3.0 * n * float(sum(int(layer["n_in"]) * int(layer["n_out"]) for layer in architecture.layers)) / ranks
        )
        # A helper thread may run the compiled call (Ctrl-C) unless MPI must be called from
        # the main thread only.
        self.inline = session is not None and not session.any_thread
        from ..compilation import prepare_fit

        if session is not None:
            # Every rank compiles (or loads) what its fit needs, one rank at a time: ranks
            # sharing a cache folder would otherwise compile the same code side by side.
            session.in_turn(lambda: prepare_fit(net))
        else:
            prepare_fit(net)

    def _python_call(self, kind, argument):
        if kind in (epoch_end.EXCHANGE_STEP, epoch_end.EXCHANGE_WEIGHTS):
            scalars = self.work.scalars if kind == epoch_end.EXCHANGE_STEP else self.work.batch_weights
            call_channel(self.channel, kind, self.work.grads[0], scalars)
            return 0
        return 0 if self.visitor is None else self.visitor(kind, argument)

    def close(self):
        if self.stream is not None:
            self.loader.close()

    def _call(self, data, settings, stop, macs, inline=False):
        net = self.net
        state = net.train_state()

        def call():
            return net.engine.train_epochs(
                net.architecture, state, data, self.work, settings, self.control, self.threads, self.end, self.python
            )

        with net.compiled_call(self.threads):
            completed = int(interrupt.call(call, stop, 0.0 if self.inline or inline else macs))
        # An exception a callback (or the exchange) raised inside the call, raised now that the
        # network is back at the end of an epoch.
        self.python.raise_error()
        return completed

    def run(self, count, stop, first_epoch=None, inline=False, lr_scale=1.0):
        """Train up to ``count`` epochs in one compiled call (streamed: epoch by epoch, a call
        per chunk); returns the completed epochs' losses and the outcome (``layout.OUTCOME_*``).
        ``first_epoch``: the network's epochs trained before the call (its shuffles' epoch
        numbers; default ``net.epochs_trained``); ``inline``: run the call in this thread (it
        visits Python for callbacks that must run here), never in a helper thread;
        ``lr_scale``: a factor on the optimizer's rate (a Python stopping rule's)."""
        if self.stream is not None:
            return self._run_streamed(count, stop, lr_scale)
        net = self.net
        first = int(net.epochs_trained if first_epoch is None else first_epoch)
        settings = self.settings._replace(first_epoch=first, epochs=int(count), lr=self.settings.lr * float(lr_scale))
        completed = self._call(self.data, settings, stop, count * self.macs_per_epoch, inline)
        return self.work.epoch_losses[:completed].tolist(), int(self.control[layout.CONTROL.outcome])

    def _epoch_order(self, epoch):
        n, plan = self.order.size, self.plan
        seed = self.settings.seed
        if plan.shuffle == "blocks":
            options = self.stream
            block = options.block_rows or max(1, self.chunks.chunk_rows // options.window_blocks)
            streaming.block_shuffle_order(
                self.order, self.keys, n, block, options.window_blocks, seed, epoch, self.net.engine.shuffle_order
            )
        elif plan.shuffle and plan.batch < n:
            self.net.engine.shuffle_order(self.order, self.keys, seed, epoch)
        else:
            self.order[...] = np.arange(n)
        return self.order

    def _run_streamed(self, count, stop, lr_scale=1.0):
        net, work = self.net, self.work
        settings = self.settings._replace(lr=self.settings.lr * float(lr_scale))
        mean = net.loss_spec.mean
        losses = []
        for index in range(count):
            epoch = int(net.epochs_trained) + index
            start_state = net.train_state()
            saved = [array.copy() for array in start_state]
            order = self._epoch_order(epoch)
            chunks = list(self.chunks.chunks(order.size))
            pending = self.loader.start(order[slice(*chunks[0])], self.chunks.positions(chunks[0][1] - chunks[0][0]))
            total, weight, outcome = 0.0, 0.0, layout.OUTCOME_FINISHED
            try:
                for index, (first, last) in enumerate(chunks):
                    data = layout.Data(*pending.result())
                    pending = None

                    def load_next(index=index, chunks=chunks, order=order):  # (called within this iteration)
                        if index + 1 < len(chunks):
                            upcoming = chunks[index + 1]
                            return self.loader.start(
                                order[upcoming[0] : upcoming[1]], self.chunks.positions(upcoming[1] - upcoming[0])
                            )
                        return None

                    if self.loader.prefetching:  # the next chunk is read while this one trains
                        pending = load_next()
                    chunk_settings = settings._replace(first_epoch=epoch, epochs=1)
                    macs = self.macs_per_epoch * (last - first) / order.size
                    if self._call(data, chunk_settings, stop, macs) != 1:
                        outcome = int(self.control[layout.CONTROL.outcome])
                        break
                    if not self.loader.prefetching:
                        pending = load_next()
                    # The chunk's loss is a weighted mean over its rows (a sum for sse):
                    # the epoch's is their weighted mean (sum).
                    if self.plan.partitioned:
                        chunk_weight = float(np.sum(work.batch_weights[: -(-(last - first) // self.plan.batch)]))
                    else:
                        chunk_weight = float(np.sum(data.sample_weight, dtype=np.float64))
                    total += float(work.epoch_losses[0]) * (chunk_weight if mean else 1.0)
                    weight += chunk_weight
            except BaseException:
                # A chunk that fails its checks as it is read (the file changed since), a
                # reader's I/O error: the epoch is undone, as divergence undoes it.
                if pending is not None:
                    try:
                        pending.result()  # never leave a read running into a buffer
                    except BaseException:
                        pass
                    pending = None
                for array, copy in zip(net.train_state(), saved):
                    array[...] = copy
                raise
            finally:
                if pending is not None:
                    pending.result()  # never leave a read running into a buffer
            if outcome != layout.OUTCOME_FINISHED:
                for array, copy in zip(net.train_state(), saved):
                    array[...] = copy  # back to the end of the last completed epoch
                return losses, outcome
            losses.append(total / weight if mean else total)
        return losses, layout.OUTCOME_FINISHED
