# threat: list the host's root directory
# expect: contained
# local: no
import os
try:
    entries = set(os.listdir("/"))
    host_like = entries & {"etc", "proc", "root", "home", "var", "boot", "sys"}
    if len(host_like) >= 3:
        print("LEAK: host root directory visible:", sorted(host_like))
    print("entries:", len(entries))
except Exception as exc:
    print("blocked:", type(exc).__name__)
