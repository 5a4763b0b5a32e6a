# threat: fork the process
# expect: contained
# local: no
import os
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("LEAK: forked a child process")
except Exception as exc:
    print("blocked:", type(exc).__name__)
