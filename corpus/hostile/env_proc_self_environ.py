# threat: read the host process environment through /proc/self/environ
# expect: contained
# local: no
try:
    with open("/proc/self/environ", "rb") as f:
        data = f.read()
    if b"API_KEY" in data:
        print("LEAK: /proc/self/environ readable with keys", data.count(b"\0"))
    else:
        print("readable but no keys")
except Exception as exc:
    print("blocked:", type(exc).__name__)
