# name: try/except/else/finally ordering
def attempt(x):
    events = []
    try:
        events.append("try")
        result = 10 / x
    except ZeroDivisionError as exc:
        events.append(f"except {type(exc).__name__}")
        result = None
    except TypeError:
        events.append("type error")
        result = "bad"
    else:
        events.append("else")
    finally:
        events.append("finally")
    return result, events
for x in [2, 0, "s"]:
    print(attempt(x))
def returns_in_finally():
    try:
        return "from try"
    finally:
        print("finally runs before return")
print(returns_in_finally())
for i in range(3):
    try:
        if i == 1:
            continue
        print("body", i)
    finally:
        print("cleanup", i)
try:
    try:
        raise KeyError("inner")
    finally:
        print("inner finally")
except LookupError as exc:
    print("caught as LookupError:", repr(exc))
