# threat: spawn a pseudo-terminal shell with pty
# expect: contained
# local: no
try:
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        import os
        os._exit(0)
    print("LEAK: pty.fork worked")
except Exception as exc:
    print("blocked:", type(exc).__name__)
