# threat: walk the call stack with sys._getframe and inspect to reach another session's namespace
# expect: contained
# local: yes
import inspect, sys
target = "OTHER_SESSION_SECRET"
def scan(namespace, where):
    if target in namespace:
        print("LEAK: found in", where)
    for value in list(namespace.values()):
        if isinstance(value, dict) and target in value:
            print("LEAK: found in a dict in", where)
        for attr in ("globals", "__dict__", "namespace"):
            inner = getattr(value, attr, None) if not isinstance(value, type) else None
            if isinstance(inner, dict) and target in inner:
                print("LEAK: found via attribute", attr, "in", where)
frame = sys._getframe()
depth = 0
while frame is not None:
    scan(frame.f_globals, f"globals of frame {depth}")
    scan(frame.f_locals, f"locals of frame {depth}")
    frame = frame.f_back
    depth += 1
for info in inspect.stack():
    scan(info.frame.f_globals, "inspect.stack globals")
print("walked frames")
