"""Guest side of rlm's wasm executor: the REPL loop that runs inside CPython-on-WebAssembly.

The host (``src/session.rs``) starts ``python -c <this file>`` in a wasmtime Store with no capabilities (no files, no
environment, no sockets) and talks to it over a private channel: reads *and writes* on file descriptor ``CHANNEL_FD``
(0, standard input) are served by the host itself (it shadows the WASI ``fd_read`` / ``fd_write`` imports), so user
code printing to ``sys.__stdout__`` or fd 1 cannot corrupt the protocol. ``sys.stdin`` is replaced so that user code
does not read the channel by accident.

Frames, both directions: an 8-byte header ``<u32 LE json_len><u32 LE payload_len>``, then ``json_len`` bytes of a
UTF-8 JSON object, then ``payload_len`` raw bytes. Big data (the context, prompts and answers of sub-calls, captured
output) travels in the payload, never inside JSON strings, so it is neither escaped nor decoded twice.

Host -> guest:  ``init`` (payload: context as UTF-8 text or JSON), ``cell``, ``get``, ``names``, ``answers``, ``exit``.
Guest -> host:  ``ready``, ``done`` (payload: stdout + stderr), ``value``, ``names``, ``sub`` (payload: prompts).

The REPL semantics mirror ``crates/executor-local/src/prelude.py`` so both executors behave the same: reserved
names restored after each cell, ``answer`` dict, ``FINAL_VAR``, ``SHOW_VARS``, IPython-style echo of a trailing
expression, capped output capture, short tracebacks with ``<cell N>`` file names.
"""

import ast
import builtins
import json
import linecache
import os
import struct
import sys
import traceback
import types

CHANNEL_FD = __CHANNEL_FD__  # substituted by the host before start-up
_HEADER = struct.Struct("<II")


# ---------------------------------------------------------------------------------------------------------------------
# Channel
# ---------------------------------------------------------------------------------------------------------------------


def _read_exact(n):
    """Reads exactly n bytes from the channel (the host usually delivers them in one call: one copy)."""
    if n == 0:
        return b""
    first = os.read(CHANNEL_FD, n)
    if len(first) == n:
        return first
    if not first:
        raise EOFError("the host closed the channel")
    buf = bytearray(n)
    buf[: len(first)] = first
    got = len(first)
    del first
    view = memoryview(buf)
    while got < n:
        chunk = os.read(CHANNEL_FD, n - got)
        if not chunk:
            raise EOFError("the host closed the channel")
        view[got : got + len(chunk)] = chunk
        got += len(chunk)
    view.release()
    return bytes(buf)


def read_frame():
    json_len, payload_len = _HEADER.unpack(_read_exact(_HEADER.size))
    header = json.loads(_read_exact(json_len))
    return header, _read_exact(payload_len)


def _write_all(data):
    view = memoryview(data)
    while view:
        written = os.write(CHANNEL_FD, view)
        view = view[written:]


def write_frame(header, payload=b""):
    # ensure_ascii=False + "replace": a lone surrogate in a str becomes "?" instead of invalid JSON for the host.
    encoded = json.dumps(header, ensure_ascii=False).encode("utf-8", "replace")
    _write_all(_HEADER.pack(len(encoded), len(payload)) + encoded)
    if payload:
        _write_all(payload)


def _utf8(text):
    return text.encode("utf-8", "replace")


def _split(payload, lens):
    out = []
    start = 0
    for n in lens:
        out.append(payload[start : start + n].decode("utf-8", "replace"))
        start += n
    return out


def host_call(kind, prompts, model):
    """Sends one batch of sub-call prompts to the host and blocks until all answers are back."""
    encoded = [_utf8(p) for p in prompts]
    write_frame({"op": "sub", "kind": kind, "model": model, "lens": [len(e) for e in encoded]}, b"".join(encoded))
    del encoded
    header, payload = read_frame()
    if header.get("op") != "answers":
        raise RuntimeError(f"unexpected frame from the host: {header.get('op')!r}")
    return _split(payload, header["lens"])


# ---------------------------------------------------------------------------------------------------------------------
# Output capture (single-threaded: one cell at a time in this interpreter)
# ---------------------------------------------------------------------------------------------------------------------


class _Capture:
    """stdout and stderr of one cell, capped in total characters; the rest is only counted."""

    __slots__ = ("parts", "remaining", "dropped")

    def __init__(self, limit):
        self.parts = ([], [])
        self.remaining = limit
        self.dropped = 0

    def write(self, index, text):
        n = len(text)
        room = self.remaining
        if n <= room:
            self.parts[index].append(text)
            self.remaining = room - n
        else:
            if room > 0:
                self.parts[index].append(text[:room])
                self.remaining = 0
            self.dropped += n - room
        return n


class _Stream:
    """Stands in for sys.stdout / sys.stderr: writes go to the current cell's capture (or nowhere between cells)."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, index):
        self._index = index

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        capture = _current[0]
        if capture is not None:
            return capture.write(self._index, text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def fileno(self):
        raise OSError("captured stream has no file descriptor")


_current = [None]  # the capture of the running cell


class _NoInput:
    """Stands in for sys.stdin: there is nobody to type, and fd 0 is the host channel."""

    encoding = "utf-8"
    errors = "strict"

    def read(self, *_args):
        return ""

    def readline(self, *_args):
        return ""

    def readlines(self, *_args):
        return []

    def __iter__(self):
        return iter(())

    def isatty(self):
        return False

    def readable(self):
        return True

    def writable(self):
        return False

    def close(self):
        pass

    def fileno(self):
        raise OSError("stdin is not available in this REPL")


# ---------------------------------------------------------------------------------------------------------------------
# Helpers (same behaviour as the local executor's prelude)
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
    except BaseException as exc:
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
# The session
# ---------------------------------------------------------------------------------------------------------------------


class Session:
    """The REPL namespace of this interpreter (one session per wasm instance)."""

    def __init__(self, context):
        own_builtins = dict(builtins.__dict__)
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
        self.restored = {"__name__": "__main__", "__builtins__": own_builtins, **self.reserved}
        self.globals = dict(self.restored)
        self.globals["answer"] = {"content": None, "ready": False}
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
        return isinstance(name, str) and bool(name) and not name.startswith("__") and name in self.globals

    def variable_names(self):
        return sorted(self.user_variables())

    def get_variable(self, name):
        if name in self.baseline or not self.is_visible(name):
            return None
        return _safe_str(self.globals[name])

    # -- running cells ----------------------------------------------------------------------------------------------

    def prepare(self, source, cell_number):
        filename = f"<cell {cell_number}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        tree = ast.parse(source, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), filename, "eval", dont_inherit=True)
        body = compile(tree, filename, "exec", dont_inherit=True)
        return body, last

    def run(self, prepared, echo_limit):
        body, last = prepared
        exec(body, self.globals)
        if last is None:
            return
        value = eval(last, self.globals)
        if value is None or isinstance(value, _Shown):
            return
        if isinstance(value, (str, bytes)) and len(value) > echo_limit:
            print(repr(value[:echo_limit]) + " ...")
            capture = _current[0]
            if capture is not None:
                capture.dropped += len(value) - echo_limit
            return
        print(repr(value))

    def describe_error(self, exc):
        tb = exc.__traceback__
        lines = _cell_traceback_lines(tb)
        lines.extend(traceback.format_exception_only(type(exc), exc))
        return {"kind": type(exc).__name__, "message": _safe_str(exc), "traceback": "".join(lines).rstrip("\n")}

    def finish(self):
        self.globals.update(self.restored)
        answer = None
        candidate = self.globals.get("answer")
        try:
            if isinstance(candidate, dict) and candidate.get("ready"):
                answer = _safe_str(candidate.get("content"))
        except BaseException:
            answer = None
        final_var, self.final_var = self.final_var, None
        return answer, final_var

    def run_cell(self, source, cell_number, limit):
        """Runs one cell with its output captured; returns the `done` frame (header, payload)."""
        capture = _Capture(limit)
        _current[0] = capture
        error = None
        try:
            try:
                prepared = self.prepare(source, cell_number)
            except BaseException as exc:  # SyntaxError, or anything odd during compilation
                error = self.describe_error(exc)
            else:
                try:
                    self.run(prepared, limit)
                except BaseException as exc:  # user code: SystemExit and KeyboardInterrupt are errors too
                    error = self.describe_error(exc)
            answer, final_var = self.finish()
        finally:
            _current[0] = None
        out = _utf8("".join(capture.parts[0]))
        err = _utf8("".join(capture.parts[1]))
        header = {
            "op": "done",
            "error": error,
            "dropped": capture.dropped,
            "answer": answer,
            "final_var": None if final_var is None else {"name": final_var[0], "value": final_var[1]},
            "stdout_len": len(out),
            "stderr_len": len(err),
        }
        return header, out + err


# ---------------------------------------------------------------------------------------------------------------------
# Main loop
# ---------------------------------------------------------------------------------------------------------------------


def _load_context(header, payload):
    kind = header["context_kind"]
    if kind == "text":
        return payload.decode("utf-8")
    if kind == "json":
        return json.loads(payload)
    raise ValueError(f"unknown context kind {kind!r}")


def main():
    sys.stdout = _Stream(0)
    sys.stderr = _Stream(1)
    sys.stdin = sys.__stdin__ = _NoInput()
    header, payload = read_frame()
    if header.get("op") != "init":
        raise RuntimeError(f"expected an init frame, got {header.get('op')!r}")
    try:
        context = _load_context(header, payload)
    except Exception as exc:  # not UTF-8, not JSON: the caller's input, reported as such
        write_frame({"op": "init_error", "message": f"{type(exc).__name__}: {exc}"})
        return
    del payload
    # No host variables, argv or cwd leak in: start the REPL from a clean slate.
    sys.argv = [""]
    session = Session(context)
    del context
    python_type, total, lens, count = context_info(session.globals["context"])
    write_frame({"op": "ready", "python_type": python_type, "total_chars": total, "chunk_lengths": lens, "chunk_count": count})
    while True:
        header, payload = read_frame()
        op = header.get("op")
        if op == "cell":
            done, out = session.run_cell(payload.decode("utf-8"), header["n"], header["limit"])
            del payload
            write_frame(done, out)
        elif op == "get":
            write_frame({"op": "value", "value": session.get_variable(header["name"])})
        elif op == "names":
            write_frame({"op": "names", "names": session.variable_names()})
        elif op == "exit":
            return
        else:
            raise RuntimeError(f"unknown frame from the host: {op!r}")


try:
    main()
except BaseException:
    # A broken channel or a bug here: leave the reason where the host collects diagnostics (fd 2), then fail.
    os.write(2, traceback.format_exc().encode("utf-8", "replace"))
    raise SystemExit(70)
