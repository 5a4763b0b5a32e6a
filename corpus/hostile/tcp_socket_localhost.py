# threat: open a TCP connection to 127.0.0.1
# expect: contained
# local: no
import socket
for port in (22, 80, 8080, 5432):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        s.connect(("127.0.0.1", port))
        print("LEAK: connected to port", port)
        s.close()
    except ConnectionRefusedError:
        print("LEAK: reached the host network stack (refused) on port", port)
    except Exception as exc:
        print("blocked:", type(exc).__name__)
