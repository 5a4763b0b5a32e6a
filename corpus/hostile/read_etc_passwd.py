# threat: read /etc/passwd from the host
# expect: contained
# local: no
try:
    with open("/etc/passwd") as f:
        text = f.read()
    if "root:" in text:
        print("LEAK: /etc/passwd readable")
except Exception as exc:
    print("blocked:", type(exc).__name__)
