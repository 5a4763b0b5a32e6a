# threat: run a host program with subprocess
# expect: contained
# local: no
import subprocess
try:
    result = subprocess.run(["id"], capture_output=True, text=True, timeout=5)
    if result.returncode == 0:
        print("LEAK: ran id:", result.stdout.strip()[:20])
except Exception as exc:
    print("blocked:", type(exc).__name__)
