# threat: call into libc through ctypes to escape the interpreter
# expect: contained
# local: no
try:
    import ctypes
    libc = ctypes.CDLL(None)
    pid = libc.getpid()
    print("LEAK: called libc getpid", pid > 0)
except Exception as exc:
    print("blocked:", type(exc).__name__)
