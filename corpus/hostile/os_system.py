# threat: run a shell command with os.system that writes a host file
# expect: contained
# local: no
# host-absent: /tmp/rlm-conformance-hostile-os-system.txt
import os
try:
    status = os.system("echo pwned > /tmp/rlm-conformance-hostile-os-system.txt")
    print("os.system returned", status)
except Exception as exc:
    print("blocked:", type(exc).__name__)
