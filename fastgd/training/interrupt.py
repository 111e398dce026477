"""Ctrl-C during training: turn SIGINT into a stop request that the compiled loop honours.

A compiled call cannot be interrupted from Python: the interpreter runs signal handlers only
between bytecodes, so a ``KeyboardInterrupt`` would wait for the whole call, and raising in the
middle of ``fit``'s bookkeeping would leave the network half-updated. So, while ``fit`` runs in
the main thread:

* SIGINT sets a flag (``StopRequest``) and the stop slot of the kernel's ``control`` array,
  which ``train_epochs`` reads before every batch; the kernel then puts back the state of the
  last completed epoch and returns, and ``fit`` re-raises ``KeyboardInterrupt`` once its
  bookkeeping is consistent.
* A long compiled call runs in a helper thread (the kernels release the GIL) while the main
  thread waits, so the handler runs at once instead of after the call.
* While user callbacks run, SIGINT raises ``KeyboardInterrupt`` at once as usual (the epoch's
  bookkeeping is complete by then).
* A SIGINT that arrives once the last check of the request has passed (while ``on_fit_end``
  writes the final checkpoint, say) is not dropped: leaving the ``StopRequest`` raises it.

Where Ctrl-C could be lost before (``tests/stress_interrupt.py`` finds each): the handler ran
after ``fit``'s last look at ``requested`` (in the callbacks' ``on_fit_end``: the last
checkpoint's write) and the handler was put back without anyone raising, so ``fit`` returned
as if nothing had happened; and a SIGINT during a compile, whose ``KeyboardInterrupt`` LLVM's
callbacks swallow (see ``kernels.compile.Interrupts``).
"""

from __future__ import annotations

import signal
import threading

from ..kernels.layout import CONTROL

# A compiled call estimated at more multiply-adds than this runs in a helper thread (start-up
# ~0.1 ms, against at least ~5 ms of work); shorter ones finish soon enough to wait for.
THREAD_MIN_MACS = 20_000_000


class StopRequest:
    """Context manager: while active (main thread only), SIGINT requests a stop."""

    def __init__(self, control):
        self.control = control
        self.requested = False
        self.defer = True  # False while user code runs: SIGINT then raises as usual
        self._previous = None

    def request(self) -> None:
        self.requested = True
        self.control[CONTROL.stop] = 1

    def _handler(self, signum, frame):
        self.request()
        if not self.defer:
            raise KeyboardInterrupt

    @property
    def active(self) -> bool:
        return self._previous is not None

    def __enter__(self):
        # Only the main thread receives signals, and only Python's default handler is replaced:
        # a handler the application installed stays in charge.
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        if self._previous is None:
            return False
        # (signal.signal runs a pending handler first: a SIGINT that came just now is ours)
        signal.signal(signal.SIGINT, self._previous)
        self._previous = None
        if self.requested and (exc_value is None or isinstance(exc_value, FloatingPointError)):
            # A request the run did not act on: it came after the run's last look at it (in
            # the callbacks' on_fit_end: the last checkpoint's write; restoring the best
            # parameters), as fit was about to return or to raise DivergenceError (a
            # FloatingPointError), which a caller may catch and go on. Dropping it here lost
            # the Ctrl-C. The network is consistent by now (the fit's end is done), so it is
            # raised as if it had come just after. (Any other error, a callback's or a bug's,
            # goes on as it is: fit acts on it, with several ranks by ending the job.)
            error = KeyboardInterrupt()
            error.__context__ = exc_value
            raise error
        return False


def call(function, stop: StopRequest, macs: float):
    """``function()``; in a helper thread when it is long and SIGINT is ours to handle.

    A ``KeyboardInterrupt`` raised in the waiting thread (by some other handler) becomes a stop
    request too; the helper always finishes before this returns, so nothing runs on after.
    """
    if not stop.active or macs < THREAD_MIN_MACS:
        return function()
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as error:  # handed to the calling thread below
            outcome["error"] = error

    helper = threading.Thread(target=run, name="fastgd-fit", daemon=True)
    helper.start()
    while helper.is_alive():
        try:
            helper.join()
        except KeyboardInterrupt:
            stop.request()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
