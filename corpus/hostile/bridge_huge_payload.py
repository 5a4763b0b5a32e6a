# threat: announce a 2 GiB frame payload and stream 256 MiB of it, so the host buffers it outside the guest's memory limit
# expect: error:SystemError
# local: no
import os, struct
os.write(0, struct.pack("<II", 2, 2**31) + b"{}")
chunk = b"x" * (64 << 20)
for _ in range(4):
    os.write(0, chunk)
print("LEAK: the host kept reading an oversized frame")
