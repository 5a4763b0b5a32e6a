# threat: tamper with the builtins this session sees (len, __import__) hoping to break other sessions
# expect: contained
# local: yes
table = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
table["len"] = lambda obj: -1
def refuse(name, *args, **kwargs):
    raise ImportError("imports disabled by hostile cell: " + name)
table["__import__"] = refuse
print("tampered", len("abc"))
