# threat: make an HTTP request with urllib
# expect: contained
# local: no
import urllib.request, urllib.error
for url in ("http://127.0.0.1:80/", "http://example.com/"):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            print("LEAK: got HTTP", response.status, "from", url)
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            print("LEAK: reached the host network stack (refused)")
        else:
            print("blocked:", type(exc.reason).__name__)
    except Exception as exc:
        print("blocked:", type(exc).__name__)
