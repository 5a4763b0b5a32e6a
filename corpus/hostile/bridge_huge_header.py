# threat: announce a 4 GiB frame header and start sending it, so the host buffers gigabytes outside the guest's memory limit
# expect: error:SystemError
# local: no
import os, struct
os.write(0, struct.pack("<II", 2**32 - 1, 0))
chunk = b"{" * (64 << 20)
for _ in range(8):
    os.write(0, chunk)
print("LEAK: the host kept reading an oversized frame")
