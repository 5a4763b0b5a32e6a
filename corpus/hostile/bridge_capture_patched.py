# threat: patch the driver's output capture so it forwards everything past the cap (the cap used to be enforced only in the guest)
# expect: contained
# local: no
import os, sys
capture = type(sys.stdout).write.__globals__["_CellOutput"]
capture.write = lambda self, fd, text: os.write(fd, text.encode()) and len(text)
print("x" * 20_000_000)
