# threat: install signal handlers that ignore SIGINT and SIGTERM for the host process
# expect: contained
# local: yes
# note: the runner also checks the host process's signal dispositions after every snippet. Under WASI the handler table belongs to the guest interpreter's own emulation and no host signal ever reaches it, so a handler installed there is not a leak.
import signal, sys
for sig in (signal.SIGINT, signal.SIGTERM):
    try:
        signal.signal(sig, signal.SIG_IGN)
        if sys.platform == "wasi":
            print("guest-only handler for", sig.name)
        else:
            print("LEAK: installed a handler for", sig.name)
    except Exception as exc:
        print("blocked:", type(exc).__name__)
