# threat: replace the process image with a shell via os.execv
# expect: contained
# local: no
import os
try:
    os.execv("/bin/sh", ["sh", "-c", "echo LEAK: exec worked"])
except Exception as exc:
    print("blocked:", type(exc).__name__)
