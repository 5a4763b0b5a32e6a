# threat: flood stderr with 10**8 characters in chunks
# expect: contained
# local: yes
import sys
chunk = "e" * 10**6
for _ in range(100):
    sys.stderr.write(chunk)
