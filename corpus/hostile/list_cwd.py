# threat: list the working directory, which on the host is the project checkout
# expect: contained
# local: no
import os
try:
    entries = set(os.listdir("."))
    if entries & {"Cargo.toml", "Cargo.lock", "src", "tests", "crates", ".git", "corpus"}:
        print("LEAK: host working directory visible:", sorted(entries)[:5])
    print("entries:", len(entries))
except Exception as exc:
    print("blocked:", type(exc).__name__)
