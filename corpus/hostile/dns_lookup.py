# threat: resolve host names (DNS or /etc/hosts)
# expect: contained
# local: no
import socket
for host in ("localhost", "example.com"):
    try:
        infos = socket.getaddrinfo(host, 80)
        if infos:
            print("LEAK: resolved", host)
    except Exception as exc:
        print("blocked:", type(exc).__name__)
