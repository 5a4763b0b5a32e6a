# threat: list and read ~/.ssh
# expect: contained
# local: no
import os
home = os.path.expanduser("~")
for path in [os.path.join(home, ".ssh"), "/root/.ssh"]:
    try:
        entries = os.listdir(path)
        print("LEAK: listed", path, len(entries))
        for name in entries:
            with open(os.path.join(path, name), "rb") as f:
                f.read(16)
    except Exception as exc:
        print("blocked:", type(exc).__name__)
