# name: code runs as __main__ with builtins available
print(__name__)
if __name__ == "__main__":
    print("main guard taken")
print(callable(len), type(__builtins__).__name__ in ("dict", "module"))
def f():
    return __name__
print(f(), f.__module__)
class C:
    pass
print(C.__module__, C.__qualname__, repr(C)[:17])
