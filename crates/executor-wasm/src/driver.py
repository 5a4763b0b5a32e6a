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

The REPL semantics (reserved names restored after each cell, ``answer`` dict, ``FINAL_VAR``, ``SHOW_VARS``,
IPython-style echo of a trailing expression, short tracebacks with ``<cell N>`` file names) are those of
``python/repl_core.py``, shared with the local executor: ``lib.rs`` puts that text in front of this one, and
``Session`` below subclasses its ``SessionCore``. What is left here is the channel, the capped output capture and the
main loop.
"""

import builtins
import json
import os
import struct
import sys
import traceback

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
# Output capture (single-threaded: one cell at a time in this interpreter), into the REPL core's `_Capture`
# ---------------------------------------------------------------------------------------------------------------------


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
# The session
# ---------------------------------------------------------------------------------------------------------------------


class Session(SessionCore):  # noqa: F821 (defined by the REPL core)
    """The REPL namespace of this interpreter (one session per wasm instance)."""

    def __init__(self, context):
        SessionCore.__init__(self, context, host_call, builtins.__dict__)  # noqa: F821

    def _capture(self):
        return _current[0]

    def _error(self, exc):
        kind, message, tb = self.describe_error(exc)
        return {"kind": kind, "message": message, "traceback": tb}

    def run_cell(self, source, cell_number, limit):
        """Runs one cell with its output captured; returns the `done` frame (header, payload)."""
        capture = _Capture(limit)
        _current[0] = capture
        error = None
        try:
            try:
                prepared = self.prepare(source, cell_number)
            except BaseException as exc:  # SyntaxError, or anything odd during compilation
                error = self._error(exc)
            else:
                try:
                    self.run(prepared, limit)
                except BaseException as exc:  # user code: SystemExit and KeyboardInterrupt are errors too
                    error = self._error(exc)
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