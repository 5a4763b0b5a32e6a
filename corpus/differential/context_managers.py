# name: context managers: contextmanager, suppress, ExitStack, custom __exit__
from contextlib import contextmanager, suppress, ExitStack
@contextmanager
def tag(name):
    print(f"<{name}>")
    try:
        yield name.upper()
    finally:
        print(f"</{name}>")
with tag("doc") as upper:
    with tag("p"):
        print("inside", upper)
with suppress(KeyError, IndexError):
    [][1]
print("suppressed")
class Recorder:
    def __init__(self, name):
        self.name = name
    def __enter__(self):
        print("enter", self.name)
        return self
    def __exit__(self, exc_type, exc, tb):
        print("exit", self.name, exc_type.__name__ if exc_type else None)
        return exc_type is ValueError
with ExitStack() as stack:
    for n in ["a", "b", "c"]:
        stack.enter_context(Recorder(n))
    print("body")
with Recorder("swallow"):
    raise ValueError("ignored")
print("after swallow")
