"""Python side of rlm's local executor.

Loaded once per process as the module ``_rlm_prelude``. The Rust side (``lib.rs``) drives it:

* ``install_streams()`` once, to route ``sys.stdout`` / ``sys.stderr`` per thread;
* ``Session(host, context)`` per REPL session: owns the session's globals dict and the reserved functions;
* per cell: ``Session.start_cell`` (``begin_capture``, ``Session.prepare``) -> ``Session.run`` ->
  ``Session.end_cell`` (``Session.finish``, ``end_capture``, which also repairs the process-wide state a cell may have
  tampered with: ``sys.stdout`` / ``sys.stderr`` and the ``builtins`` module).

Everything here runs with the GIL held by the thread that runs the cell.
"""

import builtins

# The builtins as they were when the interpreter started (this module is loaded right after). Every session gets a
# copy; the shared `builtins` module is put back to this state after every cell; and the code of this module looks its
# builtins up in a private copy (functions take their builtins from their module's `__builtins__` when they are
# defined), so that `builtins.print = None` in a cell cannot break the echo or the capture of any session.
_PRISTINE_BUILTINS = dict(builtins.__dict__)
__builtins__ = dict(_PRISTINE_BUILTINS)

import itertools  # noqa: E402
import operator  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

_get_ident = threading.get_ident

# The first import of `signal` makes CPython catch SIGINT (to raise KeyboardInterrupt in its main thread) when the
# process had left it at its default. Import it here, on the interpreter's main thread, and put the default back: the
# host's Ctrl-C keeps its meaning, and no cell can change it later (the module is imported already, and cells never
# run on the main thread, where alone `signal.signal` works).
#
# Inside a Python host (the `rlm` Python package) this module is loaded on a thread of the host's interpreter: the
# SIGINT handler is the host's (KeyboardInterrupt), and cells cannot change it either (they never run on its main
# thread).
_ON_MAIN_THREAD = threading.current_thread() is threading.main_thread()
if _ON_MAIN_THREAD and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class CellTimeout(BaseException):
    """Raised asynchronously (PyThreadState_SetAsyncExc) in a cell that ran past its time limit.

    A BaseException, like KeyboardInterrupt, so that the usual ``except Exception:`` in user code does not swallow it.
    """


# ---------------------------------------------------------------------------------------------------------------------
# Output capture
#
# Several sessions may run cells at the same time on different threads of one process, and they share one `sys`
# module. So `sys.stdout` / `sys.stderr` are replaced once by routers that look up the capture registered for the
# *current thread*; threads without one (the host application, threads started by user code) write to the real
# stream.
# ---------------------------------------------------------------------------------------------------------------------

_captures = {}  # thread ident -> _Capture (of the REPL core)


class _Router:
    """Stands in for sys.stdout / sys.stderr: writes go to the current thread's capture, if any.

    Its two fields cannot be reassigned (`sys.stdout._real = spy` from a cell would redirect every session).
    """

    __slots__ = ("_real", "_index")

    def __init__(self, real, index):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_index", index)

    def __setattr__(self, name, value):
        raise AttributeError(f"the output router's {name!r} is read-only")

    def __delattr__(self, name):
        raise AttributeError(f"the output router's {name!r} is read-only")

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        capture = _captures.get(_get_ident())
        if capture is not None:
            return capture.write(self._index, text)
        if self._real is not None:
            return self._real.write(text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if _get_ident() not in _captures and self._real is not None:
            self._real.flush()

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def __getattr__(self, name):
        # encoding, errors, buffer, fileno, ...: whatever the real stream has.
        if self._real is None:
            raise AttributeError(name)
        return getattr(self._real, name)


_routers = []  # [stdout router, stderr router] once installed

# True inside a Python host (the interpreter was running before rlm loaded this module). The host owns sys.stdout and
# the builtins then: a stream it installs later (pytest's capture, contextlib.redirect_stdout) becomes the routers'
# real stream at the next cell instead of being replaced, and builtins it adds later are kept.
_hosted = False


def install_streams(hosted=False):
    """Idempotent: replaces sys.stdout and sys.stderr by routers."""
    global _hosted
    _hosted = bool(hosted)
    if not _routers:
        _routers.extend([_Router(sys.stdout, 0), _Router(sys.stderr, 1)])
    restore_process_state()


def _adopt_host_streams():
    for router, name in ((_routers[0], "stdout"), (_routers[1], "stderr")):
        current = getattr(sys, name)
        if current is not router:
            if not isinstance(current, _Router):
                object.__setattr__(router, "_real", current)
            setattr(sys, name, router)


def restore_process_state():
    """Undoes what a cell may have done to state all sessions share: `sys.stdout = None` (or any replacement of the
    routers) and changes to the `builtins` module (`builtins.print = None`, a hijacked `__import__`, added names)."""
    if _routers:
        if sys.stdout is not _routers[0]:
            sys.stdout = _routers[0]
        if sys.stderr is not _routers[1]:
            sys.stderr = _routers[1]
    table = builtins.__dict__
    if _builtins_untouched(table):
        return
    for name in [name for name in table if name not in _PRISTINE_BUILTINS and not _hosted]:
        del table[name]
    for name, value in _PRISTINE_BUILTINS.items():
        if table.get(name, _MISSING) is not value:
            table[name] = value


_MISSING = object()

# For `_builtins_untouched`, taken now: a cell may replace what the `operator` and `itertools` modules hold.
_is_not = operator.is_not
_repeat = itertools.repeat
_PRISTINE_NAMES = tuple(_PRISTINE_BUILTINS)
_PRISTINE_VALUES = tuple(_PRISTINE_BUILTINS.values())


def _builtins_untouched(table):
    """Whether `table` holds exactly the pristine names, each bound to the very same object, as almost every cell
    leaves it. Compared by identity (a replaced object's `__eq__` is the cell's code) and in C, at about a third of
    the cost of the repair loop, which ran after every cell."""
    return len(table) == len(_PRISTINE_NAMES) and not any(
        map(_is_not, map(table.get, _PRISTINE_NAMES, _repeat(_MISSING)), _PRISTINE_VALUES)
    )


def begin_capture(limit):
    if _hosted and _routers:
        _adopt_host_streams()
    capture = _Capture(limit)
    _captures[_get_ident()] = capture
    return capture


def end_capture(capture):
    """Unregisters the current thread's capture and repairs the shared state; returns (stdout, stderr, dropped)."""
    if _captures.get(_get_ident()) is capture:
        del _captures[_get_ident()]
    restore_process_state()
    return "".join(capture.parts[0]), "".join(capture.parts[1]), capture.dropped


# ---------------------------------------------------------------------------------------------------------------------
# The REPL core shared with the wasm executor (`python/repl_core.py` at the repository root) is inserted at the next
# line by `runtime.rs`: after the builtins swap above, so that its functions too look builtins up in the private copy.
# ---------------------------------------------------------------------------------------------------------------------
# @repl_core


# ---------------------------------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------------------------------


class Session(SessionCore):  # noqa: F821 (defined by the REPL core)
    """One REPL namespace. `host` is the Rust HostBridge: host.call(kind, prompts, model) -> list[str]."""

    def __init__(self, host, context):
        SessionCore.__init__(self, context, host.call, _PRISTINE_BUILTINS)  # noqa: F821

    def _capture(self):
        return _captures.get(_get_ident())

    # One cell is three calls from Rust (each call costs more than the Python it saves): `start_cell`, then `run`
    # with the watchdog armed (only user code may be interrupted), then `end_cell`.

    def start_cell(self, source, cell_number, limit):
        """Opens the capture and compiles the cell: (capture, prepared, None), or (capture, None, the compile error)."""
        capture = begin_capture(limit)
        try:
            return capture, self.prepare(source, cell_number), None
        except BaseException as exc:  # noqa: BLE001 (a SyntaxError is the cell's outcome, reported by Rust)
            return capture, None, exc

    def end_cell(self, capture):
        """Restores the reserved names and closes the capture (always, even when `finish` fails);
        returns (stdout, stderr, dropped, answer, final_var)."""
        try:
            finished = self.finish()
        finally:
            captured = end_capture(capture)
        return captured + finished

    def close(self):
        self.globals.clear()
        self.reserved.clear()
        self.restored.clear()
