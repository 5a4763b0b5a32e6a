# threat: write 200 MB straight to fd 1, past the guest's capture, to fill the host's memory
# expect: contained
# local: no
import os
chunk = b"y" * (50 << 20)
for _ in range(4):
    os.write(1, chunk)
