"""Python side of rlm's local executor.

Loaded once per process as the module ``_rlm_prelude``. The Rust side (``lib.rs``) drives it:

* ``install_streams()`` once, to route ``sys.stdout`` / ``sys.stderr`` per thread;
* ``Session(host, context)`` per REPL session: owns the session's globals dict and the reserved functions;
* per cell: ``begin_capture`` -> ``Session.prepare`` -> ``Session.run`` -> ``Session.finish`` -> ``end_capture``
  (which also repairs the process-wide state a cell may have tampered with: ``sys.stdout`` / ``sys.stderr`` and the
  ``builtins`` module).

Everything here runs with the GIL held by the thread that runs the cell.
"""

import builtins

# The builtins as they were when the interpreter started (this module is loaded right after). Every session gets a
# copy; the shared `builtins` module is put back to this state after every cell; and the code of this module looks its
# builtins up in a private copy (functions take their builtins from their module's `__builtins__` when they are
# defined), so that `builtins.print = None` in a cell cannot break the echo or the capture of any session.
_PRISTINE_BUILTINS = dict(builtins.__dict__)
__builtins__ = dict(_PRISTINE_BUILTINS)

import ast  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

_get_ident = threading.get_ident

# The first import of `signal` makes CPython catch SIGINT (to raise KeyboardInterrupt in its main thread) when the
# process had left it at its default. Import it here, on the interpreter's main thread, and put the default back: the
# host's Ctrl-C keeps its meaning, and no cell can change it later (the module is imported already, and cells never
# run on the main thread, where alone `signal.signal` works).
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
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

_captures = {}  # thread ident -> _Capture


class _Capture:
    """stdout and stderr of one cell, capped in total characters; the rest is only counted."""

    __slots__ = ("parts", "remaining", "dropped")

    def __init__(self, limit):
        self.parts = ([], [])  # (stdout pieces, stderr pieces)
        self.remaining = limit
        self.dropped = 0

    def write(self, index, text):
        n = len(text)
        room = self.remaining
        if n <= room:
            self.parts[index].append(text)
            self.remaining = room - n
        else:
            # Keep what fits; never hold on to the rest (a `print("x" * 10**9)` flood must not grow the buffer).
            if room > 0:
                self.parts[index].append(text[:room])
                self.remaining = 0
            self.dropped += n - room
        return n


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


def install_streams():
    """Idempotent: replaces sys.stdout and sys.stderr by routers."""
    if not _routers:
        _routers.extend([_Router(sys.stdout, 0), _Router(sys.stderr, 1)])
    restore_process_state()


def restore_process_state():
    """Undoes what a cell may have done to state all sessions share: `sys.stdout = None` (or any replacement of the
    routers) and changes to the `builtins` module (`builtins.print = None`, a hijacked `__import__`, added names)."""
    if _routers:
        if sys.stdout is not _routers[0]:
            sys.stdout = _routers[0]
        if sys.stderr is not _routers[1]:
            sys.stderr = _routers[1]
    table = builtins.__dict__
    for name in [name for name in table if name not in _PRISTINE_BUILTINS]:
        del table[name]
    for name, value in _PRISTINE_BUILTINS.items():
        if table.get(name, _MISSING) is not value:
            table[name] = value


_MISSING = object()


def begin_capture(limit):
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
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


class _Text(str):
    """A str whose repr is itself, so that an echoed `SHOW_VARS()` reads like text rather than a quoted literal."""

    __slots__ = ()

    def __repr__(self):
        return str.__str__(self)


class _Shown(_Text):
    """A message that was already printed; the end-of-cell echo skips it so it does not appear twice."""

    __slots__ = ()


def _safe_str(value):
    try:
        return str(value)
    except BaseException as exc:  # a broken __str__ must not fail the cell bookkeeping
        return f"<str() failed: {type(exc).__name__}: {exc}>"


def _as_prompt(prompt):
    if isinstance(prompt, str):
        return prompt
    try:
        return json.dumps(prompt, ensure_ascii=False)
    except (TypeError, ValueError):
        return _safe_str(prompt)


def _as_model(model):
    return None if model is None else str(model)


def _no_input(*_args, **_kwargs):
    # There is nobody to type: without this, input() would block the cell until its time limit.
    raise EOFError("input() is not available in this REPL")


# A traceback deeper than this (a runaway recursion: up to a million frames) is described by its first and last
# _TB_KEEP frames only; extracting and formatting every frame would take longer than the cell itself.
_TB_KEEP = 50


def _cell_traceback_lines(tb):
    """The formatted frames of cell code in `tb` (with the "Traceback" line), or [] when there are none."""
    depth = 0
    entry = tb
    while entry is not None:
        depth += 1
        entry = entry.tb_next
    if depth <= 2 * _TB_KEEP:
        parts = [traceback.extract_tb(tb)]
    else:
        tail = tb
        for _ in range(depth - _TB_KEEP):
            tail = tail.tb_next
        parts = [traceback.extract_tb(tb, limit=_TB_KEEP), traceback.extract_tb(tail)]
    parts = [[f for f in part if f.filename.startswith("<cell ")] for part in parts]
    if not any(parts):
        return []
    lines = ["Traceback (most recent call last):\n"]
    for index, frames in enumerate(parts):
        if index:
            lines.append(f"  ... {depth - 2 * _TB_KEEP} more frames not shown ...\n")
        lines.extend(traceback.StackSummary.from_list(frames).format())
    return lines


def context_info(context):
    """(python_type, total_chars, chunk_lengths[:100], chunk_count) for the context value."""
    type_name = type(context).__name__
    if isinstance(context, str):
        n = len(context)
        return type_name, n, [n], 1
    if isinstance(context, dict):
        items = context.values()
    elif isinstance(context, (list, tuple)):
        items = context
    else:
        n = len(_safe_str(context))
        return type_name, n, [n], 1
    total = 0
    listed = []
    for item in items:
        n = len(item) if isinstance(item, str) else len(_safe_str(item))
        total += n
        if len(listed) < 100:
            listed.append(n)
    return type_name, total, listed, len(context)


# ---------------------------------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------------------------------


class Session:
    """One REPL namespace. `host` is the Rust HostBridge: host.call(kind, prompts, model) -> list[str]."""

    def __init__(self, host, context):
        own_builtins = dict(_PRISTINE_BUILTINS)
        own_builtins["input"] = _no_input
        self.final_var = None

        def llm_query(prompt, model=None):
            """Calls a sub-model once; returns its answer (or "Error: ..." when the call failed)."""
            return host.call("llm", [_as_prompt(prompt)], _as_model(model))[0]

        def llm_query_batched(prompts, model=None):
            """Calls a sub-model once per prompt, concurrently; returns the answers in order."""
            prompts = [prompts] if isinstance(prompts, str) else [_as_prompt(p) for p in prompts]
            if not prompts:
                return []
            return host.call("llm", prompts, _as_model(model))

        def rlm_query(prompt, model=None):
            """Runs a child RLM on the prompt; returns its answer (or "Error: ...")."""
            return host.call("rlm", [_as_prompt(prompt)], _as_model(model))[0]

        def rlm_query_batched(prompts, model=None):
            """Runs one child RLM per prompt, concurrently; returns the answers in order."""
            prompts = [prompts] if isinstance(prompts, str) else [_as_prompt(p) for p in prompts]
            if not prompts:
                return []
            return host.call("rlm", prompts, _as_model(model))

        def SHOW_VARS():
            """Lists your variables and their types."""
            found = {name: type(value).__name__ for name, value in self.user_variables().items()}
            if not found:
                return _Text("No variables created yet.")
            return _Text(f"Available variables: {found}")

        def FINAL_VAR(name):
            """Marks the variable called `name` as the final answer; returns its str()."""
            if not isinstance(name, str):
                # A common slip: FINAL_VAR(result) instead of FINAL_VAR("result"). Find the variable by identity.
                matches = [k for k, v in self.user_variables().items() if v is name]
                if not matches:
                    message = _Shown("Error: FINAL_VAR expects the name of a variable as a string, e.g. FINAL_VAR(\"result\")")
                    print(message)
                    return message
                name = matches[0]
            key = name.strip().strip("'\"`").strip()
            if self.is_visible(key):
                value = _safe_str(self.globals[key])
                self.final_var = (key, value)
                return _Text(value)
            self.final_var = (key, None)
            message = _Shown(
                f"Error: variable {key!r} not found. Available variables: {sorted(self.user_variables())}"
            )
            print(message)
            return message

        self.reserved = {
            "context": context,
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "SHOW_VARS": SHOW_VARS,
            "FINAL_VAR": FINAL_VAR,
        }
        # Also put back after every cell, though not "reserved names" in the protocol's sense: without them later
        # cells would not run properly.
        self.restored = {"__name__": "__main__", "__builtins__": own_builtins, **self.reserved}
        self.globals = dict(self.restored)
        self.globals["answer"] = {"content": None, "ready": False}
        # Names that exist before any user code ran are never "user variables".
        self.baseline = frozenset(self.globals)

    # -- namespace queries ------------------------------------------------------------------------------------------

    def user_variables(self):
        return {
            name: value
            for name, value in self.globals.items()
            if name not in self.baseline
            and not name.startswith("_")
            and not isinstance(value, types.ModuleType)
        }

    def is_visible(self, name):
        """Whether FINAL_VAR / get_variable may read `name`: any existing name except dunders."""
        return isinstance(name, str) and bool(name) and not name.startswith("__") and name in self.globals

    def variable_names(self):
        return sorted(self.user_variables())

    def get_variable(self, name):
        if name in self.baseline or not self.is_visible(name):
            return None
        return _safe_str(self.globals[name])

    # -- running cells ----------------------------------------------------------------------------------------------

    def prepare(self, source, cell_number):
        """Compiles a cell; returns (body, last_expression_or_None). Raises SyntaxError."""
        filename = f"<cell {cell_number}>"
        # Lets tracebacks (also of functions defined here and called from later cells) show the source lines.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        tree = ast.parse(source, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval", dont_inherit=True)
        body = compile(tree, filename, "exec", dont_inherit=True)
        return body, last

    def run(self, prepared, echo_limit):
        """Runs a prepared cell. Like IPython, echoes the repr of a last expression whose value is not None."""
        body, last = prepared
        exec(body, self.globals)
        if last is None:
            return
        value = eval(last, self.globals)
        if value is None or isinstance(value, _Shown):
            return
        if isinstance(value, (str, bytes)) and len(value) > echo_limit:
            # `context` as the last line of a cell over a 1 GB context: do not build a 1 GB repr just to drop it.
            print(repr(value[:echo_limit]) + " ...")
            capture = _captures.get(_get_ident())
            if capture is not None:
                capture.dropped += len(value) - echo_limit
            return
        print(repr(value))

    def describe_error(self, exc, tb=None):
        """(type name, str(exc), short traceback with only the frames of cell code).

        `tb` is passed separately because an exception fetched from C (Python 3.11) may have no __traceback__ yet.
        """
        if tb is None:
            tb = exc.__traceback__
        lines = _cell_traceback_lines(tb)
        lines.extend(traceback.format_exception_only(type(exc), exc))
        return type(exc).__name__, _safe_str(exc), "".join(lines).rstrip("\n")

    def finish(self):
        """After every cell: restores the reserved names; returns (answer or None, (name, value) or None)."""
        self.globals.update(self.restored)
        answer = None
        candidate = self.globals.get("answer")
        try:
            if isinstance(candidate, dict) and candidate.get("ready"):
                answer = _safe_str(candidate.get("content"))
        except BaseException:  # a `ready` whose truth value raises: not an answer
            answer = None
        final_var, self.final_var = self.final_var, None
        return answer, final_var

    def close(self):
        self.globals.clear()
        self.reserved.clear()
        self.restored.clear()
