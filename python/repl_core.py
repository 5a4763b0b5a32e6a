"""The REPL semantics shared by rlm's two executors.

Not a module of its own: its text is placed into the Python source of each executor, which then defines its
``Session`` as a subclass of ``SessionCore``:

* ``crates/executor-local/src/prelude.py`` (CPython embedded in the host process): ``runtime.rs`` inserts this text at
  the marker line of the prelude, after the prelude has given its module a private copy of the builtins;
* ``crates/executor-wasm/src/driver.py`` (CPython for WASI): ``lib.rs`` puts this text in front of the driver.

What lives here is what both executors must do alike: the reserved names (``context``, the sub-call functions,
``SHOW_VARS``, ``FINAL_VAR``) and their restoration after each cell, the ``answer`` dict, the user-variable queries,
the IPython-style echo of a trailing expression, the capped output buffer of a cell, short tracebacks with
``<cell N>`` file names and the context summary. What differs stays with each executor: how sub-calls reach the host,
how sys.stdout / sys.stderr reach the buffer, threads and signals.
"""

import ast  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------------
# Output capture buffer (each executor routes sys.stdout / sys.stderr into it its own way)
# ---------------------------------------------------------------------------------------------------------------------


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
# The session core
# ---------------------------------------------------------------------------------------------------------------------


class SessionCore:
    """One REPL namespace.

    `host_call(kind, prompts, model) -> list[str]` sends a batch of sub-calls to the host; `builtins_table` is the
    builtins dict the session's copy is made from. Subclasses provide `_capture()`: the running cell's capture (an
    object with a `dropped` count) or None.
    """

    def __init__(self, context, host_call, builtins_table):
        own_builtins = dict(builtins_table)
        own_builtins["input"] = _no_input
        self.final_var = None

        def llm_query(prompt, model=None):
            """Calls a sub-model once; returns its answer (or "Error: ..." when the call failed)."""
            return host_call("llm", [_as_prompt(prompt)], _as_model(model))[0]

        def llm_query_batched(prompts, model=None):
            """Calls a sub-model once per prompt, concurrently; returns the answers in order."""
            prompts = [prompts] if isinstance(prompts, str) else [_as_prompt(p) for p in prompts]
            if not prompts:
                return []
            return host_call("llm", prompts, _as_model(model))

        def rlm_query(prompt, model=None):
            """Runs a child RLM on the prompt; returns its answer (or "Error: ...")."""
            return host_call("rlm", [_as_prompt(prompt)], _as_model(model))[0]

        def rlm_query_batched(prompts, model=None):
            """Runs one child RLM per prompt, concurrently; returns the answers in order."""
            prompts = [prompts] if isinstance(prompts, str) else [_as_prompt(p) for p in prompts]
            if not prompts:
                return []
            return host_call("rlm", prompts, _as_model(model))

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

    def _capture(self):
        raise NotImplementedError

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
            capture = self._capture()
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
