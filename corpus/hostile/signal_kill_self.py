# threat: send SIGKILL to the process running the interpreter
# expect: contained
# local: no
import os, signal
try:
    os.kill(os.getpid(), signal.SIGKILL)
    print("kill returned")
except Exception as exc:
    print("blocked:", type(exc).__name__)
