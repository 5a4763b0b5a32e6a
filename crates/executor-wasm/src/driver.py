"""Guest side of rlm's wasm executor: the REPL loop that runs inside CPython-on-WebAssembly.

The host (``src/session.rs``, ``src/guest.rs``) starts ``python -c <this file>`` in a wasmtime Store with no
capabilities (no files, no environment, no sockets). Three descriptors reach the host, all served by the host's own
``fd_read`` / ``fd_write`` imports:

* fd 1 and fd 2: the running cell's stdout and stderr. The host captures them itself and enforces the output cap on
  its side, so nothing the guest does to its own streams can make a cell report output it did not write.
* ``CHANNEL_FD`` (0): the control channel. Frames in both directions: an 8-byte header ``<u32 LE json_len><u32 LE
  payload_len>``, then ``json_len`` bytes of a UTF-8 JSON object, then ``payload_len`` raw bytes.

User code runs in this same interpreter and can write to fd 0 too, so the host does not take a control frame on its
word. It accepts ``done``, ``value`` and ``names`` frames only when ``_serve`` below, the main loop, wrote them (whole,
in one write), which it recognises by the interpreter's call stack: user code always runs at least one interpreter
activation deeper (inside ``exec``, or called through ``operator.call``), and the host sees the wasm stack, which the
guest cannot forge. A read of the channel while a job runs (other than for sub-call answers) stops the sandbox, and a
reply goes out only when the guest next asks for a job, so a job's time limit covers everything until then. At start-up, before any user code exists, the driver shows the host what the
main loop's stack and a nested activation's stack look like (``calibrate`` and ``probe`` frames). The rules the main
loop follows for that to hold are at ``_serve``. Sub-call frames (``sub``) may come from anywhere: user code calling
``llm_query`` is exactly what they are for. See docs/security.md.

Host -> guest:  ``init`` (payload: context as UTF-8 text or JSON), ``cell``, ``get``, ``names``, ``answers``, ``exit``.
Guest -> host:  ``snapshot``, ``calibrate``, ``probe``, ``ready``, ``init_error``, ``done`` (payload: answer +
final_var value), ``value``, ``names``, ``sub`` (payload: prompts).

The REPL semantics (reserved names restored after each cell, ``answer`` dict, ``FINAL_VAR``, ``SHOW_VARS``,
IPython-style echo of a trailing expression, short tracebacks with ``<cell N>`` file names) are those of
``python/repl_core.py``, shared with the local executor: ``lib.rs`` puts that text in front of this one, and
``Session`` below subclasses its ``SessionCore``.
"""

import builtins
import gc
import json
import operator
import os
import struct
import sys
import time

CHANNEL_FD = __CHANNEL_FD__  # substituted by the host before start-up
_HEADER = struct.Struct("<II")
_os_read = os.read
_os_write = os.write

# Sizes the host enforces on its side too (it sends its values in the `init` frame); checking them here first turns
# an oversized request into a clear Python exception for the model instead of a broken channel.
_limits = {
    "prompt_bytes": 16 << 20,
    "batch_len": 10_000,
    "batch_bytes": 32 << 20,
    "answer_bytes": 4 << 20,
}

# Error messages and tracebacks longer than this are shortened before they are sent.
_MAX_ERROR_TEXT = 32 * 1024
_MAX_NAMES = 10_000


# ---------------------------------------------------------------------------------------------------------------------
# Sub-calls (used from user code's depth; the host accepts `sub` frames from anywhere)
# ---------------------------------------------------------------------------------------------------------------------


def _read_exact(n):
    if n == 0:
        return b""
    data = _os_read(CHANNEL_FD, n)
    while len(data) < n:
        more = _os_read(CHANNEL_FD, n - len(data))
        if not more:
            raise EOFError("the host closed the channel")
        data += more
    return data


def _write_all(data):
    view = memoryview(data)
    while view:
        view = view[_os_write(CHANNEL_FD, view) :]


def _frame(header, payload=b""):
    # ensure_ascii=False + "replace": a lone surrogate in a str becomes "?" instead of invalid JSON for the host.
    encoded = json.dumps(header, ensure_ascii=False).encode("utf-8", "replace")
    return _HEADER.pack(len(encoded), len(payload)) + encoded + payload


def host_call(kind, prompts, model):
    """Sends one batch of sub-call prompts to the host and blocks until all answers are back."""
    if len(prompts) > _limits["batch_len"]:
        raise ValueError(
            f"{len(prompts):,} prompts in one batch; the sandbox allows {_limits['batch_len']:,} per call"
        )
    for index, prompt in enumerate(prompts):
        # A str has at least as many UTF-8 bytes as characters: refuse a huge one before encoding it.
        if len(prompt) > _limits["prompt_bytes"]:
            raise ValueError(
                f"prompt {index} is {len(prompt):,} characters; the sandbox allows {_limits['prompt_bytes']:,} bytes"
                " per prompt"
            )
    encoded = [p.encode("utf-8", "replace") for p in prompts]
    total = 0
    for index, data in enumerate(encoded):
        if len(data) > _limits["prompt_bytes"]:
            raise ValueError(
                f"prompt {index} is {len(data):,} bytes; the sandbox allows {_limits['prompt_bytes']:,} per prompt"
            )
        total += len(data)
    if total > _limits["batch_bytes"]:
        raise ValueError(f"the prompts add up to {total:,} bytes; the sandbox allows {_limits['batch_bytes']:,} per batch")
    lens = [len(e) for e in encoded]
    payload = b"".join(encoded)
    del encoded
    _write_all(_frame({"op": "sub", "kind": kind, "model": model, "lens": lens}, payload))
    del payload
    json_len, payload_len = _HEADER.unpack(_read_exact(_HEADER.size))
    header = json.loads(_read_exact(json_len))
    payload = _read_exact(payload_len)
    if header.get("op") != "answers":
        raise RuntimeError(f"unexpected frame from the host: {header.get('op')!r}")
    out, start = [], 0
    for n in header["lens"]:
        out.append(payload[start : start + n].decode("utf-8", "replace"))
        start += n
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Output: streamed to fd 1 / fd 2, where the host captures and caps it
# ---------------------------------------------------------------------------------------------------------------------


class _CellOutput:
    """Output of the running cell on its way to the host. Text past the cell's limit is only counted (the host caps
    what it receives anyway; this keeps a `print("x" * 10**9)` from being encoded just to be dropped)."""

    __slots__ = ("remaining", "dropped", "pending", "pending_chars")

    _FLUSH_AT = 64 * 1024

    def __init__(self, limit):
        self.remaining = limit
        self.dropped = 0
        self.pending = []
        self.pending_chars = 0

    def write(self, fd, text):
        n = len(text)
        room = self.remaining
        if n > room:
            self.dropped += n - room
            text = text[:room]
        if text:
            self.remaining = room - len(text)
            self.pending.append((fd, text))
            self.pending_chars += len(text)
            if self.pending_chars >= self._FLUSH_AT:
                self.flush()
        return n

    def flush(self):
        pending, self.pending, self.pending_chars = self.pending, [], 0
        for fd in (1, 2):
            text = "".join(t for f, t in pending if f == fd)
            if text:
                data = memoryview(text.encode("utf-8", "replace"))
                while data:
                    data = data[_os_write(fd, data) :]


class _Stream:
    """Stands in for sys.stdout / sys.stderr: writes go to the current cell's output (or nowhere between cells)."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, fd):
        self._fd = fd

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        output = _current[0]
        if output is not None:
            return output.write(self._fd, text)
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


_current = [None]  # the output of the running cell


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
# The session
# ---------------------------------------------------------------------------------------------------------------------


def _shorten(text):
    if len(text) <= _MAX_ERROR_TEXT:
        return text
    half = _MAX_ERROR_TEXT // 2
    return f"{text[:half]}\n... {len(text) - 2 * half:,} characters not shown ...\n{text[-half:]}"


def _utf8(text):
    return text.encode("utf-8", "replace")


def _within_answer_cap(text, what):
    """(UTF-8 bytes, None) when `text` fits the answer cap, else (None, the error for the cell)."""
    limit = _limits["answer_bytes"]
    # At least one byte per character: a huge text is refused before it is encoded.
    encoded = None if len(text) > limit else _utf8(text)
    if encoded is not None and len(encoded) <= limit:
        return encoded, None
    size = f"{len(encoded):,} bytes" if encoded is not None else f"{len(text):,} characters or more"
    return None, {"kind": "ValueError", "message": f"{what} is {size}; the sandbox allows {limit:,} bytes", "traceback": ""}


class Session(SessionCore):  # noqa: F821 (defined by the REPL core)
    """The REPL namespace of this interpreter (one session per wasm instance)."""

    def __init__(self, context):
        SessionCore.__init__(self, context, host_call, builtins.__dict__)  # noqa: F821

    def _capture(self):
        return _current[0]

    def run_cell(self, source, cell_number, limit):
        """Runs one cell with its output streamed to the host; returns the `done` frame."""
        output = _CellOutput(limit)
        _current[0] = output
        error = None
        try:
            try:
                prepared = self.prepare(source, cell_number)
            except BaseException as exc:  # SyntaxError, or anything odd during compilation
                error = exc
            else:
                try:
                    self.run(prepared, limit)
                except BaseException as exc:  # user code: SystemExit and KeyboardInterrupt are errors too
                    error = exc
            if error is not None:
                kind, message, tb = self.describe_error(error)
                error = {"kind": kind, "message": _shorten(message), "traceback": _shorten(tb)}
            answer, final_var = self.finish()
        finally:
            _current[0] = None
            output.flush()
        header = {"op": "done", "error": error, "dropped": output.dropped, "answer_len": None, "final_var": None}
        parts = []
        if answer is not None:
            encoded, refused = _within_answer_cap(answer, "the answer")
            header["error"] = header["error"] or refused
            if encoded is not None:
                header["answer_len"] = len(encoded)
                parts.append(encoded)
        if final_var is not None:
            name, value = final_var
            encoded, refused = (None, None) if value is None else _within_answer_cap(value, f"variable {name!r}")
            header["error"] = header["error"] or refused
            if refused is None:
                header["final_var"] = {"name": str(name)[:200], "len": None if encoded is None else len(encoded)}
                parts.append(encoded or b"")
        payload = b"".join(parts)
        return _frame(header, payload)


# ---------------------------------------------------------------------------------------------------------------------
# Jobs (run by the main loop through operator.call, so always one activation deeper than the main loop)
# ---------------------------------------------------------------------------------------------------------------------


def _run_job(session, header_bytes, payload):
    """Handles one frame from the host; returns the reply frame, or None to leave the loop."""
    header = json.loads(header_bytes)
    op = header.get("op")
    if op == "cell":
        return session.run_cell(payload.decode("utf-8"), header["n"], header["limit"])
    if op == "get":
        value = session.get_variable(header["name"])
        if value is None:
            return _frame({"op": "value", "len": None})
        encoded = _utf8(value)[: _limits["answer_bytes"]]
        return _frame({"op": "value", "len": len(encoded)}, encoded)
    if op == "names":
        return _frame({"op": "names", "names": session.variable_names()[:_MAX_NAMES]})
    if op == "exit":
        return None
    raise RuntimeError(f"unknown frame from the host: {op!r}")


def _serve(
    session,
    *,
    read=_os_read,
    write=_os_write,
    call=operator.call,
    run_job=_run_job,
    unpack=_HEADER.unpack,
    length=len,
    kind=type,
    reply_type=bytes,
    fd=CHANNEL_FD,
):
    """The main loop: read a job, run it one activation deeper, write its reply.

    The host accepts replies only from this function's interpreter activation, so it must never run
    code that user code can replace or extend in this activation: everything it uses is bound as a parameter default
    before any user code exists (fast locals cannot be rebound from outside in 3.12, and `sys.settrace`, which could,
    is refused by the audit hook), it calls Python code only through `operator.call` (a C function, so the callee gets
    its own activation), and it touches only objects of exact built-in types it checked itself.
    """
    while True:
        head = read(fd, 8)
        while length(head) < 8:
            more = read(fd, 8 - length(head))
            if not more:
                return
            head = head + more
        json_len, payload_len = unpack(head)
        wanted = json_len + payload_len
        body = read(fd, wanted)
        while length(body) < wanted:
            more = read(fd, wanted - length(body))
            if not more:
                return
            body = body + more
        reply = call(run_job, session, body[:json_len], body[json_len:])
        del body
        if reply is None:
            return
        if kind(reply) is not reply_type:
            return
        while reply:
            reply = reply[write(fd, reply) :]


# ---------------------------------------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------------------------------------


def _install_audit_hook():
    """Refuses what could rebind the main loop's locals or forge interpreter state from Python: tracing (a trace
    function's edits to `frame.f_locals` are written back), hand-made code objects (malformed bytecode can corrupt
    memory), and CPython's test-only C modules (they expose raw memory and internals)."""
    refused_events = frozenset({"sys.settrace", "sys.setprofile", "code.__new__"})
    refused_modules = frozenset(
        {"_testcapi", "_testinternalcapi", "_testbuffer", "_testimportmultiple", "_testmultiphase", "_testsinglephase",
         "_testclinic", "_xxtestfuzz", "_ctypes", "_ctypes_test", "_xxsubinterpreters", "_xxinterpchannels"}
    )

    def hook(event, args, refused_events=refused_events, refused_modules=refused_modules):
        if event in refused_events:
            raise RuntimeError(f"{event} is not available in the sandbox")
        if event == "import" and args and args[0] in refused_modules:
            raise ImportError(f"module {args[0]!r} is not available in the sandbox")

    sys.addaudithook(hook)
    for name in refused_modules:
        sys.modules.pop(name, None)


def _probe_from_function(frame):
    _write_all(frame)


def _probe_from_generator(frame):
    _write_all(frame)
    yield


def _calibrate():
    """Shows the host the stack of the main loop's activation and of nested ones (before any user code exists)."""
    for _ in range(3):  # the first call is not yet specialised by the interpreter, the later ones are
        frame = _frame({"op": "calibrate"})
        view = memoryview(frame)
        while view:
            view = view[_os_write(CHANNEL_FD, view) :]
    exec("w(f)", {"w": _write_all, "f": _frame({"op": "probe", "via": "exec"})})
    list(map(_probe_from_function, [_frame({"op": "probe", "via": "call"})]))
    next(_probe_from_generator(_frame({"op": "probe", "via": "generator"})), None)


def _load_context(header, payload):
    kind = header["context_kind"]
    if kind == "text":
        return payload.decode("utf-8")
    if kind == "json":
        return json.loads(payload)
    raise ValueError(f"unknown context kind {kind!r}")


def _boot():
    """Reads `init` and loads the context; returns the session, or None when the context did not load."""
    sys.stdout = _Stream(1)
    sys.stderr = _Stream(2)
    sys.stdin = sys.__stdin__ = _NoInput()
    json_len, payload_len = _HEADER.unpack(_read_exact(_HEADER.size))
    header = json.loads(_read_exact(json_len))
    payload = _read_exact(payload_len)
    if header.get("op") != "init":
        raise RuntimeError(f"expected an init frame, got {header.get('op')!r}")
    _limits.update(header.get("limits") or {})
    _install_audit_hook()
    try:
        context = _load_context(header, payload)
    except Exception as exc:  # not UTF-8, not JSON: the caller's input, reported as such
        _write_all(_frame({"op": "init_error", "message": f"{type(exc).__name__}: {exc}"}))
        return None
    del payload
    # No host variables, argv or cwd leak in: start the REPL from a clean slate.
    sys.argv = [""]
    session = Session(context)
    del context
    _calibrate()
    python_type, total, lens, count = context_info(session.globals["context"])  # noqa: F821 (REPL core)
    _write_all(
        _frame({"op": "ready", "python_type": python_type, "total_chars": total, "chunk_lengths": lens, "chunk_count": count})
    )
    return session


def _main():
    """Boots the session and serves it until the host says `exit`. Runs once per sandbox, entered either from the
    top level below (a fresh interpreter) or by the host straight into a pre-initialised snapshot (src/snapshot.rs)."""
    try:
        session = _boot()
        if session is not None:
            _serve(session)
    except BaseException:
        # A broken channel or a bug here: leave the reason where the host collects diagnostics (fd 2), then fail.
        import traceback

        os.write(2, traceback.format_exc().encode("utf-8", "replace"))
        os._exit(70)


def _snapshot_point(monotonic=time.monotonic):
    """Where a pre-initialised snapshot is taken: the interpreter is up and everything above is defined, no session
    exists yet. The frame tells the host where `_main` is and what the function type looks like; when the host builds
    a snapshot it stops the interpreter at the clock read that follows (a C call that keeps the GIL, so the snapshot
    holds it), and every session later calls `_main` through the function type's `tp_call`. On a fresh start the host
    ignores the frame and the clock read is just a clock read."""
    # Everything that exists now lives as long as the interpreter: the collector leaves it alone from here on, so
    # a session's collections never walk (and write to, copying) the snapshot's pages.
    gc.collect()
    gc.freeze()
    function_type = type(_main)
    _write_all(
        _frame(
            {
                "op": "snapshot",
                "callable": id(_main),
                "args": id(()),
                "function_type": id(function_type),
                "type_type": id(type),
                "method_type": id(types.MethodType),  # noqa: F821 (imported by the REPL core)
                "basicsize": function_type.__basicsize__,
                "itemsize": function_type.__itemsize__,
            }
        )
    )
    monotonic()


_snapshot_point()
_main()
