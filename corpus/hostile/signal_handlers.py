# threat: install signal handlers that ignore SIGINT and SIGTERM for the host process
# expect: contained
# local: no
# note: local executor bug: a cell that happens to run on the thread that initialised the interpreter may install process-wide handlers (seen: SIGINT and SIGTERM set to SIG_IGN in the host)
import signal
for sig in (signal.SIGINT, signal.SIGTERM):
    try:
        signal.signal(sig, signal.SIG_IGN)
        print("LEAK: installed a handler for", sig.name)
    except Exception as exc:
        print("blocked:", type(exc).__name__)
